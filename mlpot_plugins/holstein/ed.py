"""Exact diagonalisation of the single-particle Holstein Hamiltonian (batched ``torch.linalg.eigh``).

h(Q) = -t T - g diag(Q) (T: periodic nearest-neighbour adjacency). Grand-canonical Fermi-Dirac occupations
at (kT, mu); mu = 0 is half filling in the particle-hole-symmetric sense: with S = diag((-1)^(x+y)),
S h(Q) S = -h(-Q), so spec h(-Q) = -spec h(Q) and n_i(-Q) = 1 - n_i(Q) exactly; the mean filling over
the (Q, -Q)-symmetric ensemble is exactly 1/2 and a perfect checkerboard is exactly half filled. A single
random configuration deviates by O(1/sqrt(N)) (measured in the tests/docs).

Electronic grand potential (the constant of -g sum (n - 1/2) Q included):
Omega(Q) = -kT sum_n ln(1 + exp(-(eps_n - mu)/kT)) + mu N_sites... (mu N omitted) + (g/2) sum_i Q_i,
so by Hellmann-Feynman dOmega/dQ_i = -g (n_i - 1/2) and F_i = g (n_i - 1/2) - k0 Q_i - kappa sum_nn Q_j.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from .params import HolsteinParams, check_field, elastic_energy, elastic_force


def hopping_matrix(L: int, t: float = 1.0, dtype=torch.float64, device=None) -> Tensor:
    """-t T for the periodic L x L lattice, site index i = x * L + y."""
    idx = torch.arange(L * L, device=device).reshape(L, L)
    H = torch.zeros(L * L, L * L, dtype=dtype, device=device)
    for shift, dim in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        H[idx.flatten(), torch.roll(idx, shift, dim).flatten()] -= t
    return H


def hamiltonian(Q: Tensor, p: HolsteinParams) -> Tensor:
    """Batched single-particle Hamiltonian [..., N, N] for fields Q [..., L, L]."""
    L = check_field(Q)
    H = hopping_matrix(L, p.t, Q.dtype, Q.device)
    return H - p.g * torch.diag_embed(Q.flatten(-2))


def fermi(eps: Tensor, kT: float, mu: float = 0.0) -> Tensor:
    if kT == 0:
        return (eps < mu).to(eps.dtype) + 0.5 * (eps == mu).to(eps.dtype)
    return torch.sigmoid(-(eps - mu) / kT)


def grand_potential_of_levels(eps: Tensor, kT: float, mu: float = 0.0) -> Tensor:
    x = eps - mu
    if kT == 0:
        return torch.clamp(x, max=0).sum(-1)
    return (-kT * torch.nn.functional.softplus(-x / kT)).sum(-1)


def ed_solve(Q: Tensor, p: HolsteinParams) -> Dict[str, Tensor]:
    """Densities, forces and free energies of fields Q [..., L, L] (float64 recommended).

    Returns ``density`` [..., L, L], ``forces`` [..., L, L] (total on-site force), ``electronic_forces``
    g (n_i - 1/2), ``free_energy`` [...] (Omega_el + elastic energy), ``levels`` [..., N].
    """
    check_field(Q)
    eps, U = torch.linalg.eigh(hamiltonian(Q, p))
    f = fermi(eps, p.kT, p.mu)
    n = ((U * U) @ f.unsqueeze(-1)).squeeze(-1).reshape(Q.shape)
    fel = p.g * (n - 0.5)
    omega = grand_potential_of_levels(eps, p.kT, p.mu) + 0.5 * p.g * Q.sum((-1, -2))
    return {"density": n, "electronic_forces": fel, "forces": fel + elastic_force(Q, p),
            "free_energy": omega + elastic_energy(Q, p), "levels": eps}


class EDForces:
    """Force callable for the integrator: Q -> total forces via exact diagonalisation."""

    def __init__(self, p: HolsteinParams):
        self.p = p

    def __call__(self, Q: Tensor) -> Tensor:
        return ed_solve(Q, self.p)["forces"]
