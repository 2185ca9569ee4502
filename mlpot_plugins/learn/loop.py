"""``mlpot learn CONFIG.yaml``: the active-learning loop.

Iteration 0 trains the committee on ``data.train``. Iteration k >= 1: explore with iteration k-1's exported
model (``explore``), pick frames (``select``), label them with the reference, retrain from iteration k-1's
weights on everything labelled so far, recalibrate on the validation split and export
``OUT/iter_k/model.pt``. The loop stops when an exploration (every walker, ``explore.steps`` steps) stays under
``select.threshold``, when ``stop.label_budget`` labels are spent, or after ``stop.max_iterations``.

State (``OUT/learn_state.pt``, written atomically at every phase change and after every label) makes the run
resumable: SIGINT/SIGTERM saves it at the next safe point (after the current label, MD check or optimiser
step) and ``--resume`` continues from there: labels are never repeated (they are kept in
``OUT/iter_k/labelled.extxyz``), training continues from ``OUT/iter_k/last.pt``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from ..refdata import label, write
from ..runsafe import RunInterrupted, StopSignals, resume_state, torch_save_atomic
from ..training.checkpoint import read_checkpoint
from ..training.dataset import read_frames
from .config import LATER_OPTIONS, load_learn_config, resume_key
from .explore import explore
from .references import make_reference
from .select import select

STATE_KIND = "mlpot-learn-state"
STATE_FILE = "learn_state.pt"


class _Stop(Exception):
    """Internal: a signal arrived during exploration."""


def iteration_dir(out: Path, k: int) -> Path:
    return out / f"iter_{k:03d}"


class Loop:
    """The loop over atomistic structures (extxyz frames, an ASE calculator as reference, ``mlpot train``).
    Subclasses for other kinds of configurations (``holstein.learn.LatticeLoop``) override the hooks: frame
    files (``FRAMES``, ``read``, ``write``), ``run_exploration``, ``label_frame`` and ``train``."""

    FRAMES = ".extxyz"  # suffix of the frame files (explored, selected, labelled, labels)
    UNIT = "eV/Å"  # of forces, thresholds and σ in messages
    COMPONENTS = 3  # force components per atom (σ is per atom, the validation RMSE per component)

    def __init__(self, cfg: Dict[str, Any], state: Dict[str, Any], progress: bool, log, reference=None):
        self.cfg, self.st, self.progress, self.log = cfg, state, progress, log
        self.out = Path(cfg["output"]["dir"])
        self.stop = None
        self.held_out = None
        self.setup(reference)

    def setup(self, reference) -> None:
        """The reference, the initial data and the start structures."""
        cfg = self.cfg
        self.reference = reference if reference is not None else make_reference(
            cfg["reference"]["calculator"], cfg["reference"]["options"])
        self.initial = read_frames(cfg["data"]["train"])
        self.starts = read_frames(cfg["explore"]["start"])

    # ---- state ----
    def save_state(self) -> None:
        self.st = json.loads(json.dumps(self.st, default=float))  # plain values (torch.load weights_only)
        torch_save_atomic(self.st, self.out / STATE_FILE)

    def interrupted(self, where: str):
        self.save_state()
        return self.stop.interrupted(f"saved {self.out / STATE_FILE} ({where}); continue with "
                                     "`mlpot learn CONFIG --resume`")

    def check_stop(self, where: str) -> None:
        if self.stop.signum is not None:
            raise self.interrupted(where)

    def read(self, path: Path) -> List:
        return read_frames(path)

    def write(self, path: Path, frames: List) -> None:
        write(path, frames)

    def frames_file(self, folder: Path, name: str) -> Path:
        return folder / f"{name}{self.FRAMES}"

    def labels(self) -> List:
        path = self.frames_file(self.out, "labels")
        return self.read(path) if path.is_file() else []

    # ---- phases ----
    def run(self) -> Dict[str, Any]:
        with StopSignals() as self.stop:
            while self.st["phase"] != "done":
                k, phase = self.st["iteration"], self.st["phase"]
                if phase == "explore":
                    self.explore_and_select(k)
                elif phase == "label":
                    self.label(k)
                elif phase in ("train", "calibrate"):
                    self.train(k)
                    self.next_iteration(k)
                else:
                    raise ValueError(f"{self.out / STATE_FILE}: unknown phase {phase!r}; delete the file to start "
                                     "afresh")
        from .report import write_report

        return write_report(self.out, self.st, self.cfg, log=self.log)

    def tick(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        times = self.st.setdefault("timings", {})
        times[name] = times.get(name, 0.0) + now - t0
        return now

    def next_iteration(self, k: int) -> None:
        t0 = time.perf_counter()
        budget, n = self.cfg["stop"]["label_budget"], self.st["n_labels"]
        reason = None
        if n >= budget:
            reason = f"label budget spent ({n} of {budget})"
        elif k >= self.cfg["stop"]["max_iterations"]:
            reason = f"stop.max_iterations={k} reached"
        self.st.update(iteration=k + 1, phase="explore") if reason is None else self.st.update(
            phase="done", stop_reason=reason)
        self.tick("bookkeeping", t0)
        self.finish_row(k)
        if reason:
            self.log(f"mlpot learn: stopped: {reason}")
        self.save_state()
        if self.st["phase"] != "done":
            self.check_stop(f"after iteration {k}")

    def explore_and_select(self, k: int) -> None:
        e, s = self.cfg["explore"], self.cfg["select"]
        t0 = time.perf_counter()
        prev = iteration_dir(self.out, k - 1) / "model.pt"
        total = int(e["walkers"]) * (int(e["steps"]) // int(e["check_every"])) * int(e["check_every"])
        bar = tqdm(total=total, desc=f"explore {k}", unit="step", disable=not self.progress, leave=False)

        def on_steps(n: int) -> None:
            bar.update(n)
            if self.stop.signum is not None:
                raise _Stop

        try:
            ex = self.run_exploration(prev, seed=int(e["seed"]) * 7919 + k, on_steps=on_steps)
        except _Stop:
            bar.close()
            raise self.interrupted(f"during the exploration of iteration {k}; it restarts")
        bar.close()
        t0 = self.tick("explore", t0)
        over = int(sum(a.info["sigma_max"] > s["threshold"] for a in ex.candidates))
        info = {"md_steps": ex.steps, "candidates": len(ex.candidates), "over_threshold": over,
                "max_sigma": ex.max_sigma, "aborted_walkers": ex.aborted_walkers, "stopped_early": ex.stopped_early}
        self.st["pending_row"] = {"iteration": k, "explore": info}
        if over == 0 and ex.aborted_walkers == 0:
            return self.end_without_labels(
                f"converged: {e['walkers']} walker(s) x {e['steps']} steps stayed under select.threshold="
                f"{s['threshold']} {self.UNIT} (max σ {ex.max_sigma:.4g})")
        n = min(int(s["per_iteration"]), int(self.cfg["stop"]["label_budget"]) - int(self.st["n_labels"]))
        noise = (self.st["rows"][-1].get("val_force_rmse", 0.0) * np.sqrt(self.COMPONENTS)
                 if self.st["rows"] else 0.0)
        chosen = select(ex.candidates, s, n, noise, seed=int(e["seed"]) * 104729 + k)
        t0 = self.tick("select", t0)
        if not chosen:
            return self.end_without_labels(
                f"stuck: every explored frame over select.threshold is above select.max_sigma={s['max_sigma']} "
                f"{self.UNIT} "
                f"(max σ {ex.max_sigma:.4g}, {ex.aborted_walkers} walker(s) stopped); raise select.max_sigma, lower "
                "explore.temperatures/strain/rattle, or add training data near the start structures")
        it = iteration_dir(self.out, k)
        self.write(self.frames_file(it, "selected"), [ex.candidates[i] for i in chosen])
        self.write(self.frames_file(it, "explored"), ex.candidates)
        self.st["pending_row"]["selected"] = len(chosen)
        self.st["phase"] = "label"
        self.tick("bookkeeping", t0)
        self.save_state()
        self.log(f"iteration {k}: explored {ex.steps} MD steps, {len(ex.candidates)} frames checked, {over} over "
                 f"{s['threshold']} {self.UNIT} (max σ {ex.max_sigma:.3g}); labelling {len(chosen)}")

    def end_without_labels(self, reason: str) -> None:
        row = self.st.pop("pending_row")
        row["timings"] = {q: round(v, 4) for q, v in self.st.pop("timings", {}).items()}
        self.st["rows"].append(row)
        self.st.update(phase="done", stop_reason=reason)
        self.log(f"mlpot learn: stopped: {reason}")
        self.save_state()

    def label(self, k: int) -> None:
        it = iteration_dir(self.out, k)
        selected = self.read(self.frames_file(it, "selected")) if self.st["pending_row"].get("selected") else []
        done_path = self.frames_file(it, "labelled")
        done = self.read(done_path) if done_path.is_file() else []
        failed = int(self.st["pending_row"].get("label_failures", 0))
        bar = tqdm(total=len(selected), initial=len(done) + failed, desc=f"label {k}", unit="frame",
                   disable=not self.progress, leave=False)
        for i in range(len(done) + failed, len(selected)):
            t0 = time.perf_counter()
            frame = selected[i]
            try:
                labelled = self.label_frame(frame, k)
            except Exception as exc:  # the reference refused an ML-driven geometry: skip it, say so
                self.log(f"iteration {k}: frame {i} not labelled ({type(exc).__name__}: {str(exc)[:100]}); skipped")
                failed += 1
                self.st["pending_row"]["label_failures"] = failed
                self.save_state()
                continue
            t0 = self.tick("label", t0)
            done.append(labelled)
            self.write(done_path, done)
            self.st["n_labels"] = int(self.st["n_labels"]) + 1
            self.save_state()
            self.tick("bookkeeping", t0)
            bar.update(1)
            self.check_stop(f"after label {len(done)} of {len(selected)} in iteration {k}")
        bar.close()
        t0 = time.perf_counter()
        if done:
            self.write(self.frames_file(self.out, "labels"), self.labels() + done)
        self.st["phase"] = "train"
        self.save_state()
        self.tick("bookkeeping", t0)
        self.check_stop(f"labels of iteration {k} done")

    def run_exploration(self, model_path: Path, seed: int, on_steps):
        """Explore with the exported model ``model_path``: the ``Exploration`` (candidates with per-atom σ)."""
        s = self.cfg["select"]
        return explore(model_path, self.starts, self.cfg["explore"], seed=seed, max_sigma=float(s["max_sigma"]),
                       on_steps=on_steps, threshold=float(s["threshold"]))

    def label_frame(self, frame, k: int):
        """``frame`` labelled by the reference (an exception: the reference refused it; it is skipped)."""
        labelled = label(frame, self.reference, config_type=f"learn-iter{k}", iteration=k)
        if not (np.isfinite(labelled.get_potential_energy()) and np.isfinite(labelled.get_forces()).all()):
            raise ValueError("non-finite label")
        return labelled

    def train_config(self, k: int, train_file: Path) -> Dict[str, Any]:
        cfg = self.cfg
        model = dict(cfg["model"])
        if self.st.get("avg_num_neighbors") is not None:  # fixed after iteration 0: same architecture throughout
            model["avg_num_neighbors"] = self.st["avg_num_neighbors"]
        name = cfg["output"].get("name") or "learn"
        training = dict(cfg["training"])
        if k > 0:  # starts from iteration k-1's weights (loaded in train()), not from training.init_from again
            training["init_from"] = ""
        return {"data": {"train": str(train_file), "ood": {}},  # held-out sets: evaluated (and timed) apart
                "model": model, "training": training,
                "output": {"dir": str(iteration_dir(self.out, k)), "name": f"{name}-iter{k}",
                           "export_dtype": cfg["output"].get("export_dtype", "float64")}}

    def train(self, k: int) -> None:
        from ..training.report import final_report
        from ..training.train import Trainer

        t0 = time.perf_counter()
        it = iteration_dir(self.out, k)
        train_file = it / "train.extxyz"
        if not train_file.is_file():
            write(train_file, list(self.initial) + self.labels())
        t0 = self.tick("bookkeeping", t0)
        trainer = Trainer(self.train_config(k, train_file), log=self.log)  # reads and featurises the data: training
        t0 = self.tick("train", t0)
        self.st["avg_num_neighbors"] = trainer.hparams["avg_num_neighbors"]
        last = it / "last.pt"
        if last.is_file():
            trainer.resume(last)
        elif k > 0:
            trainer.model.load_state_dict(read_checkpoint(iteration_dir(self.out, k - 1) / "best.pt")["best_state_dict"])
            trainer.best_state = {n: v.clone() for n, v in trainer.model.state_dict().items()}
        t0 = self.tick("bookkeeping", t0)
        if self.st["phase"] == "train":
            try:
                trainer.fit(progress=self.progress)  # SIGINT/SIGTERM: last.pt saved, RunInterrupted raised
            except RunInterrupted as exc:  # its message names `mlpot train`; this run continues with `mlpot learn`
                self.save_state()
                raise RunInterrupted(str(exc).split("; continue with")[0] + f" (iteration {k}); continue with "
                                     "`mlpot learn CONFIG --resume`", exc.signum) from None
            t0 = self.tick("train", t0)
            self.st["phase"] = "calibrate"
            self.save_state()
        else:
            trainer.model.load_state_dict(trainer.best_state)
        summary = final_report(trainer, log=self.log)  # recalibrates on validation, exports
        t0 = self.tick("calibrate_export", t0)
        m = dict(summary["metrics"])
        m.update(self.evaluate(trainer, summary["uncertainty_scale"], it))
        self.tick("evaluate", t0)
        row = self.st.pop("pending_row", {"iteration": k})
        row.update(n_labels=int(self.st["n_labels"]), n_train=len(trainer.train_set) + len(trainer.val_set),
                   uncertainty_scale=summary["uncertainty_scale"], epochs=trainer.epoch,
                   val_force_rmse=m["val"]["force_rmse"], model=str(it / "model.pt"),
                   metrics={s: {q: v for q, v in mm.items() if isinstance(v, (int, float))} for s, mm in m.items()})
        self.st["row"] = row
        self.log(f"iteration {k}: {row['n_labels']} labels, {row['n_train']} structures; "
                 + ", ".join(f"{s} force RMSE {mm['force_rmse']:.4g}" for s, mm in m.items()) + f"; wrote {it / 'model.pt'}")

    def evaluate(self, trainer, scale: float, it: Path) -> Dict[str, Any]:
        """Accuracy and calibrated-σ metrics on the held-out sets (data.test, data.ood), σ-vs-error PNG."""
        from ..training.dataset import to_structures
        from ..training.report import evaluate_sets, plot_calibration

        paths = dict(self.cfg["data"]["ood"])
        if self.cfg["data"].get("test"):
            paths = {"test": self.cfg["data"]["test"], **paths}
        if not paths:
            return {}
        if self.held_out is None:  # neighbour lists once per run
            hp = trainer.hparams
            self.held_out = {n: to_structures(read_frames(p), hp["species"], hp["cutoff"], trainer.dtype, p)
                             for n, p in paths.items()}
        result = evaluate_sets(trainer.model, self.held_out, scale)
        plot_calibration(result["predictions"], it / "calibration_heldout.png")
        return result["metrics"]

    def finish_row(self, k: int) -> None:
        row = self.st.pop("row")
        times = self.st.pop("timings", {})
        row["timings"] = {q: round(v, 4) for q, v in times.items()}
        wall = sum(v for q, v in times.items() if q != "evaluate")  # held-out evaluation is not the loop's
        work = times.get("label", 0.0) + times.get("train", 0.0)
        row["timings"]["total"] = round(wall, 4)
        row["overhead_fraction"] = (wall - work) / wall if wall > 0 else 0.0
        row["overhead_fraction_excluding_md"] = ((wall - work - times.get("explore", 0.0)) / wall
                                                 if wall > 0 else 0.0)
        self.st["rows"].append(row)
        from .report import write_report

        write_report(self.out, self.st, self.cfg, log=lambda *a: None)


def run(config_path, resume: bool = False, progress: bool = True, log=print, reference=None) -> Dict[str, Any]:
    """Run (or ``resume``) the loop described by ``config_path``; returns the report dict. ``reference``
    (an ASE calculator; for lattice models a ``holstein.learn.EDReference``) replaces the configured one (used
    by tests and benchmarks)."""
    cfg = load_learn_config(config_path)
    out = Path(cfg["output"]["dir"])
    st: Optional[Dict[str, Any]] = resume_state(out / STATE_FILE, STATE_KIND, resume_key(cfg), resume, "mlpot learn",
                                                 later=LATER_OPTIONS)
    if st is None:
        first = iteration_dir(out, 0)
        if first.is_dir() and any(first.iterdir()):
            raise ValueError(f"{out} already holds an `mlpot learn` run without its state file; choose a new "
                             "output.dir or delete the old one")
        st = {"kind": STATE_KIND, "config": resume_key(cfg), "iteration": 0, "phase": "train", "n_labels": 0,
              "rows": [], "avg_num_neighbors": None}
    elif st["phase"] == "done":
        reason, stop = st.get("stop_reason") or "", cfg["stop"]
        if (reason.startswith(("label budget", "stop.max_iterations")) and st["n_labels"] < stop["label_budget"]
                and st["iteration"] < stop["max_iterations"]):
            st.update(phase="explore", iteration=st["iteration"] + 1, stop_reason=None)
            log(f"mlpot learn: continuing {out} with the larger stop limits")
        else:
            log(f"mlpot learn: {out} is finished ({reason}); the report is rewritten")
    if cfg.get("system") == "lattice":
        from ..holstein.learn import LatticeLoop as kind
    else:
        kind = Loop
    loop = kind(cfg, st, progress=progress, log=log, reference=reference)
    out.mkdir(parents=True, exist_ok=True)
    loop.save_state()
    return loop.run()
