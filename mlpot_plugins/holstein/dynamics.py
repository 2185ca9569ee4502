"""Quench runs: pick a force engine (ML model, ED, KPM, ML + fallback), integrate, record observables."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from ..cli_types import bounded_int
from ..runsafe import StopSignals, atomic_write_text, check_output, check_output_dir
from .ed import EDForces
from .kpm import KPMForces
from .langevin import DEFAULT_SAVE_EVERY, LangevinIntegrator
from .observables import plot_snapshot, record_frame
from .params import HolsteinParams, check_lattice_size, hot_random_state

ENGINES = ("ml", "ed", "kpm", "ml+fallback", "auto")


class MLForces:
    """Force callable from an exported lattice model (committee mean; keeps the last std)."""

    def __init__(self, module, dtype=torch.float64):
        self.module, self.dtype, self.last_std = module, dtype, None
        self.min_L = min_lattice(module)

    def __call__(self, Q):
        check_lattice_size(Q.shape[-1], self.min_L, why=PATCH_WHY)
        out = self.module.compute_lattice(Q, False)
        return out["forces"].to(self.dtype)


PATCH_WHY = "and at least the model's patch width 2 floor(sqrt(radius2)) + 1"
# what an ML force field bakes in from its training Hamiltonian (the integrator's m, gamma, dt are free)
TRAINED_KEYS = ("t", "g", "k0", "kappa", "kT", "mu")


def min_lattice(module) -> int:
    """Smallest lattice an ML lattice model can evaluate (its patch must fit): 2R + 1, at least 4."""
    return max(4, 2 * int(getattr(module, "R", 0)) + 1)


def model_params(loaded) -> HolsteinParams:
    extra = loaded.metadata.get("extra", {})
    if loaded.metadata["kind"] != "lattice" or "holstein" not in extra:
        raise ValueError(f"{loaded.path} is not a Holstein lattice model (kind {loaded.metadata['kind']!r}, "
                         "no extra.holstein parameters); use a model from `mlpot holstein train`")
    return HolsteinParams.from_dict(extra["holstein"])


def warn_if_untrained(model, p: HolsteinParams) -> Optional[str]:
    """``warnings.warn`` (and return the text) when ``p`` differs from the model's training Hamiltonian in
    t, g, k0, kappa, kT or mu: the ML forces stay those of the trained values."""
    trained = model_params(model)
    diff = {k: getattr(p, k) for k in TRAINED_KEYS if getattr(p, k) != getattr(trained, k)}
    if not diff:
        return None
    msg = (f"the lattice model {model.path.name} was trained at "
           + ", ".join(f"{k}={getattr(trained, k):g}" for k in TRAINED_KEYS) + "; the run uses "
           + ", ".join(f"{k}={v:g}" for k, v in diff.items()) + ". Its forces are those of the trained "
           "Hamiltonian (only the thermostat and the integrator see the new values): train a model at these "
           "parameters (`mlpot holstein generate/train --param ...`) or use --engine ed/kpm")
    warnings.warn(msg, UserWarning, stacklevel=3)
    return msg


def make_forces(engine: str, p: HolsteinParams, model=None, threshold: Optional[float] = None, seed: int = 0,
                until_time: Optional[float] = None):
    """The force callable of an engine. ``auto`` (the default of ``mlpot holstein run``): ``ml+fallback`` with
    the model's own hot-phase recommendation (``fallback.recommended_fallback``: threshold, until_time) when the
    model carries one, else ``ml``. ``threshold``/``until_time`` override it (``ml+fallback`` without them:
    threshold 0.05 for the whole run). ``forces.describe`` says what was chosen."""
    if engine == "auto":
        from .fallback import recommended_fallback

        rec = recommended_fallback(model) if model is not None else None
        if rec is None:  # a threshold asked for is honoured (the whole run, or until until_time), never ignored
            if threshold is None and until_time is not None:
                raise ValueError(f"--fallback-until {until_time:g} limits a fallback, but there is none: the model "
                                 "carries no recommended fallback (metadata extra.fallback_default); pass "
                                 "--threshold STD too, or drop --fallback-until")
            engine = "ml" if threshold is None else "ml+fallback"
        else:
            engine = "ml+fallback"
            threshold = rec["threshold"] if threshold is None else threshold
            until_time = rec["until_time"] if until_time is None else until_time
    if engine == "ed":
        return EDForces(p)
    if engine == "kpm":
        return KPMForces(p, seed=seed)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {list(ENGINES)}")
    if model is None:
        raise ValueError(f"engine {engine!r} needs a model (--model)")
    if engine == "ml":
        forces = MLForces(model.module)
    else:
        from .fallback import GatedForces

        if model.metadata["ensemble_size"] < 2:
            raise ValueError("ml+fallback needs a committee model (ensemble_size > 1) for its force std")
        from .fallback import until_step

        fb = model.metadata.get("fallback") or {}  # a model exported with its solver: the same window and moments
        threshold = 0.05 if threshold is None else threshold
        forces = GatedForces(model.module, p, threshold, **fb,  # fb: {"radius", "n_moments"} (contract)
                             until_step=until_step(until_time, p.dt))
    forces.describe = engine if engine == "ml" else (
        f"ml+fallback (threshold {forces.threshold:g}" + (
            f", until t = {until_time:g}, step {forces.until_step})" if forces.until_step is not None else ")"))
    forces.warning = warn_if_untrained(model, p)  # run_quench records it with the observables
    return forces


def quench_initial_state(L: int, p: HolsteinParams, seed: int = 0, batch: int = 1, kT_hot: float = 5.0):
    """The hot random state (Q, P) a quench of ``run_quench`` (``mlpot holstein run``) starts from, for a
    seed: the one definition the runner, the LAMMPS deck writer and the benchmarks share. ``batch`` > 1
    gives [batch, L, L] (seed k of a batched run is its row k), else [L, L]."""
    gen = torch.Generator().manual_seed(int(seed))
    return hot_random_state(L, (batch,) if batch > 1 else (), kT_hot, p, gen)


def run_quench(forces, p: HolsteinParams, L: int, steps: int, seed: int = 0, batch: int = 1,
               record_every: int = 100, kT_hot: float = 5.0, out_dir: Optional[Path] = None,
               snapshots: int = 0, checkpoint: Optional[Path] = None, restart: bool = False,
               progress: bool = True, save_every: int = DEFAULT_SAVE_EVERY) -> dict:
    """Quench ``batch`` independent hot random states (seeded), record t, S(pi,pi), L(t) (mean over the
    batch) every ``record_every`` steps, up to step ``steps`` (the run's total length: a restart continues
    from the checkpoint's step up to ``steps``); optional PNG snapshots.

    State is never lost: every ``save_every`` steps, at the end and on SIGINT/SIGTERM the checkpoint (with
    the run record) and ``out_dir/observables.json`` are written atomically; a signal then raises
    ``RunInterrupted``. A restart continues the time series of the checkpoint (the observables file holds
    the whole run from t = 0); ``p`` applies from the restart on (changes are listed in ``param_changes``).
    A fresh run refuses to overwrite an earlier run's observables or checkpoint."""
    steps = bounded_int(steps, "steps", 0)
    record_every = bounded_int(record_every, "record_every", 1)
    batch = bounded_int(batch, "batch", 1) if batch is not None else None  # None on restart: the checkpoint's
    snapshots = bounded_int(snapshots, "snapshots", 0)
    save_every = bounded_int(save_every, "save_every", 1)
    out_dir = check_output_dir(out_dir, "--out folder") if out_dir else None
    checkpoint = check_output(checkpoint, "checkpoint") if checkpoint else None
    obs_path = out_dir / "observables.json" if out_dir is not None else None
    if restart:
        if checkpoint is None:
            raise ValueError("restart needs a checkpoint path (--checkpoint)")
        st = LangevinIntegrator.read_checkpoint(checkpoint)
        run = st.get("run") or {}
        held = {"L": int(st["Q"].shape[-1]), "batch": run.get("batch", st["Q"].shape[0] if st["Q"].dim() > 2 else 1),
                "seed": run.get("seed", seed)}
        asked = {"L": L, "batch": batch, "seed": seed}
        wrong = {k: v for k, v in asked.items() if v is not None and v != held[k]}
        if wrong:
            raise ValueError(f"checkpoint {checkpoint} holds a run with "
                             + ", ".join(f"{k}={v}" for k, v in held.items()) + f"; got "
                             + ", ".join(f"{k}={v}" for k, v in wrong.items()) + ": pass the same values (or "
                             "leave them out on the command line) to continue it")
        if int(st["step"]) > steps:
            raise ValueError(f"checkpoint {checkpoint} is at step {int(st['step'])}, beyond steps={steps} (the "
                             "run's total length); pass a larger --steps to continue it")
        integ = LangevinIntegrator.from_state(st, forces, p)
        rec = run.get("record") or new_record(p, held["L"], held["batch"], held["seed"])
        changed = {k: v for k, v in p.to_dict().items() if st["params"].get(k) != v}
        if changed:
            rec.setdefault("param_changes", []).append({"step": integ.step_count, "t": integ.time,
                                                        "changed": changed, "before": st["params"]})
        batch, seed = held["batch"], held["seed"]
    else:
        min_L = getattr(forces, "min_L", 4)
        check_lattice_size(L, min_L, why=PATCH_WHY if min_L > 4 else "")
        for path, what in ((obs_path, "observables"), (checkpoint, "checkpoint")):
            if path is not None and path.exists():
                raise ValueError(f"{path} already holds the {what} of an earlier run; continue it with "
                                 "--restart --checkpoint CHECKPOINT, or choose a new --out/--checkpoint "
                                 "(or delete the file)")
        batch, seed = batch or 1, seed or 0
        Q0, P0 = quench_initial_state(L, p, seed, batch, kT_hot)
        integ = LangevinIntegrator(forces, p, Q0, P0, seed=seed + 1)
        rec = new_record(p, L, batch, seed)
    if getattr(forces, "describe", None):
        rec["engine"] = forces.describe
    warning = getattr(forces, "warning", None)
    if warning and warning not in rec.setdefault("warnings", []):
        rec["warnings"].append(warning)
    snap_at = set(int(x) for x in torch.linspace(0, steps, snapshots).round().tolist()) if snapshots else set()
    start = integ.step_count

    def observe(s):
        if s.step_count % record_every == 0:
            record_frame(rec, s.time, s.Q)
        if out_dir is not None and s.step_count in snap_at:
            Q = s.Q if s.Q.dim() == 2 else s.Q.reshape(-1, *s.Q.shape[-2:])[0]
            plot_snapshot(Q, out_dir / f"snapshot_t{s.time:08.1f}.png",
                          f"order field, L={Q.shape[-1]}, t={s.time:.1f}", amplitude=p.cdw_amplitude())

    t0 = time.perf_counter()

    def save(status: str) -> None:
        wall = time.perf_counter() - t0
        rec.update(status=status, step=integ.step_count, wall_seconds=wall,
                   site_steps_per_second=integ.Q.numel() * (integ.step_count - start) / max(wall, 1e-9))
        if hasattr(forces, "stats"):
            rec["fallback"] = dict(forces.stats)
        if checkpoint is not None:
            integ.save(checkpoint, run={"record": rec, "batch": batch, "seed": seed, "steps": steps})
        if obs_path is not None:
            atomic_write_text(obs_path, json.dumps(rec, indent=1))

    if not restart:
        observe(integ)
    bar = tqdm(total=steps, initial=start, desc=f"Langevin L={rec['L']}", disable=not progress, unit="step")
    with StopSignals() as stop, bar:
        while integ.step_count < steps:
            integ.step(1, callback=observe)
            bar.update(1)
            if stop.signum is not None:
                save("interrupted")
                saved = [str(x) for x in (checkpoint, obs_path) if x is not None]
                raise stop.interrupted(
                    f"step {integ.step_count} of {steps}; saved " + (" and ".join(saved) or "nothing (no --out or "
                    "--checkpoint given)") + ("; to continue, rerun the same command with --restart" if checkpoint is not None
                       else " (give --checkpoint to be able to continue)"))
            if integ.step_count % save_every == 0 and integ.step_count < steps:
                save("running")
    save("complete")
    rec["final_Q"] = integ.Q
    return rec


def new_record(p: HolsteinParams, L: int, batch: int, seed: int) -> dict:
    return {"t": [], "s_pi_pi": [], "s_pi_pi_per_sample": [], "domain_length": [], "params": p.to_dict(), "L": L,
            "batch": batch, "seed": seed}
