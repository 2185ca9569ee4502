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
from typing import Optional, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor

from .params import HolsteinParams, check_field, nn_sum


def jackson_kernel(M: int, dtype: torch.dtype = torch.float64, device: Optional[torch.device] = None) -> Tensor:
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
    c = (2.0 / K) * f @ torch.cos(n.unsqueeze(1) * theta.unsqueeze(0)).t()
    c[..., 0] *= 0.5
    return c


def spectral_bounds_of(Q: Tensor, t: float, g: float, extra: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Half-width a and centre b [...] with spec h within (b - a, b + a) for fields Q [..., L, L]:
    |-t T| <= 4|t|, V = -g Q."""
    V = -g * Q.flatten(-2)
    lo = V.min(-1).values - 4 * abs(t)
    hi = V.max(-1).values + 4 * abs(t)
    a = 0.5 * (hi - lo) * 1.02 + 1e-3 + extra
    return a, 0.5 * (hi + lo)


def spectral_bounds(Q: Tensor, p: HolsteinParams, extra: float = 0.0):
    """``spectral_bounds_of`` with the parameters ``p``."""
    return spectral_bounds_of(Q, p.t, p.g, extra)


def _over_lattice(x: Tensor) -> Tensor:
    """[...] -> [..., 1, 1, 1]: broadcast a per-field value over [..., P, L, L]."""
    return x.unsqueeze(-1).unsqueeze(-1).unsqueeze(-1)


def chebyshev_diagonal_of(Q: Tensor, probes: Tensor, t: float, g: float, kT: float, mu: float, M: int,
                          periodic: bool = True) -> Tensor:
    """sum_probes probe * f(h) probe for fields Q [..., L, L] and probes [..., P, L, L] -> [..., L, L]
    (h = -t T - g Q, f the Fermi function at kT, mu; M Jackson-damped Chebyshev moments). TorchScript-able:
    the exported exact fallback solver (fallback.WindowedKPM) runs this same function."""
    a, b = spectral_bounds_of(Q, t, g)
    coef = fermi_chebyshev_coefficients(a, b, M, kT, mu) * jackson_kernel(M, Q.dtype, Q.device)
    V = (-g * Q).unsqueeze(-3)
    scale = 1.0 / _over_lattice(a)
    shift = _over_lattice(b)
    v_prev = probes
    v = (-t * nn_sum(probes, periodic) + V * probes - shift * probes) * scale
    acc = _over_lattice(coef[..., 0]) * v_prev + _over_lattice(coef[..., 1]) * v
    for n in range(2, M):
        v_next = 2 * ((-t * nn_sum(v, periodic) + V * v - shift * v) * scale) - v_prev
        v_prev, v = v, v_next
        acc = acc + _over_lattice(coef[..., n]) * v
    return (probes * acc).sum(-3)


def chebyshev_diagonal(Q: Tensor, probes: Tensor, p: HolsteinParams, M: int, periodic: bool = True) -> Tensor:
    """``chebyshev_diagonal_of`` with the parameters ``p``."""
    return chebyshev_diagonal_of(Q, probes, p.t, p.g, p.kT, p.mu, M, periodic)


def window_site_density(windows: Tensor, t: float, g: float, kT: float, mu: float, M: int) -> Tensor:
    """Density of the centre site of each open window [S, w, w] (w = 2 radius + 1) -> [S]: KPM with the exact
    unit probe e_c on the centre site, n_c = sum_m c_m g_m mu_m with the moments mu_m = <e_c|T_m(h~)|e_c> from
    the Chebyshev vectors v_k = T_k(h~) e_c by doubling (mu_2k = 2 <v_k|v_k> - mu_0, mu_2k+1 = 2 <v_k+1|v_k> -
    mu_1: M/2 matrix-vector steps, the same Jackson-damped sum as ``chebyshev_diagonal``). The one
    implementation of the windowed (nearsighted) site density, used by ``kpm_site_density`` and by the exported
    fallback solver (TorchScript)."""
    S, w = windows.shape[0], windows.shape[-1]
    r = w // 2
    a, b = spectral_bounds_of(windows, t, g)
    coef = fermi_chebyshev_coefficients(a, b, M, kT, mu) * jackson_kernel(M, windows.dtype, windows.device)
    scale = (2.0 / a).reshape(S, 1, 1, 1)  # 2 h~ v = hop * nn_sum(v) + diag * v
    diag = (-g * windows.unsqueeze(1) - b.reshape(S, 1, 1, 1)) * scale
    hop = -t * scale
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=windows.dtype,
                         device=windows.device).reshape(1, 1, 3, 3)
    v_prev = torch.zeros([S, 1, w, w], dtype=windows.dtype, device=windows.device)
    v_prev[:, 0, r, r] = 1.0  # v_0 = e_c
    v = 0.5 * (hop * Fn.conv2d(v_prev, cross, padding=1) + diag * v_prev)  # v_1 = h~ e_c
    mu1 = v[:, 0, r, r]
    dots = []  # <v_k|v_k>, <v_k+1|v_k> for k = 1, 2, ...
    for k in range(1, (M + 1) // 2):
        v_next = hop * Fn.conv2d(v, cross, padding=1) + diag * v - v_prev
        dots.append((v * v).sum([1, 2, 3]))
        dots.append((v_next * v).sum([1, 2, 3]))
        v_prev, v = v, v_next
    moments = torch.ones([S, M], dtype=windows.dtype, device=windows.device)
    if M > 1:
        moments[:, 1] = mu1
    if len(dots) > 0:
        d = torch.stack(dots, 1)[:, :M - 2]  # mu_2, mu_3, ... = 2 <.|.> - mu_0 or mu_1
        base = torch.stack([torch.ones_like(mu1), mu1], 1).repeat(1, (M - 1) // 2 + 1)[:, :M - 2]
        moments[:, 2:] = 2 * d - base
    return (coef * moments).sum(1)


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
    M = n_moments or default_moments(windows, p)
    return window_site_density(windows, p.t, p.g, p.kT, p.mu, M)


class KPMForces:
    """Force callable for the integrator: Q -> g (n_KPM - 1/2) + elastic forces."""

    def __init__(self, p: HolsteinParams, n_moments: Optional[int] = None, colors: int = 8, seed: int = 0):
        self.p, self.n_moments, self.colors = p, n_moments, colors
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, Q: Tensor) -> Tensor:
        from .params import elastic_force

        n = kpm_density(Q, self.p, self.n_moments, self.colors, self.gen)
        return self.p.g * (n - 0.5) + elastic_force(Q, self.p)
