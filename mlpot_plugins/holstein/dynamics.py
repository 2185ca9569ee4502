"""Quench runs: pick a force engine (ML model, ED, KPM, ML + fallback), integrate, record observables."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from .ed import EDForces
from .kpm import KPMForces
from .langevin import LangevinIntegrator
from .observables import domain_length, plot_snapshot, s_pi_pi
from .params import HolsteinParams, hot_random_state

ENGINES = ("ml", "ed", "kpm", "ml+fallback")


class MLForces:
    """Force callable from an exported lattice model (committee mean; keeps the last std)."""

    def __init__(self, module, dtype=torch.float64):
        self.module, self.dtype, self.last_std = module, dtype, None

    def __call__(self, Q):
        out = self.module.compute_lattice(Q, False)
        return out["forces"].to(self.dtype)


def model_params(loaded) -> HolsteinParams:
    extra = loaded.metadata.get("extra", {})
    if loaded.metadata["kind"] != "lattice" or "holstein" not in extra:
        raise ValueError(f"{loaded.path} is not a Holstein lattice model (kind {loaded.metadata['kind']!r}, "
                         "no extra.holstein parameters); use a model from `mlpot holstein train`")
    return HolsteinParams.from_dict(extra["holstein"])


def make_forces(engine: str, p: HolsteinParams, model=None, threshold: float = 0.05, seed: int = 0):
    if engine == "ed":
        return EDForces(p)
    if engine == "kpm":
        return KPMForces(p, seed=seed)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {list(ENGINES)}")
    if model is None:
        raise ValueError(f"engine {engine!r} needs a model (--model)")
    if engine == "ml":
        return MLForces(model.module)
    from .fallback import GatedForces

    if model.metadata["ensemble_size"] < 2:
        raise ValueError("ml+fallback needs a committee model (ensemble_size > 1) for its force std")
    return GatedForces(model.module, p, threshold)


def run_quench(forces, p: HolsteinParams, L: int, steps: int, seed: int = 0, batch: int = 1,
               record_every: int = 100, kT_hot: float = 5.0, out_dir: Optional[Path] = None,
               snapshots: int = 0, checkpoint: Optional[Path] = None, restart: bool = False,
               progress: bool = True) -> dict:
    """Quench ``batch`` independent hot random states (seeded), record t, S(pi,pi), L(t) (mean over the
    batch) every ``record_every`` steps; optional PNG snapshots and a final checkpoint."""
    if steps < 0 or record_every < 1:
        raise ValueError(f"steps={steps} must be >= 0 and record_every={record_every} >= 1")
    if restart:
        if checkpoint is None:
            raise ValueError("restart needs a checkpoint path (--checkpoint)")
        integ = LangevinIntegrator.restore(checkpoint, forces)
    else:
        gen = torch.Generator().manual_seed(seed)
        Q0, P0 = hot_random_state(L, (batch,) if batch > 1 else (), kT_hot, p, gen)
        integ = LangevinIntegrator(forces, p, Q0, P0, seed=seed + 1)
    rec = {"t": [], "s_pi_pi": [], "s_pi_pi_per_sample": [], "domain_length": [], "params": p.to_dict(), "L": integ.Q.shape[-1],
           "batch": batch, "seed": seed}
    snap_at = set(int(x) for x in torch.linspace(0, steps, snapshots).round().tolist()) if snapshots else set()
    out_dir = Path(out_dir) if out_dir else None

    def observe(s):
        if s.step_count % record_every == 0:
            rec["t"].append(s.time)
            sp = s_pi_pi(s.Q)
            rec["s_pi_pi"].append(float(sp.mean()))
            rec["s_pi_pi_per_sample"].append(sp.reshape(-1).tolist())
            rec["domain_length"].append(float(domain_length(s.Q).mean()))
        k = s.step_count - start
        if out_dir is not None and k in snap_at:
            Q = s.Q if s.Q.dim() == 2 else s.Q.reshape(-1, *s.Q.shape[-2:])[0]
            plot_snapshot(Q, out_dir / f"snapshot_t{s.time:08.1f}.png",
                          f"order field, L={Q.shape[-1]}, t={s.time:.1f}", amplitude=p.cdw_amplitude())

    start = integ.step_count
    observe(integ)
    bar = tqdm(total=steps, desc=f"Langevin L={rec['L']}", disable=not progress, unit="step")
    t0 = time.perf_counter()
    for _ in range(steps):
        integ.step(1, callback=observe)
        bar.update(1)
    bar.close()
    wall = time.perf_counter() - t0
    rec["wall_seconds"] = wall
    rec["site_steps_per_second"] = integ.Q.numel() * steps / max(wall, 1e-9)
    if hasattr(forces, "stats"):
        rec["fallback"] = dict(forces.stats)
    if checkpoint is not None:
        integ.save(checkpoint)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "observables.json").write_text(json.dumps(rec, indent=1))
    rec["final_Q"] = integ.Q
    return rec
