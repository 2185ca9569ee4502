"""``mlpot import metatomic MODEL.pt``: a metatomic ``AtomisticModel`` file -> an mlpot model file.

The output wraps the metatomic model unchanged in a module with the contract's ``compute``. Everything in the
metadata comes from the model's capabilities: species (``atomic_types``), cutoff (the largest requested
neighbour-list cutoff), interaction range, units (converted to angstrom/eV with metatomic's own unit table;
a unit it cannot convert is refused) and dtype.

At run time the file needs metatomic-torch's TorchScript classes. Its metadata lists them in
``torch_libraries`` (see :mod:`mlpot_plugins.contract`): Python engines import ``metatomic.torch``, C++
engines ``dlopen`` the listed libraries before loading the model.

How the metatomic model is called: one ``System`` holding all atoms (ghosts included), with a zero cell
and no periodicity; each requested neighbour list is built from the engine's edges (filtered by its cutoff,
halved for half lists) with the edge vectors ``r_e`` as values, so periodic images reach the model through
the neighbour vectors only. Energies are requested per atom for the ``n_local`` local atoms. Forces and the
virial follow from one backward pass to the positions and the edge vectors (W = -sum_e r_e (x) dE/dr_e
- sum_i x_i (x) dE/dx_i). Models that compute distances from ``positions`` and ``cell`` instead of the
neighbour vectors, or that need extra inputs (charges, spins), are not supported (the latter are refused).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List

import torch

from .. import contract
from ..contract import ModelFormatError

PYTHON_MODULE = "metatomic.torch"
INSTALL_HINT = "install it beside torch with `pip install metatomic-torch` (the `metatomic` extra of mlpot_plugins)"


def _metatomic():
    try:
        import metatomic.torch as mta
    except ImportError as exc:
        raise ModelFormatError(f"metatomic models need the metatomic-torch package ({exc}); {INSTALL_HINT}") from None
    return mta


def torch_libraries() -> List[Dict[str, Any]]:
    """The ``torch_libraries`` metadata entry of an imported metatomic model: the Python module to import and
    the shared libraries (in load order) a C++ engine must dlopen before loading the file — the same files
    metatensor, metatensor-torch and metatomic-torch load themselves (their private ``_lib_path``)."""
    _metatomic()
    import metatensor._c_lib as core
    import metatensor.torch._c_lib as mtt
    import metatomic.torch._c_lib as mta

    libs = [core._lib_path(), mtt._lib_path(), mta._lib_path()]
    return [{"python_module": PYTHON_MODULE, "shared_libraries": [os.path.realpath(p) for p in libs]}]


def _unit_factor(mta, unit: str, target: str, what: str, path) -> float:
    if not unit:
        raise ModelFormatError(f"{path}: the metatomic model declares no {what} unit, so it cannot be converted "
                               f"to {target}. Re-export it with its {what} unit in the capabilities")
    try:
        return float(mta.unit_conversion_factor(unit, target))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFormatError(f"{path}: unknown {what} unit {unit!r} in the metatomic model ({first}). "
                               f"Re-export it with a unit metatomic knows (e.g. {target})") from None


def import_metatomic(model_path, out, name: str = "", description: str = "") -> Path:
    """Convert a metatomic AtomisticModel file into an mlpot model file at ``out``."""
    import zipfile

    from ase.data import chemical_symbols

    from ..model_file import export

    mta = _metatomic()
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"metatomic model {os.fspath(model_path)!r} does not exist; give the .pt file "
                                "written by AtomisticModel.save()")
    if not zipfile.is_zipfile(path):
        raise ModelFormatError(f"{path}: not a TorchScript archive; give the .pt file written by "
                               "metatomic's AtomisticModel.save()")
    try:
        model = mta.load_atomistic_model(str(path))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFormatError(f"{path}: not a loadable metatomic AtomisticModel ({first}). Export the model "
                               "with metatomic's AtomisticModel.save(), or use `mlpot import mace/nequip` "
                               "for those formats") from None
    caps = model.capabilities()
    if "energy" not in caps.outputs:
        raise ModelFormatError(f"{path}: the metatomic model has no 'energy' output (outputs: "
                               f"{sorted(caps.outputs)}). Only energy models can drive forces")
    energy_out = caps.outputs["energy"]
    if energy_out.sample_kind != "atom":
        raise ModelFormatError(f"{path}: the metatomic model cannot give per-atom energies (energy output has "
                               "sample_kind 'system'); engines with ghost atoms need them. Re-export it with "
                               "per-atom energy support")
    requested_inputs = model.requested_inputs(use_new_names=True)
    if requested_inputs:
        raise ModelFormatError(f"{path}: the model needs extra inputs {sorted(requested_inputs)} that no mlpot "
                               "engine provides. Only models needing positions and types can be imported")
    if caps.dtype not in ("float32", "float64"):
        raise ModelFormatError(f"{path}: metatomic model dtype {caps.dtype!r} is not float32/float64")
    length = _unit_factor(mta, caps.length_unit, "angstrom", "length", path)
    _unit_factor(mta, energy_out.unit, "eV", "energy", path)
    options = list(model.requested_neighbor_lists())
    if not options:
        raise ModelFormatError(f"{path}: the metatomic model requests no neighbour list, so it has no cutoff to "
                               "build edges for. Only models using neighbour lists can be imported")
    nl_cutoffs = [float(o.engine_cutoff("angstrom")) for o in options]
    cutoff = max(nl_cutoffs)
    interaction_range = float(caps.interaction_range) * length
    if not math.isfinite(interaction_range):
        raise ModelFormatError(f"{path}: the metatomic model has an infinite interaction range (long-range "
                               "terms); engines here need a finite one")
    atomic_numbers = [int(z) for z in caps.atomic_types]
    bad = [z for z in atomic_numbers if not 0 < z < len(chemical_symbols)]
    if bad:
        raise ModelFormatError(f"{path}: atomic types {bad} are not atomic numbers; only element types can be "
                               "mapped to species")
    species = [chemical_symbols[z] for z in atomic_numbers]
    dtype = getattr(torch, caps.dtype)
    from ._metatomic_model import MetatomicModel

    wrapper = MetatomicModel(torch.jit.load(str(path)), species, atomic_numbers, cutoff, options, nl_cutoffs, dtype)
    ensemble = caps.outputs.get("energy_ensemble")
    k = 1
    if ensemble is not None and ensemble.sample_kind == "atom":
        _unit_factor(mta, ensemble.unit, "eV", "energy_ensemble", path)
        d = 0.5 * min(nl_cutoffs)  # two atoms of the first species within every cutoff: the output's width
        k = wrapper.ensemble_width(torch.tensor([[0.0, 0.0, 0.0], [d, 0.0, 0.0]], dtype=dtype),
                                   torch.zeros(2, dtype=torch.int64), torch.tensor([[0, 1], [1, 0]]),
                                   torch.zeros((2, 3), dtype=dtype))
        wrapper.ensemble_size = k
    meta = model.metadata()
    return export(
        wrapper, out, name=name or meta.name or path.stem, dtype=caps.dtype,
        species=species, cutoff=cutoff, interaction_range=max(cutoff, interaction_range),
        outputs=contract.outputs_for("atomistic", k), ensemble_size=k,
        description=description or f"metatomic model {meta.name or path.name} imported by `mlpot import metatomic` "
                                   f"(length {caps.length_unit}, energy {energy_out.unit} converted to A/eV)",
        references=[str(r) for refs in meta.references.values() for r in refs],
        torch_libraries=torch_libraries(),
        extra={"imported_from": "metatomic", "source_file": path.name,
               "uncertainty": "energy_ensemble members (energy and forces: the model's own energy output)"
               if k > 1 else "none",
               "metatomic_torch_version": mta.__version__})


def add_parser(sub) -> None:
    p = sub.add_parser("metatomic", help="a metatomic AtomisticModel .pt file (needs metatomic-torch)")
    p.add_argument("model", help="metatomic model file written by AtomisticModel.save()")
    p.add_argument("-o", "--out", required=True, help="output mlpot model file")
    p.add_argument("--name", default="", help="model name stored in the metadata")

    def run(args) -> int:
        out = import_metatomic(args.model, args.out, name=args.name)
        print(f"wrote {out}")
        return 0

    p.set_defaults(func=run)
