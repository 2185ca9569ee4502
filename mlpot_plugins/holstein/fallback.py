"""Uncertainty-gated fallback: sites whose committee force std exceeds a threshold get the exact
(KPM, open window around the site) electronic force instead of the ML one.

Two users, one KPM implementation (``kpm.window_site_density``):

* ``GatedForces``: the Python engine of ``mlpot holstein run --engine ml+fallback`` (periodic grid);
* ``with_fallback``: an exported lattice committee that carries the same solver as TorchScript, the method
  ``compute_lattice_block_fallback(Q_block, halo, threshold)`` (contract, Lattice fallback), so LAMMPS and
  OpenMM runs fall back inside the engine. ``mlpot holstein export MODEL --fallback-radius R`` writes one.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .dynamics import PATCH_WHY, min_lattice
from .kpm import kpm_site_density, window_site_density
from .params import HolsteinParams, check_lattice_size

DEFAULT_RADIUS = 6       # window (2 radius + 1)^2 = 13 x 13: nearsightedness error ~ 1e-3 at the shipped kT
DEFAULT_MOMENTS = 2048   # Chebyshev moments of the exported solver (its n_moments is fixed: block-split invariant)
RECOMMENDATION_KEY = "fallback_default"  # metadata extra: the hot-phase fallback the quench tools use by default


def recommended_fallback(model) -> Optional[Dict[str, float]]:
    """The model's own hot-phase fallback, metadata ``extra.fallback_default`` = {"threshold": force std,
    "until_time": t} (measured per regime, ``benchmarks/holstein_regimes.py``): what ``mlpot holstein run`` and
    ``mlpot holstein lammps`` use by default, so a quench from the hot t = 0 state keeps the force error of
    every regime within the model's stated bound. None when the file has none (or no exact solver to fall back
    to). The one reader of that field."""
    rec = (model.metadata.get("extra") or {}).get(RECOMMENDATION_KEY)
    if rec is None or not model.metadata.get("fallback"):
        return None
    where = f"{getattr(model, 'path', 'model')}: metadata extra.{RECOMMENDATION_KEY}"
    if not isinstance(rec, dict) or set(rec) - {"threshold", "until_time", "measured"} or "threshold" not in rec:
        raise ValueError(f"{where} must be {{\"threshold\": std > 0, \"until_time\": t >= 0 or null}}, got "
                         f"{rec!r}; re-export the model (`mlpot holstein export MODEL --out FILE`)")
    thr, until = rec["threshold"], rec.get("until_time")
    ok_thr = isinstance(thr, (int, float)) and not isinstance(thr, bool) and math.isfinite(thr) and thr > 0
    ok_until = until is None or (isinstance(until, (int, float)) and not isinstance(until, bool)
                                 and math.isfinite(until) and until >= 0)
    if not (ok_thr and ok_until):
        raise ValueError(f"{where} has threshold {thr!r} (needs a finite force std > 0) and until_time {until!r} "
                         "(needs a finite time >= 0 or null); re-export the model with valid values")
    return {"threshold": float(thr), "until_time": None if until is None else float(until)}


def until_step(until_time: Optional[float], dt: float) -> Optional[int]:
    """The first step (timestep) whose forces no longer fall back: round(until_time / dt); None = never off."""
    return None if until_time is None else int(round(until_time / dt))


class GatedForces:
    """Force callable for the integrator: ML committee forces, KPM where forces_std > threshold.

    ``module`` is a loaded lattice-kind model (``LoadedModel.module`` or an nn.Module); ``stats``
    accumulates how many sites fell back, for the cost/error report. ``max_fraction`` caps the share of
    sites that fall back per call (the most uncertain ones); None: no cap, as in the engines' exported solver
    (``compute_lattice_block_fallback``), which it then equals for the same radius and n_moments."""

    def __init__(self, module, p: HolsteinParams, threshold: float, radius: int = DEFAULT_RADIUS,
                 n_moments: Optional[int] = None, max_fraction: Optional[float] = 0.25,
                 until_step: Optional[int] = None):
        if not threshold > 0:
            raise ValueError(f"fallback threshold {threshold} must be > 0 (a force std in units of t)")
        if until_step is not None and (isinstance(until_step, bool) or not isinstance(until_step, int)
                                       or until_step < 0):
            raise ValueError(f"fallback until_step {until_step!r} must be an integer step >= 0 (or None: always)")
        self.module, self.p, self.threshold = module, p, float(threshold)
        self.radius, self.n_moments, self.max_fraction = radius, n_moments, max_fraction
        self.until_step = until_step  # as pair_style mlpot ... fallback THRESHOLD until STEP
        self.step = 0  # the step whose forces the next call computes (LangevinIntegrator.set_step)
        self.stats: Dict[str, float] = {"calls": 0, "sites": 0, "fallback_sites": 0}
        self.last_mask = None
        self.min_L = min_lattice(module)

    def set_step(self, step: int) -> None:
        """The integrator says which step the next force call is for (the fallback is off from until_step on)."""
        self.step = int(step)

    @property
    def active(self) -> bool:
        return self.until_step is None or self.step < self.until_step

    def __call__(self, Q: Tensor) -> Tensor:
        check_lattice_size(Q.shape[-1], self.min_L, why=PATCH_WHY)
        out = self.module.compute_lattice(Q, True)
        F = out["forces"].to(Q.dtype)
        std = out["forces_std"]
        mask = std > self.threshold if self.active else torch.zeros_like(std, dtype=torch.bool)
        if self.max_fraction is not None:
            # never let a badly extrapolating model turn the run into a full KPM run silently
            budget = int(self.max_fraction * mask[..., :, :].numel())
            if int(mask.sum()) > budget:
                cut = std.flatten().topk(budget).values[-1]
                mask = std >= cut
        self.last_mask = mask
        idx = mask.nonzero()
        if len(idx):
            flat = Q.reshape(-1, Q.shape[-2], Q.shape[-1])
            b = idx[:, :-2].flatten() if Q.dim() > 2 else torch.zeros(len(idx), dtype=torch.long)
            n = torch.empty(len(idx), dtype=Q.dtype)
            for bi in b.unique():
                sel = b == bi
                n[sel] = kpm_site_density(flat[bi], idx[sel][:, -2:], self.p, self.n_moments, self.radius)
            exact_el = self.p.g * (n - 0.5)
            # replace only the electronic part; the elastic part is exact in both
            from .params import elastic_force

            el = F - elastic_force(Q, self.p)
            ml_el = el[tuple(idx.T)]
            F = F.index_put(tuple(idx.T), F[tuple(idx.T)] - ml_el + exact_el)
        self.stats["calls"] += 1
        self.stats["sites"] += mask.numel()
        self.stats["fallback_sites"] += len(idx)
        return F


class WindowedKPM(nn.Module):
    """The exact local solver an exported model carries: the Holstein parameters (plain floats, no tensors, so
    the model's weights and dtype are untouched) and the exact force of one site from the open window of Q
    around it, g (n_KPM - 1/2) - k0 Q_i - kappa sum_nn Q_j, computed in float64."""

    def __init__(self, p: HolsteinParams, chunk: int = 4096):
        super().__init__()
        self.t: float = p.t
        self.g: float = p.g
        self.kT: float = p.kT
        self.mu: float = p.mu
        self.k0: float = p.k0
        self.kappa: float = p.kappa
        self.chunk: int = int(chunk)  # sites per KPM batch (memory only: results do not depend on it)

    def forward(self, windows: Tensor, n_moments: int) -> Tensor:
        """windows [S, w, w] (w = 2 radius + 1, the site at the centre) -> exact forces [S] (float64)."""
        windows = windows.to(torch.float64)
        S, w = windows.shape[0], windows.shape[-1]
        r = w // 2
        parts = []
        for s0 in range(0, S, self.chunk):
            win = windows[s0:s0 + self.chunk]
            n = window_site_density(win, self.t, self.g, self.kT, self.mu, n_moments)
            nn_sum = win[:, r - 1, r] + win[:, r + 1, r] + win[:, r, r - 1] + win[:, r, r + 1]
            parts.append(self.g * (n - 0.5) - self.k0 * win[:, r, r] - self.kappa * nn_sum)
        if len(parts) == 0:
            return torch.zeros([0], dtype=torch.float64, device=windows.device)
        return torch.cat(parts)


class FallbackMethod:
    """Adds the exported ``compute_lattice_block_fallback`` to a lattice committee class (see ``with_fallback``)."""

    @torch.jit.export
    def compute_lattice_block_fallback(self, Q_block: Tensor, halo: int, threshold: float) -> Dict[str, Tensor]:
        """``compute_lattice_block`` of the interior [..., nx, ny] of Q_block [..., nx + 2 halo, ny + 2 halo] with
        every site whose calibrated std exceeds ``threshold`` given the exact force of the windowed KPM solver
        (electronic and elastic). Returns ``forces``, ``forces_std`` (before fallback) and ``fallback_mask``
        (float64, 1.0 where the site fell back). Needs ``halo >= fallback_range``."""
        if not (threshold > 0.0):
            raise ValueError(f"fallback threshold {threshold} must be a force std > 0 (in units of t); pass a "
                             f"positive threshold, e.g. 0.05")
        if halo < self.fallback_range:
            raise ValueError(f"halo {halo} is smaller than the model's fallback range: "
                             f"compute_lattice_block_fallback needs a halo of at least {self.fallback_range} "
                             f"sites on every side (metadata fallback_range: the interaction range and the KPM "
                             f"window radius {self.fallback_radius}); pass a block with halo >= "
                             f"{self.fallback_range}")
        out = self.compute_lattice_block(Q_block, halo, True)
        F, std = out["forces"], out["forces_std"]
        nx, ny = F.shape[-2], F.shape[-1]
        mask = std > threshold
        F3 = F.reshape(-1, nx, ny).clone()
        idx = mask.reshape(-1, nx, ny).nonzero()  # [S, 3]: (field, x, y)
        if idx.shape[0] > 0:
            Qb = Q_block.reshape(-1, Q_block.shape[-2], Q_block.shape[-1])
            r = self.fallback_radius
            off = torch.arange(-r, r + 1, device=Q_block.device)
            xs = idx[:, 1].unsqueeze(1) + halo + off
            ys = idx[:, 2].unsqueeze(1) + halo + off
            windows = Qb[idx[:, 0].unsqueeze(1).unsqueeze(2), xs.unsqueeze(2), ys.unsqueeze(1)]  # [S, w, w]
            exact = self.fallback_solver(windows, self.fallback_moments)
            F3[idx[:, 0], idx[:, 1], idx[:, 2]] = exact.to(F3.dtype)
        return {"forces": F3.reshape(F.shape), "forces_std": std, "fallback_mask": mask.to(torch.float64)}


def fallback_range(module, radius: int) -> int:
    """The halo the fallback method needs: the model's block halo and the KPM window radius (>= 1: the elastic
    force reads the nearest neighbours)."""
    return max(int(module.halo), int(radius), 1)


def with_fallback(model: nn.Module, p: HolsteinParams, radius: int = DEFAULT_RADIUS,
                  n_moments: int = DEFAULT_MOMENTS) -> nn.Module:
    """The lattice committee ``model`` (weights untouched) carrying the exact windowed KPM solver of the
    Holstein parameters ``p``: its class gains ``compute_lattice_block_fallback`` and the int attributes
    ``fallback_range``, ``fallback_radius``, ``fallback_moments`` (``export`` writes them as the metadata
    ``fallback_range`` and ``fallback``)."""
    for name, v, low in (("radius", radius, 1), ("n_moments", n_moments, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"fallback {name}={v!r} must be an integer >= {low}")
    if int(getattr(model, "ensemble_size", 1)) < 2:
        raise ValueError("the fallback needs a committee (ensemble_size > 1): its calibrated force std decides "
                         "which sites fall back; train one with `mlpot holstein train --ensemble 4`")
    if not hasattr(model, "compute_lattice_block"):
        raise ValueError(f"{type(model).__name__} has no compute_lattice_block(); the fallback extends the block "
                         "method of the Holstein lattice models (mlpot_plugins.holstein.model)")
    base = type(model)
    if not isinstance(model, FallbackMethod):
        model.__class__ = type(f"{base.__name__}WithFallback", (FallbackMethod, base),
                               {"__module__": base.__module__})
    model.fallback_solver = WindowedKPM(p)
    model.fallback_radius = int(radius)
    model.fallback_moments = int(n_moments)
    model.fallback_range = fallback_range(model, radius)
    return model

