"""BAOAB Langevin integrator for the lattice field, seedable, with bit-identical checkpoint/restart.

m Q'' = F(Q) - gamma Q' + sqrt(2 gamma kT) eta. One step: B (half kick), A (half drift), O (exact
Ornstein-Uhlenbeck P -> c P + sqrt((1 - c^2) m kT) xi, c = exp(-gamma dt / m)), A, new forces, B.
Noise comes from one ``torch.Generator`` whose state is checkpointed with Q, P, F and the step.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from .params import HolsteinParams

CHECKPOINT_VERSION = 1


class LangevinIntegrator:
    def __init__(self, force_fn: Callable[[Tensor], Tensor], params: HolsteinParams, Q: Tensor,
                 P: Optional[Tensor] = None, seed: int = 0, forces: Optional[Tensor] = None):
        self.force_fn, self.p = force_fn, params
        self.Q = Q.clone()
        self.P = torch.zeros_like(Q) if P is None else P.clone().to(Q.dtype)
        if self.P.shape != self.Q.shape:
            raise ValueError(f"P shape {tuple(self.P.shape)} differs from Q shape {tuple(self.Q.shape)}")
        self.generator = torch.Generator(device=Q.device).manual_seed(int(seed))
        self.step_count = 0
        self.F = self.force_fn(self.Q) if forces is None else forces.clone()

    def step(self, n: int = 1, callback: Optional[Callable[["LangevinIntegrator"], None]] = None) -> None:
        p = self.p
        h = 0.5 * p.dt
        c = math.exp(-p.gamma * p.dt / p.m)
        s = math.sqrt(max(0.0, (1 - c * c) * p.m * p.kT))
        for _ in range(n):
            P = self.P + h * self.F
            Q = self.Q + (h / p.m) * P
            xi = torch.randn(Q.shape, generator=self.generator, dtype=Q.dtype, device=Q.device)
            P = c * P + s * xi
            Q = Q + (h / p.m) * P
            F = self.force_fn(Q)
            self.P, self.Q, self.F = P + h * F, Q, F
            self.step_count += 1
            if callback is not None:
                callback(self)

    @property
    def time(self) -> float:
        return self.step_count * self.p.dt

    def kinetic_energy(self) -> Tensor:
        return (self.P * self.P).sum((-1, -2)) / (2 * self.p.m)

    def state_dict(self) -> dict:
        return {"version": CHECKPOINT_VERSION, "Q": self.Q, "P": self.P, "F": self.F,
                "step": self.step_count, "rng": self.generator.get_state(), "params": self.p.to_dict()}

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path)
        return path

    @classmethod
    def restore(cls, path, force_fn: Callable[[Tensor], Tensor]) -> "LangevinIntegrator":
        """Continue a checkpoint exactly where it stopped (same forces, noise stream and step)."""
        try:
            st = torch.load(Path(path), weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"checkpoint {path} does not exist; write one with "
                                    "LangevinIntegrator.save() or `mlpot holstein run --checkpoint`") from None
        except Exception as exc:
            raise ValueError(f"{path} is not a Holstein Langevin checkpoint ({type(exc).__name__}); "
                             "write one with LangevinIntegrator.save()") from None
        if not isinstance(st, dict) or st.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} is not a version-{CHECKPOINT_VERSION} Holstein Langevin checkpoint; "
                             "write one with LangevinIntegrator.save()")
        self = cls(force_fn, HolsteinParams.from_dict(st["params"]), st["Q"], st["P"], forces=st["F"])
        self.generator.set_state(st["rng"])
        self.step_count = int(st["step"])
        return self
