"""Reference analytic model: a multi-species Morse pair potential with a C2-smooth cutoff.

Engines are tested exactly against it. Its committee variant holds K parameter sets evaluated in one
batched pass, so every uncertainty path can be checked against an analytic model.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from .base import AtomisticPotential

# Girifalco & Weizer (1959) Morse parameters: D [eV], alpha [1/A], r0 [A]
MORSE_PARAMETERS: Dict[str, Tuple[float, float, float]] = {
    "Cu": (0.3429, 1.3588, 2.866),
    "Ag": (0.3323, 1.3690, 3.115),
    "Au": (0.4826, 1.5830, 3.006),
    "Ni": (0.4205, 1.4199, 2.780),
    "Al": (0.2703, 1.1646, 3.253),
}


def _pair_matrix(species: Sequence[str], index: int) -> Tensor:
    vals = torch.tensor([MORSE_PARAMETERS[s][index] for s in species], dtype=torch.float64)
    if index == 0:  # well depth: geometric mean
        return torch.sqrt(vals[:, None] * vals[None, :])
    return 0.5 * (vals[:, None] + vals[None, :])  # alpha, r0: arithmetic mean


class MorsePotential(AtomisticPotential):
    """phi(r) = D [(1 - exp(-a (r - r0)))^2 - 1] (1 - (r/rc)^2)^3 for r < rc; E_i = 1/2 sum_j phi."""

    def __init__(self, species: List[str], cutoff: float = 6.0, ensemble_size: int = 1,
                 spread: float = 0.03, seed: int = 0, uncertainty_scale: float = 1.0,
                 dtype: torch.dtype = torch.float64):
        super().__init__(species, cutoff, ensemble_size, uncertainty_scale)
        unknown = [s for s in species if s not in MORSE_PARAMETERS]
        if unknown:
            raise ValueError(f"no Morse parameters for {unknown}; known: {sorted(MORSE_PARAMETERS)}")
        s = len(species)
        base = torch.stack([_pair_matrix(species, i) for i in range(3)])  # [3, S, S]
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((ensemble_size, 3, s, s), generator=gen, dtype=torch.float64)
        noise = 0.5 * (noise + noise.transpose(-1, -2))
        if ensemble_size > 1:
            noise = noise - noise.mean(0, keepdim=True)  # committee centred on the base parameters
        else:
            noise.zero_()
        params = base.unsqueeze(0) * (1.0 + spread * noise)  # [K, 3, S, S]
        self.register_buffer("D", params[:, 0].reshape(ensemble_size, s * s).to(dtype))
        self.register_buffer("alpha", params[:, 1].reshape(ensemble_size, s * s).to(dtype))
        self.register_buffer("r0", params[:, 2].reshape(ensemble_size, s * s).to(dtype))
        self.members_share_geometry = True  # [K, E] parameters broadcast against [1, E] distances

    def member_atom_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        pair = types.index_select(0, edge_index[0]) * self.n_species + types.index_select(0, edge_index[1])
        d = self.D.index_select(1, pair)
        a = self.alpha.index_select(1, pair)
        r0 = self.r0.index_select(1, pair)
        r = torch.linalg.norm(edge_vectors, dim=-1)  # [K, E] or [1, E]
        x = (r / self.cutoff).clamp(max=1.0)
        envelope = (1.0 - x * x) ** 3
        ex = torch.exp(-a * (r - r0))
        phi = d * ((1.0 - ex) ** 2 - 1.0) * envelope
        out = torch.zeros((self.ensemble_size, types.shape[0]), dtype=edge_vectors.dtype,
                          device=edge_vectors.device)
        return out.index_add(1, edge_index[0], 0.5 * phi)
