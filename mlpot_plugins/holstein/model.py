"""D4-equivariant, Q -> -Q odd ML force field for the Holstein lattice (exported kind ``lattice``).

Each site i sees the patch P_i = {Q_(i+r) : |r|^2 <= radius2} (45 sites for radius2 = 13). For each of
the 8 elements g of D4 a *lifting* convolution with the g-transformed kernels gives C features
h_g(i) = W (g . P_i); the orbit pool z(i) = mean_g tanh(h_g(i)) is exactly D4-invariant (the 8 kernels
form one D4 orbit, so a lattice symmetry only permutes the h_g) and exactly odd (no biases, odd tanh).
Translations are exact because the same convolution runs at every site (circular padding = periodic).

* direct model: electronic force f_el(i) = s * w3 . tanh(W2 tanh(W1 z(i))), no biases -> odd in Q.
* energy model: eps(i) = phi(z) + phi(-z) (phi: biased SiLU MLP) is even in Q, E_el = sum_i eps(i)
  and f_el = -dE_el/dQ (conservative, odd).

Total force F = f_el + (-k0 Q_i - kappa sum_nn Q_j): the elastic part is known exactly and added
analytically, the network learns only g(n_i - 1/2). A committee of K members is evaluated in one
batched pass (shared periodic patches via unfold, batched matmuls); forces_std = std over members * uncertainty_scale.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn


def patch_offsets(radius2: int) -> List[Tuple[int, int]]:
    R = int(math.isqrt(radius2))
    return [(dx, dy) for dx in range(-R, R + 1) for dy in range(-R, R + 1) if dx * dx + dy * dy <= radius2]


def site_level_terms(x: Tensor, R: int, Lx: int, Ly: int) -> Tuple[Tensor, Tensor]:
    """Padded [B, Kin, Lx + 2R, Ly + 2R] -> (Q_i, sum_nn d/(d^2 + 0.09)) with d = Q_j - Q_i, both [B, Kin, Lx, Ly]:
    the centre value and the regularised second-order level shift from hopping to the 4 neighbours
    (times (t/g)^2 it is a shift in units of Q). Both are odd in Q and D4-invariant."""
    c = x[:, :, R:R + Lx, R:R + Ly]
    shift2 = torch.zeros_like(c)
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        d = x[:, :, R + dx:R + dx + Lx, R + dy:R + dy + Ly] - c
        shift2 = shift2 + d / (d * d + 0.09)
    return c, shift2


def interaction_halo(R: int, energy_based: bool) -> int:
    """The halo (in sites, per side) a block needs so its interior forces equal the periodic grid's: the
    patch reaches R = floor(sqrt(radius2)) sites along a lattice axis ((R, 0) is in the patch); the level-shift
    term and the elastic force reach 1 <= R. An energy model's F_i = -dE/dQ_i collects eps_j of every j whose
    patch holds i (up to R away), and eps_j reads its own patch: 2R."""
    reach = max(R, 1)
    return 2 * reach if energy_based else reach


class LatticeForceFieldBase(nn.Module):
    """What every Holstein lattice model shares: exact elastic part, row-blocked evaluation of
    ``outputs_padded`` (defined by the architecture) and the exported ``compute_lattice`` and
    ``compute_lattice_block`` (domain-decomposed blocks, contract Lattice section)."""

    def member_outputs(self, Qk: Tensor) -> Tensor:
        """[B, Kin, L, L] -> [K, B, L, L]: electronic forces (direct) or site energies (energy model)."""
        L = Qk.shape[-1]
        return self.outputs_blocked(Fn.pad(Qk, [self.R, self.R, self.R, self.R], mode="circular"), L, L)

    def outputs_blocked(self, x: Tensor, Lx: int, Ly: int) -> Tensor:
        """``outputs_padded`` of a padded [B, Kin, Lx + 2R, Ly + 2R] field -> [K, B, Lx, Ly]. Large fields go
        in row blocks of ~block_sites sites so the intermediates stay in cache."""
        rows = max(1, self.block_sites // (Ly * x.shape[0]))
        if rows >= Lx:
            return self.outputs_padded(x, Lx, Ly)
        outs: List[Tensor] = []
        for r0 in range(0, Lx, rows):
            nr = min(rows, Lx - r0)
            outs.append(self.outputs_padded(x[:, :, r0:r0 + nr + 2 * self.R, :], nr, Ly))
        return torch.cat(outs, 2)

    def biased_mlp(self, z: Tensor) -> Tensor:
        """Per-member SiLU MLP with biases, [K, F, rows] -> [K, 1, rows]."""
        y = Fn.silu(torch.baddbmm(self.b1, self.w1, z))
        y = Fn.silu(torch.baddbmm(self.b2, self.w2, y))
        return torch.bmm(self.w3, y)

    def elastic(self, Q: Tensor) -> Tuple[Tensor, Tensor]:
        nn_sum = (torch.roll(Q, 1, -1) + torch.roll(Q, -1, -1) + torch.roll(Q, 1, -2) + torch.roll(Q, -1, -2))
        energy = (0.5 * self.k0 * Q * Q + 0.5 * self.kappa * Q * nn_sum).sum([-1, -2])
        return energy, -self.k0 * Q - self.kappa * nn_sum

    @torch.jit.export
    def compute_lattice(self, Q: Tensor, need_uncertainty: bool) -> Dict[str, Tensor]:
        if Q.dim() < 2 or Q.shape[-1] != Q.shape[-2]:
            raise ValueError("Q must have shape [..., L, L] (square lattice)")
        L = Q.shape[-1]
        if L < 2 * self.R + 1:
            raise ValueError("lattice too small for the model's patch: need L >= 2 * floor(sqrt(radius2)) + 1")
        lead = Q.shape[:-2]
        Qb = Q.reshape(-1, L, L).to(self.w1.dtype)
        if self.energy_based:
            f_el, e_el = self.member_forces(Qb, False)
        else:
            with torch.no_grad():
                f_el, e_el = self.member_forces(Qb, False)
        e_elastic, f_elastic = self.elastic(Qb)
        out: Dict[str, Tensor] = {"forces": (f_el.mean(0) + f_elastic).reshape(Q.shape)}
        if self.energy_based:
            out["energy"] = (e_el.mean(0) + e_elastic).reshape(lead)
        if need_uncertainty and self.ensemble_size > 1:
            out["forces_std"] = (f_el.std(0, unbiased=False) * self.uncertainty_scale).reshape(Q.shape)
        return out

    @torch.jit.export
    def compute_lattice_block(self, Q_block: Tensor, halo: int, need_uncertainty: bool) -> Dict[str, Tensor]:
        """Forces on the interior [..., nx, ny] of a rectangular block [..., nx + 2 halo, ny + 2 halo] of Q with
        open edges, for engines that split the lattice into domains: equal to ``compute_lattice`` of the whole
        periodic grid on those sites when ``halo >= self.halo`` (= metadata ``interaction_range``). With
        ``need_uncertainty`` a committee also returns ``member_forces`` [K, ..., nx, ny] and ``forces_std``; the
        energy model returns ``energy`` [...], the interior sites' share of the total energy."""
        if Q_block.dim() < 2:
            raise ValueError("Q_block must have shape [..., nx + 2 * halo, ny + 2 * halo]")
        if halo < self.halo:
            raise ValueError(f"halo {halo} is smaller than the model's interaction range: compute_lattice_block "
                             f"needs a halo of at least {self.halo} sites on every side (metadata "
                             f"interaction_range); pass a block with halo >= {self.halo}")
        nx, ny = Q_block.shape[-2] - 2 * halo, Q_block.shape[-1] - 2 * halo
        if nx < 1 or ny < 1:
            raise ValueError(f"Q_block of shape {list(Q_block.shape)} has no interior sites for halo {halo}: "
                             f"it needs more than 2 * halo = {2 * halo} sites in each of its last two dimensions")
        lead = Q_block.shape[:-2]
        h = self.halo  # crop the block to the halo the model needs
        off = halo - h
        Qb = Q_block.reshape(-1, Q_block.shape[-2], Q_block.shape[-1]).to(self.w1.dtype)
        Qb = Qb[:, off:off + nx + 2 * h, off:off + ny + 2 * h]
        if self.energy_based:
            f_el, e_el = self.member_forces_block(Qb, nx, ny)
        else:
            with torch.no_grad():
                f_el, e_el = self.member_forces_block(Qb, nx, ny)
        Qi = Qb[:, h:h + nx, h:h + ny]
        nn_sum = (Qb[:, h:h + nx, h - 1:h - 1 + ny] + Qb[:, h:h + nx, h + 1:h + 1 + ny]
                  + Qb[:, h - 1:h - 1 + nx, h:h + ny] + Qb[:, h + 1:h + 1 + nx, h:h + ny])  # as in elastic()
        f_elastic = -self.k0 * Qi - self.kappa * nn_sum
        shape = lead + [nx, ny]
        out: Dict[str, Tensor] = {"forces": (f_el.mean(0) + f_elastic).reshape(shape)}
        if self.energy_based:
            e_elastic = (0.5 * self.k0 * Qi * Qi + 0.5 * self.kappa * Qi * nn_sum).sum([-1, -2])
            out["energy"] = (e_el.mean(0).sum([-1, -2]) + e_elastic).reshape(lead)
        if need_uncertainty and self.ensemble_size > 1:
            out["member_forces"] = (f_el + f_elastic.unsqueeze(0)).reshape([self.ensemble_size] + shape)
            out["forces_std"] = (f_el.std(0, unbiased=False) * self.uncertainty_scale).reshape(shape)
        return out

    def member_forces_block(self, Qb: Tensor, nx: int, ny: int) -> Tuple[Tensor, Tensor]:
        """Qb [B, nx + 2 halo, ny + 2 halo] (halo = self.halo: R direct, 2R energy model) -> (electronic forces
        [K, B, nx, ny] of the interior, site energies [K, B, nx, ny] of the interior or empty). Direct: the outputs of the interior
        need the R-site patch. Energy model: F_i = -d/dQ_i sum_j eps_j over every j whose patch holds i (j up
        to R sites from the interior), and those eps_j need their own patches (2R in all)."""
        R = self.R
        if not self.energy_based:
            return self.outputs_blocked(Qb.unsqueeze(1), nx, ny), torch.zeros(0, dtype=Qb.dtype, device=Qb.device)
        K = self.ensemble_size
        Qk = Qb.unsqueeze(1).expand(Qb.shape[0], K, Qb.shape[1], Qb.shape[2]).clone().detach()
        Qk.requires_grad_(True)
        eps = self.outputs_blocked(Qk, nx + 2 * R, ny + 2 * R)  # [K, B, nx + 2R, ny + 2R]
        grads = torch.autograd.grad([eps.sum()], [Qk])
        g = grads[0]
        if g is None:
            g = torch.zeros_like(Qk)
        f = -g.transpose(0, 1)[:, :, 2 * R:2 * R + nx, 2 * R:2 * R + ny]
        return f, eps.detach()[:, :, R:R + nx, R:R + ny]


class D4LatticeForceField(LatticeForceFieldBase):
    def __init__(self, holstein: Dict[str, float], radius2: int = 13, channels: int = 16, hidden: int = 32,
                 ensemble_size: int = 4, energy_based: bool = False, seed: int = 0,
                 q_scale: float = 4.0, n_sharp: int = 6, dtype: torch.dtype = torch.float32):
        super().__init__()
        if radius2 < 1:
            raise ValueError(f"radius2={radius2} must be >= 1 (squared patch radius in lattice units)")
        if ensemble_size < 1 or channels < 1 or hidden < 1:
            raise ValueError("ensemble_size, channels and hidden must be >= 1")
        gen = torch.Generator().manual_seed(seed)
        K, C, H = int(ensemble_size), int(channels), int(hidden)
        self.kind = "lattice"
        self.species: List[str] = ["Q"]
        self.R: int = int(math.isqrt(radius2))
        self.radius2: int = int(radius2)
        self.cutoff: float = math.sqrt(radius2)
        self.n_patch: int = len(patch_offsets(radius2))
        self.ensemble_size: int = K
        self.channels: int = C
        self.uncertainty_scale: float = 1.0
        self.energy_based: bool = bool(energy_based)
        self.halo: int = interaction_halo(self.R, self.energy_based)  # metadata interaction_range
        self.g: float = float(holstein["g"])
        self.k0: float = float(holstein["k0"])
        self.kappa: float = float(holstein["kappa"])
        w = 2 * self.R + 1
        mask = torch.zeros(w, w)
        for dx, dy in patch_offsets(radius2):
            mask[dx + self.R, dy + self.R] = 1.0
        self.register_buffer("mask", mask.to(dtype))

        def rnd(*shape, fan_in):
            return nn.Parameter((torch.randn(*shape, generator=gen) / math.sqrt(fan_in)).to(dtype))

        self.lift = rnd(K, C, w, w, fan_in=self.n_patch * q_scale ** 2)
        # sharp on-site features s_j = tanh(beta_j (Q_i + a_j . z)): a site with small Q_i between
        # polarons is a nearly isolated level -g Q_i, shifted by its environment (a_j . z, z the pooled
        # features), so n_i jumps over dQ ~ kT/g ~ 0.03 -- far too sharp for the smooth lifting features.
        # Q_i and z are odd and invariant, so s_j keeps every symmetry.
        self.n_sharp: int = int(n_sharp)
        betas = torch.logspace(-0.5, 2, n_sharp) if n_sharp > 1 else torch.ones(n_sharp)
        self.log_beta = nn.Parameter(betas.log().repeat(K, 1).reshape(K, n_sharp, 1).to(dtype))
        self.shift = nn.Parameter(torch.zeros(K, n_sharp, C, dtype=dtype))
        # second-order level shift of site i by hopping to its neighbours, in units of Q:
        # Q_i - (t/g)^2 sum_nn 1/(Q_j - Q_i) (regularised) -- odd and D4-invariant like Q_i itself
        self.t_over_g2: float = (float(holstein["t"]) / self.g) ** 2 if self.g != 0 else 0.0
        self.level_coef = nn.Parameter(torch.ones(K, n_sharp, 1, dtype=dtype))
        C = C + n_sharp
        if energy_based:
            self.w1 = rnd(K, H, C, fan_in=C)
            self.b1 = nn.Parameter(torch.zeros(K, H, 1, dtype=dtype))
            self.w2 = rnd(K, H, H, fan_in=H)
            self.b2 = nn.Parameter(torch.zeros(K, H, 1, dtype=dtype))
            self.w3 = rnd(K, 1, H, fan_in=H)
        else:
            self.w1 = rnd(K, H, C, fan_in=C)
            self.w2 = rnd(K, H, H, fan_in=H)
            self.w3 = rnd(K, 1, H, fan_in=H)
            self.b1 = nn.Parameter(torch.zeros(0, dtype=dtype))
            self.b2 = nn.Parameter(torch.zeros(0, dtype=dtype))
        self.out_scale: float = self.g / 2.0
        self.block_sites: int = 4096  # sites per block in a call (speed only: results do not depend on it)  # |f_el| = g |n - 1/2| <= g/2

    def orbit_kernels(self) -> Tensor:
        """[K, 8 * C, w * w]: the 8 D4 images of every member's masked lifting kernel."""
        W = self.lift * self.mask
        imgs = [torch.rot90(W, r, [2, 3]) for r in range(4)] + \
               [torch.rot90(W.flip(3), r, [2, 3]) for r in range(4)]
        G = torch.stack(imgs, 1)  # [K, 8, C, w, w]
        return G.reshape(G.shape[0], 8 * self.channels, G.shape[-2] * G.shape[-1])

    def invariant_features(self, x: Tensor, Lx: int, Ly: int) -> Tensor:
        """x [B, Kin, Lx + 2R, Ly + 2R] (periodically padded; Kin = 1 shared or K per-member copies)
        -> z [K, C + n_sharp, B*Lx*Ly], D4-invariant and odd in Q."""
        B, Kin = x.shape[0], x.shape[1]
        K = self.ensemble_size
        n = Lx * Ly
        w = 2 * self.R + 1
        patches = Fn.unfold(x, [w, w]).reshape(B, Kin, w * w, n)  # the patch of every site
        h = torch.matmul(self.orbit_kernels(), patches)  # [B, K, 8C, n]
        z = torch.tanh(h).reshape(B, K, 8, self.channels, n).mean(2)  # orbit pool
        z = z.permute(1, 2, 0, 3).reshape(K, self.channels, B * n)
        if self.n_sharp == 0:
            return z
        c, shift2 = site_level_terms(x, self.R, Lx, Ly)
        centre = c.permute(1, 0, 2, 3).reshape(Kin, 1, B * n)
        level = (shift2 * self.t_over_g2).permute(1, 0, 2, 3).reshape(Kin, 1, B * n)
        arg = centre - self.level_coef * level + torch.bmm(self.shift, z)
        sharp = torch.tanh(torch.exp(self.log_beta) * arg)  # [K, n_sharp, rows]
        return torch.cat([z, sharp], 1)

    def outputs_padded(self, x: Tensor, Lx: int, Ly: int) -> Tensor:
        """Padded block [B, Kin, Lx + 2R, Ly + 2R] -> [K, B, Lx, Ly] per-site member outputs."""
        z = self.invariant_features(x, Lx, Ly)
        if self.energy_based:
            y = self.biased_mlp(z) + self.biased_mlp(-z)
        else:
            y = torch.bmm(self.w3, torch.tanh(torch.bmm(self.w2, torch.tanh(torch.bmm(self.w1, z)))))
        return (y * self.out_scale).reshape(self.ensemble_size, x.shape[0], Lx, Ly)

    def member_forces(self, Q: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        """Q [B, L, L] -> (electronic forces [K, B, L, L], electronic energies [K, B] or empty)."""
        K = self.ensemble_size
        if not self.energy_based:  # one shared input: members differ only in weights
            return self.member_outputs(Q.unsqueeze(1)), torch.zeros(0, dtype=Q.dtype, device=Q.device)
        # one input copy per member, so one backward pass gives every member's forces
        Qk = Q.unsqueeze(1).expand(Q.shape[0], K, Q.shape[1], Q.shape[2]).clone()
        if not create_graph:
            Qk = Qk.detach()
        if not Qk.requires_grad:
            Qk.requires_grad_(True)
        e = self.member_outputs(Qk).sum([-1, -2])  # [K, B]
        grads = torch.autograd.grad([e.sum()], [Qk], create_graph=create_graph)
        g = grads[0]
        if g is None:
            g = torch.zeros_like(Qk)
        return -g.transpose(0, 1), e
