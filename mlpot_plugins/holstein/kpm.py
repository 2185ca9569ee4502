"""Kernel polynomial method: linear-scaling local densities n_i = <i| f(h) |i>.

f (Fermi function) is expanded in Chebyshev polynomials of the rescaled Hamiltonian h~ = (h - b)/a with
Jackson-kernel damping; h~ v is a five-point stencil (``torch.roll``), so one moment costs O(N) per
probe vector. The diagonal comes from *probing*: sites are coloured by (x mod c, y mod c); the probe of
one colour is sum_j s_j e_j over its sites with random signs s_j = +-1, and
n_i = s_i [f(h) v_colour(i)]_i = f_ii + sum_(j same colour) s_i s_j f_ij.
f(h) decays exponentially with distance (gap or kT > 0), so the contamination from sites c apart is
exponentially small and unbiased. c must divide L (the colouring is then periodic); with c = L it is exact.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .params import HolsteinParams, check_field, nn_sum


def jackson_kernel(M: int, dtype=torch.float64, device=None) -> Tensor:
    n = torch.arange(M, dtype=dtype, device=device)
    q = math.pi / (M + 1)
    return ((M - n + 1) * torch.cos(q * n) + torch.sin(q * n) / math.tan(q)) / (M + 1)


def fermi_chebyshev_coefficients(a: Tensor, b: Tensor, M: int, kT: float, mu: float = 0.0) -> Tensor:
    """c_n of f(a x + b) = sum_n c_n T_n(x) (Chebyshev-Gauss quadrature), batched over a, b [...] -> [..., M]."""
    K = 4 * M
    theta = math.pi * (torch.arange(K, dtype=a.dtype, device=a.device) + 0.5) / K
    e = a.unsqueeze(-1) * torch.cos(theta) + b.unsqueeze(-1)
    f = torch.sigmoid(-(e - mu) / kT) if kT > 0 else (e < mu).to(e.dtype)
    n = torch.arange(M, dtype=a.dtype, device=a.device)
    c = (2.0 / K) * f @ torch.cos(n[:, None] * theta[None, :]).T
    c[..., 0] *= 0.5
    return c


def spectral_bounds(Q: Tensor, p: HolsteinParams, extra: float = 0.0):
    """Centre b and half-width a [...] with spec h within (b - a, b + a): |-t T| <= 4|t|, V = -g Q."""
    V = -p.g * Q.flatten(-2)
    lo = V.min(-1).values - 4 * abs(p.t)
    hi = V.max(-1).values + 4 * abs(p.t)
    a = 0.5 * (hi - lo) * 1.02 + 1e-3 + extra
    return a, 0.5 * (hi + lo)


def chebyshev_diagonal(Q: Tensor, probes: Tensor, p: HolsteinParams, M: int, periodic: bool = True) -> Tensor:
    """sum_probes probe * f(h) probe for fields Q [..., L, L] and probes [..., P, L, L] -> [..., L, L]."""
    a, b = spectral_bounds(Q, p)
    coef = fermi_chebyshev_coefficients(a, b, M, p.kT, p.mu) * jackson_kernel(M, Q.dtype, Q.device)
    ex = (...,) + (None,) * 3  # broadcast [...] over [P, L, L]
    V = (-p.g * Q).unsqueeze(-3)
    scale = 1.0 / a[ex]
    shift = b[ex]

    def apply(v: Tensor) -> Tensor:
        return (-p.t * nn_sum(v, periodic) + V * v - shift * v) * scale

    v_prev, v = probes, apply(probes)
    acc = coef[..., 0][ex] * v_prev + coef[..., 1][ex] * v
    for n in range(2, M):
        v_prev, v = v, 2 * apply(v) - v_prev
        acc = acc + coef[..., n][ex] * v
    return (probes * acc).sum(-3)


def default_moments(Q: Tensor, p: HolsteinParams, tol: float = 1e-4) -> int:
    """Moments so that the Jackson broadening pi a / M is a few kT and the Chebyshev tail of f is below
    tol; capped at 4000."""
    a, _ = spectral_bounds(Q, p)
    kT = max(p.kT, 1e-3)
    return int(min(4000, max(64, math.ceil(3.0 * math.pi * float(a.max()) / kT))))


def kpm_density(Q: Tensor, p: HolsteinParams, n_moments: Optional[int] = None, colors: int = 8,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Local densities [..., L, L] by KPM with coloured probing (c = smallest divisor of L >= colors)."""
    L = check_field(Q)
    c = next(d for d in range(max(1, colors), L + 1) if L % d == 0)
    M = n_moments or default_moments(Q, p)
    x = torch.arange(L, device=Q.device)
    color = (x[:, None] % c) * c + (x[None, :] % c)
    signs = torch.randint(0, 2, (L, L), generator=generator).to(Q.device, Q.dtype) * 2 - 1
    onehot = (color.unsqueeze(0) == torch.arange(c * c, device=Q.device)[:, None, None]).to(Q.dtype)
    probes = (onehot * signs).expand(Q.shape[:-2] + (c * c, L, L))
    return chebyshev_diagonal(Q, probes, p, M)


def kpm_site_density(Q: Tensor, sites: Tensor, p: HolsteinParams, n_moments: Optional[int] = None,
                     radius: int = 8) -> Tensor:
    """Densities of selected sites of one field Q [L, L]: KPM with the exact unit probe e_i on an open
    (2 radius + 1)^2 window around each site (nearsightedness; error ~ exp(-radius / xi)).
    ``sites`` [S, 2] (x, y) -> [S]. Cost O(S radius^2 M), independent of L."""
    L = check_field(Q)
    if sites.numel() == 0:
        return Q.new_zeros(0)
    w = 2 * radius + 1
    off = torch.arange(-radius, radius + 1, device=Q.device)
    xs = (sites[:, 0, None] + off) % L
    ys = (sites[:, 1, None] + off) % L
    windows = Q[xs[:, :, None], ys[:, None, :]]  # [S, w, w]
    probe = torch.zeros(sites.shape[0], 1, w, w, dtype=Q.dtype, device=Q.device)
    probe[:, 0, radius, radius] = 1.0
    M = n_moments or default_moments(windows, p)
    return chebyshev_diagonal(windows, probe, p, M, periodic=False)[:, radius, radius]


class KPMForces:
    """Force callable for the integrator: Q -> g (n_KPM - 1/2) + elastic forces."""

    def __init__(self, p: HolsteinParams, n_moments: Optional[int] = None, colors: int = 8, seed: int = 0):
        self.p, self.n_moments, self.colors = p, n_moments, colors
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, Q: Tensor) -> Tensor:
        from .params import elastic_force

        n = kpm_density(Q, self.p, self.n_moments, self.colors, self.gen)
        return self.p.g * (n - 0.5) + elastic_force(Q, self.p)
