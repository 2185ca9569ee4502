"""The one implementation of forces, virial and uncertainty behind every atomistic model.

Subclasses only say how per-atom energies of each committee member follow from edge vectors
(``member_atom_energies``); ``compute`` (the contract method) turns them into energy, forces, virial
and committee statistics with a single backward pass for all members.
"""
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn


class AtomisticPotential(nn.Module):
    """Base class of exportable atomistic models (see :mod:`mlpot_plugins.contract`)."""

    def __init__(self, species: List[str], cutoff: float, ensemble_size: int = 1,
                 uncertainty_scale: float = 1.0):
        super().__init__()
        self.species: List[str] = list(species)
        self.n_species: int = len(species)
        self.cutoff: float = float(cutoff)
        self.ensemble_size: int = int(ensemble_size)
        self.uncertainty_scale: float = float(uncertainty_scale)
        # True when member_atom_energies also accepts a single copy of the edge vectors ([1, E, 3])
        # and still returns all K members' energies (see evaluate)
        self.members_share_geometry: bool = False

    def interaction_range(self) -> float:
        """How far a ghost region must reach (n_layers * cutoff for message passing)."""
        return self.cutoff

    def member_atom_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        """[K, E, 3] edge vectors (one copy per member; one copy in all if ``members_share_geometry``)
        -> [K, N] per-atom energies."""
        raise NotImplementedError

    @torch.jit.export
    def force_uncertainty(self, member_forces: Tensor) -> Tensor:
        """[K, n, 3] -> [n]: calibrated per-atom force std, sqrt(mean_k |F_k - <F>|^2)."""
        dev = member_forces - member_forces.mean(0, keepdim=True)
        return (dev * dev).sum(-1).mean(0).sqrt() * self.uncertainty_scale

    @torch.jit.export
    def compute(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor,
                n_local: int, need_virial: bool, need_uncertainty: bool) -> Dict[str, Tensor]:
        return self.evaluate(positions, types, edge_index, shifts, n_local, need_virial,
                             need_uncertainty, False)

    def copies_for(self, need_uncertainty: bool, create_graph: bool) -> int:
        """How many copies of the geometry a call needs: one per member (a single backward pass then yields
        every member's dE_k/dr), or one in all for models whose members share their geometry-dependent trunk
        (shallow ensembles, pair potentials) when only the mean is needed: then the backward pass gives the
        mean gradient directly, at one member's cost."""
        if need_uncertainty or create_graph or not self.members_share_geometry:
            return self.ensemble_size
        return 1

    def evaluate(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor,
                 n_local: int, need_virial: bool, need_uncertainty: bool,
                 create_graph: bool) -> Dict[str, Tensor]:
        """``compute`` with ``create_graph`` for training on forces (not exported)."""
        k = self.ensemble_size
        src, dst = edge_index[0], edge_index[1]
        r = positions.index_select(0, dst) - positions.index_select(0, src) + shifts
        if not create_graph:
            r = r.detach()
        copies = self.copies_for(need_uncertainty, create_graph)
        rk = r.unsqueeze(0).expand(copies, -1, -1).clone()
        if not rk.requires_grad:
            rk.requires_grad_(True)
        atom_e = self.member_atom_energies(rk, edge_index, types)
        local_e = atom_e[:, :n_local]
        member_energy = local_e.sum(1)
        target = member_energy.sum() if copies == k else member_energy.mean()
        grads: List[Optional[Tensor]] = torch.autograd.grad(
            [target], [rk], create_graph=create_graph, allow_unused=True)
        g = grads[0]
        if g is None:
            g = torch.zeros_like(rk)
        return self.edge_outputs(r, g, edge_index, positions.shape[0], local_e, need_virial, need_uncertainty,
                                 create_graph)

    def edge_outputs(self, r: Tensor, g: Tensor, edge_index: Tensor, n: int, local_e: Tensor,
                     need_virial: bool, need_uncertainty: bool, create_graph: bool) -> Dict[str, Tensor]:
        """The contract's outputs from the edge vectors ``r`` [E, 3], the gradient ``g`` [copies, E, 3] of the
        energy (the members' sum, or their mean with one copy) with respect to them, and the members' energies
        of the ``n_local`` atoms that count, ``local_e`` [K, n_local]; ``n`` rows in all."""
        k = self.ensemble_size
        copies = g.shape[0]
        src, dst = edge_index[0], edge_index[1]
        member_energy = local_e.sum(1)
        # r_e = x_dst - x_src  =>  F_src += dE/dr_e,  F_dst -= dE/dr_e
        member_forces = torch.zeros((copies, n, 3), dtype=r.dtype, device=r.device)
        member_forces = member_forces.index_add(1, src, g).index_add(1, dst, -g)
        out: Dict[str, Tensor] = {
            "energy": member_energy.mean(),
            "energies": local_e.mean(0),
            "forces": member_forces.mean(0),
        }
        if need_virial:
            gmean = g.mean(0)
            edge_w = -r.unsqueeze(2) * gmean.unsqueeze(1)  # [E, 3, 3]
            out["virial"] = edge_w.sum(0)
            half = 0.5 * edge_w
            atom_w = torch.zeros((n, 3, 3), dtype=r.dtype, device=r.device)
            out["atom_virial"] = atom_w.index_add(0, src, half).index_add(0, dst, half)
        if not create_graph:
            member_energy = member_energy.detach()
            local_e = local_e.detach()
            out["energy"] = member_energy.mean()
            out["energies"] = local_e.mean(0)
        if need_uncertainty and k > 1 and copies == k:
            out["member_energy"] = member_energy
            out["member_forces"] = member_forces
            out["forces_std"] = self.force_uncertainty(member_forces)
            out["energies_std"] = local_e.std(0, unbiased=False) * self.uncertainty_scale
            out["energy_std"] = member_energy.std(unbiased=False) * self.uncertainty_scale
            if need_virial:
                # W_k = -sum_e r_e (x) dE_k/dr_e, per member (g holds every member's gradient here)
                member_virial = -torch.matmul(r.t(), g)
                out["member_virial"] = member_virial if create_graph else member_virial.detach()
        return out
