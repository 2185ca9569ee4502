"""``mlpot learn`` configuration: the ``mlpot train`` sections plus reference / explore / select / stop.

Everything is checked before any work starts (unknown sections and keys, types, ranges, engine and
reference names, files); errors are ``ValueError``s that name the file, the option and the fix. The layout
is documented in docs/learn.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from ..training.train import SECTIONS as TRAIN_SECTIONS
from ..training.train import _path_option, _section, read_config_file, typed_options, validate_sections

DOC = "docs/learn.md"
SECTIONS = ("reference", "explore", "select", "stop") + TRAIN_SECTIONS
ENGINES = ("ase", "lammps", "openmm")
MODES = ("threshold", "topk", "random")
SCORES = ("max", "bald")
BALANCE = ("none", "walkers")
EXPLORE_DEFAULTS: Dict[str, Any] = dict(
    engine="ase", start="", walkers=2, steps=200, temperatures=[300.0], timestep_fs=2.0, friction=0.02,
    check_every=10, seed=0, rattle=0.0, strain=0.0, supercell=1, min_distance=0.0, stop_after=0)
SELECT_DEFAULTS: Dict[str, Any] = dict(mode="threshold", threshold=0.1, max_sigma=0.0, per_iteration=8,
                                       score="max", min_separation=1, balance="none")
STOP_DEFAULTS: Dict[str, Any] = dict(label_budget=64, max_iterations=20)
REFERENCE_KEYS = ("calculator", "options")


def _choice(path, name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{path}: {name}={value!r} is not one of {list(choices)}; fix the value in the config "
                         f"(see {DOC})")
    return value


def _temperatures(path, value, unit: str = "kelvin") -> list:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in value):
        raise ValueError(f"{path}: explore.temperatures={value!r} must be a positive number or a non-empty list of "
                         f"them ({unit}), e.g. {'[0.1, 0.2]' if unit != 'kelvin' else '[300, 900]'}")
    return [float(t) for t in value]


def _reference(path, cfg: dict) -> Dict[str, Any]:
    if cfg.get("reference") is None:
        raise ValueError(f"{path}: the reference section is missing; add e.g. `reference: {{calculator: emt}}` "
                         "(emt, xtb, or an ASE calculator class as module:Class) — see " + DOC)
    ref = _section(path, cfg, "reference")
    bad = sorted(set(ref) - set(REFERENCE_KEYS))
    if bad:
        raise ValueError(f"{path}: unknown reference option(s) {bad}; valid: {list(REFERENCE_KEYS)}")
    if not isinstance(ref.get("calculator"), str) or not ref["calculator"]:
        raise ValueError(f"{path}: reference.calculator is missing or not a name; give emt, xtb or an ASE "
                         "calculator class as module:Class (e.g. ase.calculators.lj:LennardJones)")
    options = ref.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError(f"{path}: reference.options must be a mapping of keyword arguments, got {options!r:.60}")
    if lattice_reference(ref["calculator"]):
        if options:
            raise ValueError(f"{path}: reference {ref['calculator']!r} takes no options (its Hamiltonian is the "
                             "params of data.train, written by `mlpot holstein generate --param`); remove "
                             "reference.options")
        return {"calculator": ref["calculator"].lower(), "options": {}}
    from .references import check_reference

    check_reference(ref["calculator"], options, str(path))
    return {"calculator": ref["calculator"], "options": options}


def lattice_reference(name) -> bool:
    """Whether the reference names exact diagonalisation of a Holstein lattice model (the lattice loop)."""
    from ..holstein.learn import REFERENCES as LATTICE

    return isinstance(name, str) and name.lower() in LATTICE


def load_learn_config(path) -> Dict[str, Any]:
    """The validated ``mlpot learn`` config (paths absolute, defaults filled in); a lattice config
    (``reference: {calculator: holstein-ed}``) has ``system: lattice`` and the sections of holstein.learn."""
    path = Path(path)
    raw = read_config_file(path, SECTIONS, command="learn", doc=DOC)
    reference = _reference(path, raw)
    if lattice_reference(reference["calculator"]):
        from ..holstein.learn import load_lattice_config

        out = load_lattice_config(path, raw)
        out.update(reference=reference, **select_and_stop(path, raw))
        check_committee(path, out["model"])
        return out
    out = validate_sections(path, {k: raw.get(k) for k in TRAIN_SECTIONS})
    out["reference"] = reference
    given = dict(_section(path, raw, "explore"))
    temps = given.pop("temperatures", EXPLORE_DEFAULTS["temperatures"])
    explore = typed_options(path, {"explore": given}, "explore",
                            {k: v for k, v in EXPLORE_DEFAULTS.items() if k != "temperatures"},
                            positive=("walkers", "steps", "check_every", "timestep_fs", "supercell"))
    explore["temperatures"] = _temperatures(path, temps)
    _choice(path, "explore.engine", explore["engine"], ENGINES)
    explore["start"] = _path_option(path, "explore", "start", explore["start"]) if explore["start"] \
        else out["data"]["train"]
    if not Path(explore["start"]).is_file():
        raise ValueError(f"{path}: explore.start {explore['start']} does not exist; give an extxyz/xyz file of "
                         "starting structures (default: data.train)")
    if explore["engine"] == "lammps":
        from ..training.dataset import read_frames

        flat = [i for i, a in enumerate(read_frames(explore["start"])) if not a.pbc.all()]
        if flat:
            raise ValueError(f"{path}: explore.engine lammps needs periodic start structures, but structure(s) "
                             f"{flat[:5]} of {explore['start']} are not periodic in x, y and z; use engine ase or "
                             "openmm for molecules and slabs without a cell")
    check_checks(path, explore)
    if not 0.0 <= explore["strain"] < 0.5:
        raise ValueError(f"{path}: explore.strain={explore['strain']} must be a fraction in [0, 0.5)")
    out.update(explore=explore, **select_and_stop(path, raw))
    check_committee(path, out["model"])
    return out


def check_checks(path, explore: Dict[str, Any]) -> None:
    """At least one frame per walker is checked."""
    if explore["check_every"] > explore["steps"]:
        raise ValueError(f"{path}: explore.check_every={explore['check_every']} is larger than explore.steps="
                         f"{explore['steps']}; no frame would be checked — lower check_every")


def check_committee(path, model: Dict[str, Any]) -> None:
    if model.get("ensemble_size", 1) < 2:
        raise ValueError(f"{path}: model.ensemble_size must be >= 2 for active learning (the committee's spread "
                         "is the uncertainty that selects frames); set e.g. ensemble_size: 4")


def select_and_stop(path, raw: Dict[str, Any]) -> Dict[str, Any]:
    """The select and stop sections (the same for atoms and lattice fields)."""
    select = typed_options(path, raw, "select", SELECT_DEFAULTS,
                           positive=("threshold", "per_iteration", "min_separation"))
    _choice(path, "select.mode", select["mode"], MODES)
    _choice(path, "select.score", select["score"], SCORES)
    _choice(path, "select.balance", select["balance"], BALANCE)
    if select["max_sigma"] and select["max_sigma"] <= select["threshold"]:
        raise ValueError(f"{path}: select.max_sigma={select['max_sigma']} must exceed select.threshold="
                         f"{select['threshold']} (or be 0: no upper limit)")
    stop = typed_options(path, raw, "stop", STOP_DEFAULTS, positive=("label_budget", "max_iterations"))
    return {"select": select, "stop": stop}


# options added after the first release: a state written without one counts as having its default
LATER_OPTIONS = {"explore": {"stop_after": EXPLORE_DEFAULTS["stop_after"]},
                 "select": {"balance": SELECT_DEFAULTS["balance"]}}


def resume_key(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The options a resumed run must share with the interrupted one (plain values, for runsafe; compared
    with LATER_OPTIONS filled in); ``stop`` may change (a larger budget continues a finished run)."""
    return {k: cfg[k] for k in ("reference", "explore", "select", "model", "training")} | {
        "data": cfg["data"]["train"]}
