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
        u = ((r.unsqueeze(-1) - self.knots) / self.h).abs()
        inner = (4.0 - 6.0 * u * u + 3.0 * u * u * u) / 6.0
        two = (2.0 - u).clamp(min=0.0)
        outer = two * two * two / 6.0
        b = torch.where(u < 1.0, inner, outer)
        env = polynomial_envelope(r, self.cutoff).unsqueeze(-1)
        return 2.0 * b * env  # x2: the splines sum to 1, give the basis order-one magnitude
