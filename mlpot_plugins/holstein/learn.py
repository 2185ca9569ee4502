"""``mlpot learn`` for Holstein lattice models: exact diagonalisation (ED) as the reference.

The config has the sections of the atomistic loop (docs/learn.md, "Lattice models") with
``reference: {calculator: holstein-ed}``; what differs is the kind of configuration (a lattice field Q, not
atoms) and so the data, model, training and exploration options:

* ``data.train``: Holstein data (``mlpot holstein generate``: ED Langevin trajectories); its Hamiltonian
  (``params``) is the one ED labels and the models learn. ``data.test`` / ``data.ood``: held-out sets of the
  same Hamiltonian, evaluated after every iteration.
* ``model`` / ``training``: the options of ``mlpot holstein train`` (D4 committee; bootstrap members).
  Iteration 0 trains on ``data.train`` (from ``training.init_from``, an exported lattice model, if given);
  iteration k continues iteration k-1's weights on the data plus every frame labelled so far (kind
  ``learn``: always trained on; the held-out trajectories of the data calibrate σ).
* ``explore``: ``walkers`` Langevin runs of the current committee on an ``L`` x ``L`` lattice (default: the
  data's), walker w from ``start[w mod n]`` (``quench``: the hot random state of ``mlpot holstein run``;
  ``domains``: random checkerboard domains of size ``corr_len``) with the bath at ``temperatures[w mod n]``
  (units of t; default the data's kT; the electronic forces stay those of the trained Hamiltonian). Every
  ``check_every`` steps the field and its per-site calibrated σ are a candidate.
* ``select`` / ``stop``: as for atoms (σ and thresholds in force units t per unit Q).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..learn.explore import Exploration
from ..learn.loop import Loop, iteration_dir
from ..runsafe import DivergenceError, RunInterrupted, check_output_dir, torch_save_atomic
from ..training.train import _path_option, _section, typed_options
from .data import domain_state, load_data
from .dynamics import TRAINED_KEYS, quench_initial_state
from .ed import ed_solve
from .langevin import LangevinIntegrator
from .params import HolsteinParams
from .train import LEARN_KIND  # kind of the fields the loop labelled (train.split never holds them out)

DOC = "docs/learn.md"
REFERENCES = ("holstein-ed",)
FRAMES_KIND = "mlpot-learn-lattice-frames"
START_KINDS = ("quench", "domains")
MODEL_DEFAULTS: Dict[str, Any] = dict(arch="conv", radius2=13, channels=16, hidden=32, ensemble_size=4,
                                      energy_based=False, seed=0)
TRAINING_DEFAULTS: Dict[str, Any] = dict(epochs=60, batch=16, lr=3e-3, snapshot_stride=1, init_from="")
EXPLORE_DEFAULTS: Dict[str, Any] = dict(start=["quench", "domains"], walkers=2, steps=400, check_every=20, L=0,
                                        seed=0, stop_after=0, corr_len=2.0, kT_hot=5.0)


class EDReference:
    """The reference of the lattice loop: electronic forces g (n_i - 1/2) of a field by exact diagonalisation
    of the Hamiltonian ``p`` (float64)."""

    def __init__(self, p: HolsteinParams):
        self.p = p

    def __call__(self, Q: torch.Tensor) -> torch.Tensor:
        return ed_solve(Q.to(torch.float64), self.p)["electronic_forces"]


class LatticeFrame:
    """One explored (and, once labelled, ED-labelled) lattice field, shaped like what ``learn.select`` reads
    from atoms: ``arrays["forces_std"]`` (per site) and ``info`` (walker, check, sigma_max, ...)."""

    def __init__(self, Q: torch.Tensor, forces_std, info: Dict[str, Any], f_el: Optional[torch.Tensor] = None):
        self.Q, self.info, self.f_el = Q, dict(info), f_el
        self.arrays = {"forces_std": np.asarray(forces_std, dtype=np.float64).reshape(-1)}


def write_frames(path: Path, frames: List[LatticeFrame]) -> None:
    labelled = bool(frames) and all(f.f_el is not None for f in frames)
    torch_save_atomic({"kind": FRAMES_KIND, "info": [f.info for f in frames],
                       "Q": torch.stack([f.Q for f in frames]) if frames else None,
                       "forces_std": np.stack([f.arrays["forces_std"] for f in frames]) if frames else None,
                       "f_el": torch.stack([f.f_el for f in frames]) if labelled else None}, path)


def read_frames(path: Path) -> List[LatticeFrame]:
    d = torch.load(path, weights_only=False)
    if not isinstance(d, dict) or d.get("kind") != FRAMES_KIND:
        raise ValueError(f"{path} is not a frame file of a lattice `mlpot learn` run; delete the run folder to "
                         "start afresh")
    if d["Q"] is None:
        return []
    f_el = d["f_el"]
    return [LatticeFrame(d["Q"][i], d["forces_std"][i], d["info"][i], None if f_el is None else f_el[i])
            for i in range(len(d["info"]))]


# ---- configuration ----
def _lattice_data(path: Path, section: str, name: str, value, train_params: Optional[dict]) -> dict:
    file = _path_option(path, section, name, value)
    try:
        data = load_data(file)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"{path}: {section}.{name}: {exc}") from None
    if train_params is not None:
        diff = {k: (data["params"].get(k), train_params.get(k)) for k in TRAINED_KEYS
                if data["params"].get(k) != train_params.get(k)}
        if diff:
            raise ValueError(f"{path}: {section}.{name} {file} was generated with another Hamiltonian than "
                             f"data.train ({', '.join(f'{k}={a} vs {b}' for k, (a, b) in diff.items())}); held-out "
                             "sets must share the Hamiltonian the models learn: regenerate it with the same --param")
    return {"file": file, "data": data}


def load_lattice_config(path: Path, raw: Dict[str, Any]) -> Dict[str, Any]:
    """The data/model/training/explore/output sections of a lattice ``mlpot learn`` config, validated (the
    reference, select and stop sections are checked by ``learn.config`` for both kinds of loop)."""
    from ..learn.config import _temperatures, check_checks

    data = _section(path, raw, "data")
    bad = sorted(set(data) - {"train", "test", "ood"})
    if bad:
        raise ValueError(f"{path}: unknown data option(s) {bad}; valid: ['ood', 'test', 'train']")
    if "train" not in data:
        raise ValueError(f"{path}: data.train (Holstein data from `mlpot holstein generate`) is required")
    train = _lattice_data(path, "data", "train", data["train"], None)
    params = train["data"]["params"]
    sets = {"train": train["file"]}
    if data.get("test"):
        sets["test"] = _lattice_data(path, "data", "test", data["test"], params)["file"]
    ood = data.get("ood") or {}
    if not isinstance(ood, dict):
        raise ValueError(f"{path}: data.ood must be a mapping name: Holstein data file, got {ood!r:.60}")
    sets["ood"] = {k: _lattice_data(path, "data.ood", k, v, params)["file"] for k, v in ood.items()}
    model = typed_options(path, raw, "model", MODEL_DEFAULTS, positive=("radius2", "channels", "hidden",
                                                                        "ensemble_size"))
    if model["arch"] not in ("conv", "irreps"):
        raise ValueError(f"{path}: model.arch={model['arch']!r} is not one of ['conv', 'irreps']")
    if model["arch"] == "irreps" and model["energy_based"]:
        raise ValueError(f"{path}: model.arch irreps is direct-force only; use arch conv for energy_based: true")
    training = typed_options(path, raw, "training", TRAINING_DEFAULTS, positive=("epochs", "batch", "lr",
                                                                                 "snapshot_stride"))
    if training["init_from"]:
        training["init_from"] = _path_option(path, "training", "init_from", training["init_from"])
        if not Path(training["init_from"]).is_file():
            raise ValueError(f"{path}: training.init_from {training['init_from']} does not exist; give an exported "
                             "lattice model (.pt from `mlpot holstein train` or an earlier `mlpot learn`)")
    given = dict(_section(path, raw, "explore"))
    temps = given.pop("temperatures", [params["kT"]])
    explore = typed_options(path, {"explore": given}, "explore", EXPLORE_DEFAULTS,
                            positive=("walkers", "steps", "check_every", "corr_len", "kT_hot"))
    explore["temperatures"] = _temperatures(path, temps, unit="units of t")
    unknown = sorted(set(explore["start"]) - set(START_KINDS))
    if unknown:
        raise ValueError(f"{path}: explore.start {unknown} are not start kinds of a lattice walker; use "
                         f"{list(START_KINDS)}")
    L_data = int(train["data"]["L"]) if "L" in train["data"] else int(train["data"]["Q"].shape[-1])
    explore["L"] = explore["L"] or L_data
    need = max(4, 2 * int(model["radius2"] ** 0.5) + 1)
    for what, L in (("explore.L", explore["L"]), (f"the lattice of data.train ({train['file']})", L_data)):
        if L < need:
            raise ValueError(f"{path}: {what} = {L} is smaller than the model's patch (model.radius2="
                             f"{model['radius2']} needs L >= {need}); use a larger lattice or a smaller radius2")
    check_checks(path, explore)
    output = _section(path, raw, "output")
    bad = sorted(set(output) - {"dir", "name"})
    if bad:
        raise ValueError(f"{path}: unknown output option(s) {bad}; valid: ['dir', 'name']")
    output["dir"] = _path_option(path, "output", "dir", output.get("dir", "run"))
    check_output_dir(output["dir"], "output.dir")
    return {"system": "lattice", "data": sets, "model": model, "training": training, "explore": explore,
            "output": output}


# ---- the loop ----
class _Recording:
    """Force callable of the integrator from an exported lattice committee; keeps the last per-site σ."""

    def __init__(self, module):
        self.module, self.last_std = module, None

    def __call__(self, Q: torch.Tensor) -> torch.Tensor:
        out = self.module.compute_lattice(Q, True)
        self.last_std = out["forces_std"].detach().double()
        return out["forces"].detach().double()


def start_state(kind: str, L: int, p: HolsteinParams, e: Dict[str, Any], seed: int):
    """(Q, P) of a walker: the hot random state of a quench, or random checkerboard domains."""
    if kind == "quench":
        return quench_initial_state(L, p, seed=seed, kT_hot=float(e["kT_hot"]))
    Q, P = domain_state(L, 1, p, float(e["corr_len"]), torch.Generator().manual_seed(int(seed)))
    return Q[0], P[0]


class LatticeLoop(Loop):
    """The active-learning loop over Holstein lattice fields with ED labels (hooks of ``learn.loop.Loop``)."""

    FRAMES = ".pt"
    UNIT = "t/Q"
    COMPONENTS = 1

    def setup(self, reference) -> None:
        self.data = load_data(self.cfg["data"]["train"])
        self.p = HolsteinParams.from_dict(self.data["params"])
        self.reference = reference if reference is not None else EDReference(self.p)

    def read(self, path: Path) -> List[LatticeFrame]:
        return read_frames(path)

    def write(self, path: Path, frames: List[LatticeFrame]) -> None:
        write_frames(path, frames)

    def run_exploration(self, model_path: Path, seed: int, on_steps) -> Exploration:
        from ..model_file import load

        e, s = self.cfg["explore"], self.cfg["select"]
        module = load(model_path).module
        ex = Exploration()
        threshold, max_sigma = float(s["threshold"]), float(s["max_sigma"])
        for w in range(int(e["walkers"])):
            kind, kT = e["start"][w % len(e["start"])], e["temperatures"][w % len(e["temperatures"])]
            walker_seed = int(seed) * 1009 + w
            Q, P = start_state(kind, int(e["L"]), self.p, e, walker_seed)
            forces = _Recording(module)
            integ = LangevinIntegrator(forces, replace(self.p, kT=kT), Q, P, seed=walker_seed)
            over = 0
            for c in range(int(e["steps"]) // int(e["check_every"])):
                try:
                    integ.step(int(e["check_every"]))
                except DivergenceError:  # the committee's forces ran away: later fields are unphysical
                    ex.aborted_walkers += 1
                    break
                ex.steps += int(e["check_every"])
                on_steps(int(e["check_every"]))
                std = forces.last_std
                smax = float(std.max())
                ex.max_sigma = max(ex.max_sigma, smax)
                if max_sigma and smax > max_sigma:
                    ex.aborted_walkers += 1
                    break
                ex.candidates.append(LatticeFrame(integ.Q.clone(), std.numpy(), dict(
                    walker=w, check=c, step=(c + 1) * int(e["check_every"]), temperature=kT, start=kind,
                    sigma_max=smax)))
                over += smax > threshold
                if e["stop_after"] and over >= int(e["stop_after"]):
                    ex.stopped_early += 1
                    break
        return ex

    def label_frame(self, frame: LatticeFrame, k: int) -> LatticeFrame:
        f_el = self.reference(frame.Q)
        if not bool(torch.isfinite(f_el).all()):
            raise ValueError("non-finite label")
        return LatticeFrame(frame.Q, frame.arrays["forces_std"], dict(frame.info, iteration=k), f_el)

    def training_data(self) -> dict:
        """``data.train`` plus every frame labelled so far (kind ``learn``, one trajectory each)."""
        d, labels = dict(self.data), self.labels()
        if not labels:
            return d
        n, first = len(d["Q"]), int(d["traj"].max()) + 1
        d["Q"] = torch.cat([d["Q"], torch.stack([f.Q for f in labels]).to(d["Q"].dtype)])
        d["f_el"] = torch.cat([d["f_el"], torch.stack([f.f_el for f in labels]).to(d["f_el"].dtype)])
        d["traj"] = torch.cat([d["traj"], torch.arange(first, first + len(labels)).to(d["traj"].dtype)])
        d["kind"] = list(d.get("kind") or ["quench"] * n) + [LEARN_KIND] * len(labels)
        if "time" in d:
            d["time"] = torch.cat([d["time"], torch.tensor([f.info["step"] * self.p.dt for f in labels],
                                                           dtype=d["time"].dtype)])
        return d

    def train(self, k: int) -> None:
        from .train import train as holstein_train
        from .train import weights_from_export

        t0 = time.perf_counter()
        it = iteration_dir(self.out, k)
        it.mkdir(parents=True, exist_ok=True)
        train_file = it / "train.pt"
        if not train_file.is_file():
            torch_save_atomic(self.training_data(), train_file)
        init = None
        if k > 0:
            init = iteration_dir(self.out, k - 1) / "model.sd"
        elif self.cfg["training"]["init_from"]:
            init = it / "init.sd"
            if not init.is_file():
                weights_from_export(self.cfg["training"]["init_from"], init)
        t0 = self.tick("bookkeeping", t0)
        m, t = self.cfg["model"], self.cfg["training"]
        if self.st["phase"] == "train":
            ckpt = it / "train.ckpt"
            try:
                metrics = holstein_train(
                    train_file, it / "model.pt", energy_based=m["energy_based"], ensemble_size=m["ensemble_size"],
                    channels=m["channels"], hidden=m["hidden"], radius2=m["radius2"], epochs=t["epochs"],
                    batch=t["batch"], lr=t["lr"], seed=m["seed"], name=f"{self.cfg['output'].get('name') or 'learn'}"
                    f"-iter{k}", progress=self.progress, snapshot_stride=t["snapshot_stride"],
                    state_dict_path=it / "model.sd", init_state_dict=init, arch=m["arch"], resume=ckpt.is_file(),
                    state_path=ckpt)
            except RunInterrupted as exc:
                self.save_state()
                raise RunInterrupted(str(exc).split("; to continue")[0] + f" (iteration {k}); continue with "
                                     "`mlpot learn CONFIG --resume`", exc.signum) from None
            t0 = self.tick("train", t0)  # training, calibration and export: one call
            self.st.update(phase="calibrate", train_metrics=metrics)
            self.save_state()
        metrics = self.st.pop("train_metrics")
        held = self.evaluate_lattice(it / "model.pt")
        self.tick("evaluate", t0)
        row = self.st.pop("pending_row", {"iteration": k})
        val = {"force_rmse": metrics["rmse"], "force_rmse_over_std": metrics["rmse_over_force_std"],
               "median_force_std": None}
        row.update(n_labels=int(self.st["n_labels"]), n_train=int(metrics["train_snapshots"]),
                   uncertainty_scale=metrics["uncertainty_scale"], epochs=metrics["epochs_run"],
                   val_force_rmse=metrics["rmse"], model=str(it / "model.pt"),
                   metrics={"val": {q: v for q, v in val.items() if v is not None}, **held})
        self.st["row"] = row
        self.log(f"iteration {k}: {row['n_labels']} labels, {row['n_train']} training snapshots; "
                 + ", ".join(f"{s} force RMSE {mm['force_rmse']:.4g}" for s, mm in row["metrics"].items())
                 + f"; wrote {it / 'model.pt'}")

    def evaluate_lattice(self, model_path: Path) -> Dict[str, Dict[str, float]]:
        """Force RMSE and calibrated-σ metrics of the exported committee on data.test and data.ood."""
        from ..model_file import load
        from ..training.calibration import uncertainty_metrics
        from .train import evaluate

        paths = dict(self.cfg["data"]["ood"])
        if self.cfg["data"].get("test"):
            paths = {"test": self.cfg["data"]["test"], **paths}
        if not paths:
            return {}
        if self.held_out is None:
            self.held_out = {n: load_data(p) for n, p in paths.items()}
        module = load(model_path).module
        out = {}
        for name, d in self.held_out.items():
            r = evaluate(module, d["Q"], d["f_el"].double(), self.p)
            err, std = r.pop("_err").reshape(-1, 1).numpy(), r.pop("_std").reshape(-1).numpy()
            out[name] = {"force_rmse": r["rmse"], "force_rmse_over_std": r["rmse_over_force_std"],
                         "n_sites": r["n_sites"], **uncertainty_metrics(std, err)}
        return out


def learn_stage(out_dir: Path, quick: bool) -> None:
    """``mlpot demo``: two active-learning iterations on an 8 x 8 Holstein lattice with ED labels."""
    import shutil

    import yaml

    from ..learn.loop import run
    from .data import generate

    folder = out_dir / "learn-holstein"
    shutil.rmtree(folder, ignore_errors=True)  # the demo's own folder: a rerun starts afresh
    folder.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8 x 8 lattices: one thread avoids OpenMP oversubscription
    t0 = time.perf_counter()
    try:
        common = dict(L=8, stride=6, progress=False)
        generate(folder / "train.pt", n_quench=2, n_domain=2, quench_steps=120, domain_steps=60, seed=0, **common)
        generate(folder / "ood.pt", n_quench=0, n_domain=2, quench_steps=0, domain_steps=120, seed=7, **common)
        cfg = {"reference": {"calculator": "holstein-ed"}, "data": {"train": "train.pt", "ood": {"domains": "ood.pt"}},
               "model": {"radius2": 5, "channels": 6, "hidden": 12, "ensemble_size": 3},
               "training": {"epochs": 10, "batch": 8}, "explore": {"walkers": 2, "steps": 200, "check_every": 10},
               "select": {"mode": "topk", "per_iteration": 4}, "stop": {"label_budget": 8},
               "output": {"dir": "run", "name": "demo-holstein"}}
        (folder / "learn.yaml").write_text(yaml.safe_dump(cfg))
        report = run(folder / "learn.yaml", progress=False, log=lambda *a: None)
    finally:
        torch.set_num_threads(threads)
    rows = [r for r in report["iterations"] if "metrics" in r]
    curve = ", ".join(f"{r['n_labels']}: {r['metrics']['domains']['force_rmse']:.4f}" for r in rows)
    print(f"[learn-holstein] mlpot learn with ED labels on 8x8: {len(rows) - 1} iterations, {report['n_labels']} "
          f"labels in {time.perf_counter() - t0:.1f} s; held-out domain force RMSE by labels {curve} (t/Q); "
          f"σ-vs-error Spearman {rows[-1]['metrics']['domains']['spearman_sigma_vs_abs_error']:.2f}; report "
          f"{folder / 'run' / 'report.json'}")
