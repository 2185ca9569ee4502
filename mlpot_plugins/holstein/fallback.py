"""Uncertainty-gated fallback: sites whose committee force std exceeds a threshold get the exact
(KPM, open window around the site) electronic force instead of the ML one."""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from .kpm import kpm_site_density
from .dynamics import PATCH_WHY, min_lattice
from .params import HolsteinParams, check_lattice_size


class GatedForces:
    """Force callable for the integrator: ML committee forces, KPM where forces_std > threshold.

    ``module`` is a loaded lattice-kind model (``LoadedModel.module`` or an nn.Module); ``stats``
    accumulates how many sites fell back, for the cost/error report."""

    def __init__(self, module, p: HolsteinParams, threshold: float, radius: int = 6, n_moments: int = None,
                 max_fraction: float = 0.25):
        if threshold <= 0:
            raise ValueError(f"fallback threshold {threshold} must be > 0 (a force std in units of t)")
        self.module, self.p, self.threshold = module, p, float(threshold)
        self.radius, self.n_moments, self.max_fraction = radius, n_moments, max_fraction
        self.stats: Dict[str, float] = {"calls": 0, "sites": 0, "fallback_sites": 0}
        self.last_mask = None
        self.min_L = min_lattice(module)

    def __call__(self, Q: Tensor) -> Tensor:
        check_lattice_size(Q.shape[-1], self.min_L, why=PATCH_WHY)
        out = self.module.compute_lattice(Q, True)
        F = out["forces"].to(Q.dtype)
        std = out["forces_std"]
        mask = std > self.threshold
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
            ml_el = torch.zeros(len(idx), dtype=Q.dtype)
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
