"""Radial pieces of the equivariant model: smooth cutoff envelope and the two radial bases.

* ``bessel``: NequIP's sin(n pi r / rc) / r basis, fed to a per-member radial MLP.
* ``spline``: a uniform cubic B-spline basis on [0, rc]; the radial function of every path/channel is a
  learned linear combination of the splines (Facet's spline radial functions: no MLP at run time).
Both are multiplied by the polynomial envelope, whose value, slope and curvature vanish at rc, so
energies and forces go smoothly to zero at the cutoff.
"""
import math

import torch
from torch import Tensor, nn


def polynomial_envelope(r: Tensor, cutoff: float, p: int = 6) -> Tensor:
    """DimeNet envelope: 1 at r=0, C2-smooth zero at r >= cutoff."""
    x = (r / cutoff).clamp(max=1.0)
    a = (p + 1.0) * (p + 2.0) / 2.0
    b = p * (p + 2.0)
    c = p * (p + 1.0) / 2.0
    xp = x.pow(p)
    return 1.0 - a * xp + b * xp * x - c * xp * x * x


class BesselBasis(nn.Module):
    """sqrt(2/rc) sin(n pi r / rc) / r, n = 1..n_basis, times the envelope."""

    def __init__(self, cutoff: float, n_basis: int, dtype: torch.dtype):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("freq", torch.arange(1, n_basis + 1, dtype=dtype) * math.pi / cutoff)

    def forward(self, r: Tensor) -> Tensor:
        rr = r.unsqueeze(-1)
        env = polynomial_envelope(r, self.cutoff).unsqueeze(-1)
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq * rr) / rr * env


class CubicBSplineBasis(nn.Module):
    """Uniform cubic B-splines B((r - t_i)/h) with knots t_i = (i - 1) h covering [0, rc], times the envelope.

    Each basis function is C2 and non-zero on 4 knot intervals, so a learned combination is a smooth
    piecewise-cubic radial function whose cost does not depend on a hidden layer width.
    """

    def __init__(self, cutoff: float, n_basis: int, dtype: torch.dtype):
        super().__init__()
        if n_basis < 4:
            raise ValueError(f"a cubic B-spline basis needs n_basis >= 4, got {n_basis}")
        self.cutoff = float(cutoff)
        self.h = float(cutoff) / (n_basis - 3)
        self.register_buffer("knots", (torch.arange(n_basis, dtype=dtype) - 1.0) * self.h)

    def forward(self, r: Tensor) -> Tensor:
        """[...] distances -> [..., n_basis]. Only the 4 splines B_m..B_m+3 (m = floor(r/h)) that can be
        non-zero at r are evaluated, then scattered into the dense basis the radial weights multiply: the
        same numbers as evaluating all n_basis splines (``dense``), at 4/n_basis of the element-wise work."""
        n_basis = self.knots.shape[0]
        first = torch.floor(r / self.h).clamp(0, n_basis - 4).to(torch.int64)  # r >= rc: the envelope is 0
        idx = first.unsqueeze(-1) + torch.arange(4, device=r.device)
        vals = self.splines(r, self.knots[idx]) * polynomial_envelope(r, self.cutoff).unsqueeze(-1)
        return torch.zeros(r.shape + (n_basis,), dtype=r.dtype, device=r.device).scatter(-1, idx, 2.0 * vals)

    def splines(self, r: Tensor, knots: Tensor) -> Tensor:
        """Cubic B-splines centred on ``knots`` [..., k] at r [...] (x2: the splines sum to 2, an order-one
        basis)."""
        u = ((r.unsqueeze(-1) - knots) / self.h).abs()
        inner = (4.0 - 6.0 * u * u + 3.0 * u * u * u) / 6.0
        two = (2.0 - u).clamp(min=0.0)
        outer = two * two * two / 6.0
        return torch.where(u < 1.0, inner, outer)

    def dense(self, r: Tensor) -> Tensor:
        """The basis with every spline evaluated: the reference ``forward`` must equal (tests, benchmarks)."""
        return 2.0 * self.splines(r, self.knots) * polynomial_envelope(r, self.cutoff).unsqueeze(-1)
