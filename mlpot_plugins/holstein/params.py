"""Holstein-model parameters and the square-lattice helpers every solver shares.

H = -t sum_<ij> (c+_i c_j + h.c.) - g sum_i (n_i - 1/2) Q_i + sum_i [P_i^2/2m + k0 Q_i^2/2]
    + kappa sum_<ij> Q_i Q_j            (spinless, half filling, periodic L x L)

Lattice dynamics (Langevin): m dQ/dt = P, dP/dt = F - (gamma/m) P + sqrt(2 gamma kT) eta(t), i.e.
m Q'' = F - gamma Q' + noise: ``gamma`` is a friction coefficient, the velocity relaxation rate is gamma/m.
Energies are in units of t, lengths (Q) in the lattice model's displacement unit, time in 1/t.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

import torch
from torch import Tensor


@dataclass
class HolsteinParams:
    t: float = 1.0        # hopping
    g: float = 3.5        # electron-lattice coupling
    k0: float = 1.0       # on-site spring constant
    kappa: float = 0.18   # nearest-neighbour elastic coupling
    m: float = 5.0        # lattice mass
    gamma: float = 0.2    # Langevin friction (force per velocity)
    dt: float = 0.05      # time step (1/t)
    kT: float = 0.1       # temperature of electrons and thermostat
    mu: float = 0.0       # chemical potential; 0 is half filling on average (particle-hole symmetry)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or v != v:
                raise ValueError(f"Holstein parameter {f.name}={v!r} must be a finite number")
            setattr(self, f.name, float(v))
        if self.kT < 0:
            raise ValueError(f"kT={self.kT} must be >= 0 (use 0 for the ground state)")
        if self.m <= 0 or self.gamma < 0 or self.dt <= 0:
            raise ValueError(f"need m > 0, gamma >= 0, dt > 0 (got m={self.m}, gamma={self.gamma}, "
                             f"dt={self.dt})")
        if self.k0 - 4 * abs(self.kappa) <= 0:
            raise ValueError(f"k0={self.k0} must exceed 4|kappa|={4 * abs(self.kappa)} or the lattice is "
                             "elastically unstable; lower kappa or raise k0")

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "HolsteinParams":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown Holstein parameter(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def cdw_amplitude(self, L: int = 64) -> float:
        """Checkerboard amplitude A at T = 0: A = g dn(gA) / (k0 - 4 kappa), solved by iteration with the
        exact band structure of the staggered potential on an L x L lattice."""
        k = 2 * torch.pi * torch.arange(L, dtype=torch.float64) / L
        eps = -2 * self.t * (torch.cos(k)[:, None] + torch.cos(k)[None, :])
        A = self.g / 2 / (self.k0 - 4 * self.kappa)
        for _ in range(500):
            gap = self.g * A
            dn = 0.5 * (gap / torch.sqrt(eps ** 2 + gap ** 2)).mean().item()
            A_new = self.g * dn / (self.k0 - 4 * self.kappa)
            if abs(A_new - A) < 1e-14:
                break
            A = A_new
        return A


def check_lattice_size(L, min_L: int = 4, even: bool = True, why: str = "") -> int:
    """The one lattice-shape check of every engine (ED, KPM, ML, the runner, data generation): an even
    L >= min_L; ``why`` explains a larger ``min_L`` (e.g. an ML model's patch)."""
    if isinstance(L, bool) or not isinstance(L, int) or L < min_L or (even and L % 2):
        raise ValueError(f"lattice size L={L} is not supported: need an even L >= {min_L} (even: the periodic "
                         "lattice must be bipartite for the checkerboard CDW and particle-hole symmetry"
                         + (f"; {why}" if why else "") + ")")
    return int(L)


def check_field(Q: Tensor, *, name: str = "Q", min_L: int = 4, even: bool = True) -> int:
    """Validate a lattice field [..., L, L]; return L."""
    if not isinstance(Q, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [..., L, L], got {type(Q).__name__}")
    if Q.dim() < 2 or Q.shape[-1] != Q.shape[-2]:
        raise ValueError(f"{name} must have shape [..., L, L] (square lattice), got {tuple(Q.shape)}")
    L = check_lattice_size(Q.shape[-1], min_L, even)
    if not Q.is_floating_point() or not torch.isfinite(Q).all():
        raise ValueError(f"{name} must be a finite floating-point field (got dtype {Q.dtype} or NaN/inf)")
    return L


def nn_sum(v: Tensor, periodic: bool = True) -> Tensor:
    """Sum of the four nearest neighbours on the last two (lattice) axes; open boundaries pad with 0."""
    if periodic:
        return (torch.roll(v, 1, -1) + torch.roll(v, -1, -1) + torch.roll(v, 1, -2) + torch.roll(v, -1, -2))
    out = torch.zeros_like(v)
    out[..., :, 1:] += v[..., :, :-1]
    out[..., :, :-1] += v[..., :, 1:]
    out[..., 1:, :] += v[..., :-1, :]
    out[..., :-1, :] += v[..., 1:, :]
    return out


def periodic_block(Q: Tensor, halo: int, x0: int = 0, x1: Optional[int] = None, y0: int = 0,
                   y1: Optional[int] = None) -> Tensor:
    """Sites [x0 - halo, x1 + halo) x [y0 - halo, y1 + halo) of the periodic lattice Q [..., L, L] as one open
    block (default: the whole lattice with a periodic halo): the input of ``compute_lattice_block``.
    TorchScript-able (the OpenMM lattice force pads with it)."""
    Lx, Ly = Q.shape[-2], Q.shape[-1]
    x1 = Lx if x1 is None else x1
    y1 = Ly if y1 is None else y1
    rows = torch.arange(x0 - halo, x1 + halo, device=Q.device) % Lx
    cols = torch.arange(y0 - halo, y1 + halo, device=Q.device) % Ly
    return Q.index_select(Q.dim() - 2, rows).index_select(Q.dim() - 1, cols)


def stagger(L: int, dtype=torch.float64, device=None) -> Tensor:
    """(-1)^(x+y) on an L x L lattice."""
    x = torch.arange(L, device=device)
    return (1 - 2 * ((x[:, None] + x[None, :]) % 2)).to(dtype)


def elastic_energy(Q: Tensor, p: HolsteinParams) -> Tensor:
    """sum_i k0 Q_i^2/2 + kappa sum_<ij> Q_i Q_j (each bond once) -> [...]."""
    return (0.5 * p.k0 * Q * Q + 0.5 * p.kappa * Q * nn_sum(Q)).sum((-1, -2))


def elastic_force(Q: Tensor, p: HolsteinParams) -> Tensor:
    """-d(elastic energy)/dQ_i = -k0 Q_i - kappa sum_nn Q_j."""
    return -p.k0 * Q - p.kappa * nn_sum(Q)


def hot_random_state(L: int, batch: tuple = (), kT_hot: float = 5.0, p: HolsteinParams | None = None,
                     generator: torch.Generator | None = None, dtype=torch.float64):
    """The quench's initial state: i.i.d. Q_i ~ N(0, kT_hot/k0), P_i ~ N(0, m kT_hot) (a hot harmonic
    lattice; with the defaults std(Q) = sqrt(5) ~ 2.24, a third of the CDW amplitude ~ 6.2)."""
    p = p or HolsteinParams()
    shape = tuple(batch) + (L, L)
    Q = torch.randn(shape, generator=generator, dtype=dtype) * (kT_hot / p.k0) ** 0.5
    P = torch.randn(shape, generator=generator, dtype=dtype) * (p.m * kT_hot) ** 0.5
    return Q, P
