"""D4 irreducible-representation features for the Holstein force field (the paper's route), beside the
group-convolution model of ``model.py``; same interface, same training and export.

The 45-site patch around site i is rotated into D4-symmetry-adapted coordinates y = U P_i (U fixed,
orthogonal, built from the projectors P_rho = d_rho/8 sum_g chi_rho(g) pi(g)): the copies of A1, A2, B1, B2
(one number each) and of E (a pair (v, w) with w = pi(r90) v). Invariant features:
* odd, linear: the A1 coordinates;
* even, quadratic (power spectrum): c_a c_b within each 1-d irrep, v_a v_b + w_a w_b within E;
* odd, cubic (bispectrum-like): orbit sums of Q_a Q_b Q_c over site triples of the inner patch
  (|r|^2 <= 2), which carry the relative signs the power spectrum loses;
* the same sharp on-site features as the convolution model (site level -g Q_i shifted by its neighbours).
Output f_el = s [phi(x_odd, x_even) - phi(-x_odd, x_even)] with phi a biased SiLU MLP per member: exactly odd
in Q, exactly D4-invariant (features are invariant), translation-equivariant (the same map at every site).
Features are shared by the committee members; only the MLPs (and the sharp features) differ.
"""
from __future__ import annotations

import itertools
import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from .model import LatticeForceFieldBase, interaction_halo, patch_offsets, site_level_terms

# D4 on lattice offsets: 4 rotations, then the 4 reflections (x, y) -> (x, -y) composed with them
D4 = [lambda x, y: (x, y), lambda x, y: (-y, x), lambda x, y: (-x, -y), lambda x, y: (y, -x),
      lambda x, y: (x, -y), lambda x, y: (y, x), lambda x, y: (-x, y), lambda x, y: (-y, -x)]
CHARACTERS = {  # e, r, r2, r3, sx, sd, sy, sd'
    "A1": [1, 1, 1, 1, 1, 1, 1, 1], "A2": [1, 1, 1, 1, -1, -1, -1, -1],
    "B1": [1, -1, 1, -1, 1, -1, 1, -1], "B2": [1, -1, 1, -1, -1, 1, -1, 1],
    "E": [2, 0, -2, 0, 0, 0, 0, 0]}


def _perm(offsets, g) -> Tensor:
    index = {o: k for k, o in enumerate(offsets)}
    M = torch.zeros(len(offsets), len(offsets), dtype=torch.float64)
    for k, (x, y) in enumerate(offsets):
        M[index[g(x, y)], k] = 1.0
    return M


def _range_basis(P: Tensor) -> Tensor:
    """Orthonormal rows spanning the range of a projector."""
    vals, vecs = torch.linalg.eigh(P)
    return vecs[:, vals > 0.5].T


def irreps_basis(offsets) -> Dict[str, Tensor]:
    """Rows of U by irrep: 'A1', 'A2', 'B1', 'B2' ([m, n]) and 'Ev', 'Ew' ([m, n], partners w = r90 v)."""
    pis = [_perm(offsets, g) for g in D4]
    out = {}
    for name, chi in CHARACTERS.items():
        P = sum(c * p for c, p in zip(chi, pis)) * (chi[0] / 8.0)
        if name != "E":
            out[name] = _range_basis(P)
            continue
        V = _range_basis(P @ (torch.eye(len(offsets), dtype=torch.float64) + pis[4]) / 2)  # sx-even part
        out["Ev"], out["Ew"] = V, V @ pis[1].T
    return out


def cubic_orbits(offsets) -> Tuple[Tensor, Tensor]:
    """Site triples (multisets) of ``offsets`` grouped into D4 orbits: (triples [T, 3], orbit id [T])."""
    index = {o: k for k, o in enumerate(offsets)}
    seen: Dict[tuple, int] = {}
    n_orbits = 0
    for tri in itertools.combinations_with_replacement(range(len(offsets)), 3):
        if tri in seen:
            continue
        for g in D4:
            seen[tuple(sorted(index[g(*offsets[a])] for a in tri))] = n_orbits
        n_orbits += 1
    triples = sorted(seen)
    ids = [seen[t] for t in triples]
    return torch.tensor(triples), torch.tensor(ids)


class D4IrrepsForceField(LatticeForceFieldBase):
    def __init__(self, holstein: Dict[str, float], radius2: int = 13, hidden: int = 32, ensemble_size: int = 4,
                 seed: int = 0, n_sharp: int = 6, cubic_radius2: int = 2, dtype: torch.dtype = torch.float32):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        K, H = int(ensemble_size), int(hidden)
        self.kind = "lattice"
        self.species: List[str] = ["Q"]
        self.R: int = int(math.isqrt(radius2))
        self.radius2: int = int(radius2)
        self.cutoff: float = math.sqrt(radius2)
        offsets = patch_offsets(radius2)
        self.n_patch: int = len(offsets)
        self.ensemble_size: int = K
        self.uncertainty_scale: float = 1.0
        self.energy_based: bool = False
        self.halo: int = interaction_halo(self.R, False)  # metadata interaction_range
        self.g: float = float(holstein["g"])
        self.k0: float = float(holstein["k0"])
        self.kappa: float = float(holstein["kappa"])
        w = 2 * self.R + 1
        self.register_buffer("patch_index", torch.tensor([(dx + self.R) * w + dy + self.R for dx, dy in offsets]))
        basis = irreps_basis(offsets)
        self.n_a1: int = basis["A1"].shape[0]
        rows = [basis[name] for name in ("A1", "A2", "B1", "B2")]
        self.one_d: List[int] = [int(basis[name].shape[0]) for name in ("A2", "B1", "B2")]
        self.n_e: int = basis["Ev"].shape[0]
        rows += [basis["Ev"], basis["Ew"]]
        self.register_buffer("U", torch.cat(rows).to(dtype))  # [45, 45], orthogonal
        pairs_i, pairs_j, start = [], [], 0
        for m in [self.n_a1] + self.one_d:  # power spectrum within A1 and within each 1-d irrep
            iu = torch.triu_indices(m, m)
            pairs_i.append(iu[0] + start)
            pairs_j.append(iu[1] + start)
            start += m
        self.n_one: int = start
        self.register_buffer("pi", torch.cat(pairs_i))
        self.register_buffer("pj", torch.cat(pairs_j))
        iu = torch.triu_indices(self.n_e, self.n_e)
        self.register_buffer("ei", iu[0])
        self.register_buffer("ej", iu[1])
        inner = [k for k, (dx, dy) in enumerate(offsets) if dx * dx + dy * dy <= cubic_radius2]
        triples, ids = cubic_orbits([offsets[k] for k in inner])
        inner_t = torch.tensor(inner)
        self.register_buffer("tri", inner_t[triples])  # [T, 3] indices into the patch
        n_orbits = int(ids.max()) + 1
        S = torch.zeros(n_orbits, len(ids))
        S[ids, torch.arange(len(ids))] = 1.0
        self.register_buffer("orbit_sum", S.to(dtype))
        self.n_odd: int = self.n_a1 + n_orbits
        self.n_even: int = len(self.pi) + len(self.ei)
        self.register_buffer("odd_scale", torch.ones(self.n_odd, 1, dtype=dtype))
        self.register_buffer("even_scale", torch.ones(self.n_even, 1, dtype=dtype))
        self.register_buffer("even_mean", torch.zeros(self.n_even, 1, dtype=dtype))
        # sharp on-site features, as in the convolution model (odd, invariant)
        self.n_sharp: int = int(n_sharp)
        betas = torch.logspace(-0.5, 2, n_sharp) if n_sharp > 1 else torch.ones(n_sharp)
        self.log_beta = nn.Parameter(betas.log().repeat(K, 1).reshape(K, n_sharp, 1).to(dtype))
        self.shift = nn.Parameter(torch.zeros(K, n_sharp, self.n_a1, dtype=dtype))
        self.t_over_g2: float = (float(holstein["t"]) / self.g) ** 2 if self.g != 0 else 0.0
        self.level_coef = nn.Parameter(torch.ones(K, n_sharp, 1, dtype=dtype))
        F = self.n_odd + self.n_sharp + self.n_even

        def rnd(*shape, fan_in):
            return nn.Parameter((torch.randn(*shape, generator=gen) / math.sqrt(fan_in)).to(dtype))

        self.w1 = rnd(K, H, F, fan_in=F)
        self.b1 = nn.Parameter(torch.zeros(K, H, 1, dtype=dtype))
        self.w2 = rnd(K, H, H, fan_in=H)
        self.b2 = nn.Parameter(torch.zeros(K, H, 1, dtype=dtype))
        self.w3 = rnd(K, 1, H, fan_in=H)
        self.out_scale: float = self.g / 2.0
        self.block_sites: int = 4096

    def raw_features(self, x: Tensor, Lx: int, Ly: int) -> Tuple[Tensor, Tensor, Tensor]:
        """Padded [B, 1, Lx + 2R, Ly + 2R] -> (odd [n_odd, rows], even [n_even, rows], centre level terms)."""
        B = x.shape[0]
        n = Lx * Ly
        w = 2 * self.R + 1
        patches = Fn.unfold(x, [w, w]).reshape(B, w * w, n).index_select(1, self.patch_index)
        P = patches.permute(1, 0, 2).reshape(self.n_patch, B * n)  # [45, rows]
        y = self.U @ P
        a1 = y[:self.n_a1]
        one = y[:self.n_one]
        ev = y[self.n_one:self.n_one + self.n_e]
        ew = y[self.n_one + self.n_e:]
        even = torch.cat([one[self.pi] * one[self.pj], ev[self.ei] * ev[self.ej] + ew[self.ei] * ew[self.ej]])
        cubic = self.orbit_sum @ (P[self.tri[:, 0]] * P[self.tri[:, 1]] * P[self.tri[:, 2]])
        odd = torch.cat([a1, cubic])
        c, shift2 = site_level_terms(x, self.R, Lx, Ly)
        level = torch.stack([c.reshape(B * n), (shift2 * self.t_over_g2).reshape(B * n)])
        return odd, even, level

    def fit_scales(self, Q: Tensor) -> None:
        """Feature standardisation from training fields Q [B, L, L] (odd ones scaled only, to stay odd)."""
        with torch.no_grad():
            x = Fn.pad(Q.unsqueeze(1).to(self.U.dtype), [self.R] * 4, mode="circular")
            odd, even, _ = self.raw_features(x, Q.shape[-2], Q.shape[-1])
            self.odd_scale.copy_(odd.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-6))
            self.even_mean.copy_(even.mean(1, keepdim=True))
            self.even_scale.copy_(even.std(1, keepdim=True).clamp_min(1e-6))

    def outputs_padded(self, x: Tensor, Lx: int, Ly: int) -> Tensor:
        K = self.ensemble_size
        odd, even, level = self.raw_features(x, Lx, Ly)
        odd = odd / self.odd_scale
        even = (even - self.even_mean) / self.even_scale
        arg = level[0:1] - self.level_coef * level[1:2] + torch.matmul(self.shift, odd[:self.n_a1])
        sharp = torch.tanh(torch.exp(self.log_beta) * arg)  # [K, n_sharp, rows]
        o = torch.cat([odd.expand(K, odd.shape[0], odd.shape[1]), sharp], 1)
        e = even.expand(K, even.shape[0], even.shape[1])
        y = self.biased_mlp(torch.cat([o, e], 1)) - self.biased_mlp(torch.cat([-o, e], 1))
        return (y * self.out_scale).reshape(K, x.shape[0], Lx, Ly)

    def member_forces(self, Q: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        return self.member_outputs(Q.unsqueeze(1)), torch.zeros(0, dtype=Q.dtype, device=Q.device)
