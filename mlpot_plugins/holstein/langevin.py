"""BAOAB Langevin integrator for the lattice field, seedable, with bit-identical checkpoint/restart.

m Q'' = F(Q) - gamma Q' + sqrt(2 gamma kT) eta. One step: B (half kick), A (half drift), O (exact
Ornstein-Uhlenbeck P -> c P + sqrt((1 - c^2) m kT) xi, c = exp(-gamma dt / m)), A, new forces, B.
Noise comes from one ``torch.Generator`` whose state is checkpointed with Q, P, F and the step.
Every step checks for a blow-up (NaN/inf or max|Q| far beyond the physical scale, e.g. a too large dt) and
raises ``DivergenceError`` naming dt and the fix, so no caller can record a diverged run as a result.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from ..runsafe import DivergenceError, torch_save_atomic
from .params import HolsteinParams

CHECKPOINT_VERSION = 1
DEFAULT_SAVE_EVERY = 500  # steps between periodic checkpoint/observables writes of a run
RUNAWAY_FACTOR = 100.0  # max|Q| beyond this many physical scales (or the initial max|Q|) is a blow-up


def runaway_limit(p: HolsteinParams, Q: Tensor) -> float:
    """Largest max|Q| accepted: RUNAWAY_FACTOR x max(initial max|Q|, (g/2 + sqrt(kT)) / (k0 - 4|kappa|)),
    the equilibrium displacement under the largest electronic force (|g (n - 1/2)| <= g/2) plus thermal."""
    scale = (abs(p.g) / 2 + math.sqrt(p.kT)) / (p.k0 - 4 * abs(p.kappa))
    q0 = float(Q.abs().max()) if Q.numel() else 0.0
    return RUNAWAY_FACTOR * max(scale, q0 if math.isfinite(q0) else 0.0, 1e-6)


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
        self.q_limit = runaway_limit(params, self.Q)
        if forces is None:
            self._tell_step(0)
        self.F = self.force_fn(self.Q) if forces is None else forces.clone()
        self.check_state()

    def _tell_step(self, step: int) -> None:
        """Force callables that depend on the step (a fallback that is on only for the hot phase) learn it
        through ``set_step(step)`` before each call: step n = the forces of the positions after n steps."""
        set_step = getattr(self.force_fn, "set_step", None)
        if set_step is not None:
            set_step(step)

    def check_state(self) -> None:
        """Raise ``DivergenceError`` if Q or F is non-finite or max|Q| ran away (one reduction each)."""
        q = float(self.Q.abs().max()) if self.Q.numel() else 0.0
        f = float(self.F.abs().max()) if self.F.numel() else 0.0
        if q <= self.q_limit and math.isfinite(f):
            return
        p = self.p
        if not math.isfinite(q):
            what = f"max|Q| is {q}"
        elif q > self.q_limit:
            what = f"max|Q| = {q:.3g} exceeds the runaway bound {self.q_limit:.3g}"
        else:
            what = f"the forces are non-finite ({f})"
        raise DivergenceError(
            f"Langevin dynamics diverged at step {self.step_count} (t = {self.time:g}): {what}. The time step "
            f"dt={p.dt:g} is too large for m={p.m:g}, k0={p.k0:g}, g={p.g:g} (or the forces are wrong): rerun "
            f"with a smaller time step, e.g. --param dt={min(p.dt / 4, 0.05):g} (the default is 0.05)")

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
            self._tell_step(self.step_count + 1)
            F = self.force_fn(Q)
            self.P, self.Q, self.F = P + h * F, Q, F
            self.step_count += 1
            self.check_state()
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

    def save(self, path, run: Optional[dict] = None) -> Path:
        """Write the checkpoint atomically (temporary file + rename); ``run``: the caller's run record."""
        st = self.state_dict()
        if run is not None:
            st["run"] = run
        return torch_save_atomic(st, path)

    @classmethod
    def restore(cls, path, force_fn: Callable[[Tensor], Tensor],
                params: Optional[HolsteinParams] = None) -> "LangevinIntegrator":
        """Continue a checkpoint exactly where it stopped (same forces, noise stream and step). ``params``
        replaces the checkpoint's parameters (e.g. a new kT from here on); the default keeps them."""
        return cls.from_state(cls.read_checkpoint(path), force_fn, params)

    @staticmethod
    def read_checkpoint(path) -> dict:
        """The validated checkpoint dictionary (``run`` holds the run record, if the run saved one)."""
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
        return st

    @classmethod
    def from_state(cls, st: dict, force_fn: Callable[[Tensor], Tensor],
                   params: Optional[HolsteinParams] = None) -> "LangevinIntegrator":
        self = cls(force_fn, params or HolsteinParams.from_dict(st["params"]), st["Q"], st["P"], forces=st["F"])
        self.generator.set_state(st["rng"])
        self.step_count = int(st["step"])
        return self
