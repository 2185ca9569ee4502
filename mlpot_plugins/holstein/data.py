"""Training data: ED Langevin quench trajectories (snapshots of Q and exact electronic forces).

Two kinds of trajectories, batched through one ``eigh`` per step:
* quench: from the hot random state (Q ~ N(0, kT_hot/k0)) at the target kT: early-time kinetics;
* domains: from random checkerboard domains (sign of a smoothed Gaussian field times A (-1)^(x+y)),
  which ED would need ~10^4 steps to reach by coarsening: the domain walls of late-time kinetics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from .ed import ed_solve
from .langevin import LangevinIntegrator
from .params import HolsteinParams, hot_random_state, stagger


def domain_state(L: int, n: int, p: HolsteinParams, corr_len: float, generator: torch.Generator,
                 dtype=torch.float64):
    """n random CDW domain configurations with domain size ~ corr_len and thermal momenta."""
    k = torch.fft.fftfreq(L, dtype=dtype) * 2 * torch.pi
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    noise = torch.randn((n, L, L), generator=generator, dtype=dtype)
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-0.5 * k2 * corr_len ** 2)).real
    A = p.cdw_amplitude()
    Q = A * stagger(L, dtype) * torch.sign(smooth) + 0.3 * torch.randn((n, L, L), generator=generator, dtype=dtype)
    P = torch.randn((n, L, L), generator=generator, dtype=dtype) * (p.m * p.kT) ** 0.5
    return Q, P


class _RecordingED:
    """ED force callable that keeps the last electronic forces (no second diagonalisation)."""

    def __init__(self, p: HolsteinParams):
        self.p, self.last = p, None

    def __call__(self, Q):
        out = ed_solve(Q, self.p)
        self.last = out["electronic_forces"]
        return out["forces"]


def generate(out: Path, L: int = 20, n_quench: int = 6, n_domain: int = 6, quench_steps: int = 800,
             domain_steps: int = 200, stride: int = 8, p: Optional[HolsteinParams] = None, seed: int = 0,
             kT_hot: float = 5.0, progress: bool = True, device: str = "cpu") -> dict:
    """Run the trajectories and save {Q, f_el, traj, time, kind, params} to ``out`` (torch.save).

    The initial states come from a CPU generator (the same for every device); ``device="cuda"`` runs the
    ED (``eigh``) and the integrator on the GPU, so a device changes only the noise stream and rounding."""
    p = p or HolsteinParams()
    gen = torch.Generator().manual_seed(seed)
    runs = []
    if n_quench:
        runs.append(("quench",) + hot_random_state(L, (n_quench,), kT_hot, p, gen) + (quench_steps,))
    if n_domain:
        corr = torch.linspace(1.0, L / 4, n_domain).tolist()
        Qd, Pd = zip(*(domain_state(L, 1, p, c, gen) for c in corr))
        runs.append(("domains", torch.cat(Qd), torch.cat(Pd), domain_steps))
    Qs, Fs, traj, times, kinds = [], [], [], [], []
    offset = 0
    for kind, Q0, P0, steps in runs:
        rec = _RecordingED(p)
        Q0, P0 = Q0.to(device), P0.to(device)
        integ = LangevinIntegrator(rec, p, Q0, P0, seed=seed + offset + 1)
        bar = tqdm(total=steps, desc=f"ED {kind} {tuple(Q0.shape)}", disable=not progress)

        def keep(s, kind=kind):
            if s.step_count % stride == 0:
                Qs.append(s.Q.to("cpu", copy=True)); Fs.append(rec.last.to("cpu", copy=True))
                traj.append(torch.arange(Q0.shape[0]) + offset)
                times.append(torch.full((Q0.shape[0],), s.time))
                kinds.extend([kind] * Q0.shape[0])
            bar.update(1)

        integ.step(steps, callback=keep)
        bar.close()
        offset += Q0.shape[0]
    data = {"Q": torch.cat(Qs), "f_el": torch.cat(Fs), "traj": torch.cat(traj), "time": torch.cat(times),
            "kind": kinds, "params": p.to_dict(), "L": L, "kT_hot": kT_hot, "seed": seed}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, out)
    return data


def load_data(path) -> dict:
    try:
        d = torch.load(Path(path), weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"training data {path} does not exist; create it with "
                                "`mlpot holstein generate --out {path}`") from None
    if not isinstance(d, dict) or not {"Q", "f_el", "traj", "params"} <= set(d):
        raise ValueError(f"{path} is not Holstein training data (needs Q, f_el, traj, params); "
                         "create it with `mlpot holstein generate`")
    return d
