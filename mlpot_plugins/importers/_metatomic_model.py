"""The contract module around a metatomic AtomisticModel (imported lazily: needs metatomic-torch)."""
from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import Labels, TensorBlock
from metatomic.torch import ModelEvaluationOptions, ModelOutput, NeighborListOptions, System
from torch import Tensor

from ..models.base import AtomisticPotential


class MetatomicModel(AtomisticPotential):
    """Contract ``compute`` around a metatomic AtomisticModel (energies per atom -> forces, virial).

    With an ``energy_ensemble`` output of ``ensemble_size`` K > 1 members (per atom), the file is a committee:
    ``energy``/``energies``/``forces``/virials are the model's own ``energy`` prediction, and the uncertainty
    outputs come from the ensemble members (one backward pass per member, only when uncertainty is asked)."""

    def __init__(self, model, species: List[str], atomic_numbers: List[int], cutoff: float,
                 options: List[NeighborListOptions], nl_cutoffs: List[float], dtype: torch.dtype,
                 ensemble_size: int = 1):
        super().__init__(species, cutoff, ensemble_size)
        self.model = model
        self.nl_options: List[NeighborListOptions] = options
        self.nl_cutoffs: List[float] = nl_cutoffs
        self.register_buffer("numbers", torch.tensor(atomic_numbers, dtype=torch.int32))
        self.register_buffer("zero_cell", torch.zeros((3, 3), dtype=dtype))

    def _forces_and_virial(self, grads: List[Optional[Tensor]], kept: List[Tensor], src: Tensor, dst: Tensor,
                           positions: Tensor, r_all: Tensor, need_virial: bool) -> Tuple[Tensor, Tensor]:
        """Forces [N, 3] and per-atom virials [N, 3, 3] from dE/dpositions and dE/d(edge vectors)."""
        g_pos = grads[0]
        if g_pos is None:
            g_pos = torch.zeros_like(positions)
        forces = -g_pos
        atom_w = -positions.unsqueeze(2) * g_pos.unsqueeze(1)  # direct position dependence
        for k in range(len(kept)):
            g = grads[k + 1]
            if g is not None:
                idx = kept[k]
                s, d = src.index_select(0, idx), dst.index_select(0, idx)
                forces = forces.index_add(0, s, g).index_add(0, d, -g)
                if need_virial:
                    half = -0.5 * r_all.index_select(0, idx).unsqueeze(2) * g.unsqueeze(1)
                    atom_w = atom_w.index_add(0, s, half).index_add(0, d, half)
        return forces, atom_w

    def _system(self, positions: Tensor, types: Tensor, edge_index: Tensor,
                shifts: Tensor) -> Tuple[System, List[Tensor], List[Tensor], Tensor]:
        """The metatomic System (all atoms, zero cell) with each requested neighbour list built from our edges;
        also the autograd leaves (positions, then each list's edge vectors), each list's edge indices and
        the edge vectors."""
        dev = positions.device
        pos = positions.detach().clone().requires_grad_(True)
        src, dst = edge_index[0], edge_index[1]
        r_all = (positions.index_select(0, dst) - positions.index_select(0, src) + shifts).detach()
        d2 = (r_all * r_all).sum(-1)
        # periodic images of one pair differ only by their shift: one integer label per distinct shift
        shift_id = torch.unique(shifts.detach(), dim=0, return_inverse=True)[1].to(torch.int32)
        sgn = torch.sign(shifts.detach())
        first_nonzero = (sgn * torch.tensor([4.0, 2.0, 1.0], dtype=shifts.dtype, device=dev)).sum(-1)
        system = System(types=self.numbers.index_select(0, types), positions=pos, cell=self.zero_cell,
                        pbc=torch.zeros(3, dtype=torch.bool, device=dev))
        leaves: List[Tensor] = [pos]
        kept: List[Tensor] = []
        for k, options in enumerate(self.nl_options):
            cut = self.nl_cutoffs[k]
            keep = d2 < cut * cut
            if not options.full_list:  # each pair once: i < j, or the positive image of i == j
                keep = keep & ((src < dst) | ((src == dst) & (first_nonzero > 0)))
            idx = keep.nonzero().squeeze(1)
            r = r_all.index_select(0, idx).clone().requires_grad_(True)
            zeros = torch.zeros_like(idx, dtype=torch.int32)
            samples = Labels(["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"],
                             torch.stack([src.index_select(0, idx).to(torch.int32),
                                          dst.index_select(0, idx).to(torch.int32),
                                          shift_id.index_select(0, idx), zeros, zeros], 1))
            block = TensorBlock(values=r.reshape(-1, 3, 1), samples=samples,
                                components=[Labels(["xyz"], torch.arange(3, device=dev).reshape(-1, 1))],
                                properties=Labels(["distance"], torch.zeros((1, 1), dtype=torch.int32,
                                                                             device=dev)))
            system.add_neighbor_list(options, block)
            leaves.append(r)
            kept.append(idx)
        return system, leaves, kept, r_all

    def ensemble_width(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor) -> int:
        """Number of members of the model's per-atom ``energy_ensemble`` output (found by running it)."""
        system, _, _, _ = self._system(positions, types, edge_index, shifts)
        options = ModelEvaluationOptions(length_unit="angstrom",
                                         outputs={"energy_ensemble": ModelOutput(unit="eV", sample_kind="atom")})
        return int(self.model([system], options, False)["energy_ensemble"].block().values.shape[1])

    @torch.jit.export
    def compute(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor,
                n_local: int, need_virial: bool, need_uncertainty: bool) -> Dict[str, Tensor]:
        dev = positions.device
        src, dst = edge_index[0], edge_index[1]
        system, leaves, kept, r_all = self._system(positions, types, edge_index, shifts)
        local = torch.arange(n_local, device=dev, dtype=torch.int32)
        selected = Labels(["system", "atom"], torch.stack([torch.zeros_like(local), local], 1))
        ensemble = need_uncertainty and self.ensemble_size > 1
        outputs: Dict[str, ModelOutput] = {"energy": ModelOutput(unit="eV", sample_kind="atom")}
        if ensemble:
            outputs["energy_ensemble"] = ModelOutput(unit="eV", sample_kind="atom")
        options = ModelEvaluationOptions(length_unit="angstrom", outputs=outputs, selected_atoms=selected)
        result = self.model([system], options, False)
        block = result["energy"].block()
        atom = block.samples.column("atom").to(torch.int64)
        energies = torch.zeros(n_local, dtype=positions.dtype, device=dev).index_add(
            0, atom, block.values.reshape(-1))
        energy = energies.sum()
        grads = torch.autograd.grad([energy], leaves, allow_unused=True, retain_graph=ensemble)
        forces, atom_w = self._forces_and_virial(grads, kept, src, dst, positions.detach(), r_all, need_virial)
        out: Dict[str, Tensor] = {"energy": energy.detach(), "energies": energies.detach(), "forces": forces}
        if need_virial:
            out["virial"] = atom_w.sum(0)
            out["atom_virial"] = atom_w
        if ensemble:
            eblock = result["energy_ensemble"].block()
            member_atom_e = torch.zeros((n_local, self.ensemble_size), dtype=positions.dtype, device=dev).index_add(
                0, eblock.samples.column("atom").to(torch.int64), eblock.values)
            member_energy = member_atom_e.sum(0)
            member_forces: List[Tensor] = []
            member_virial: List[Tensor] = []
            for k in range(self.ensemble_size):
                g = torch.autograd.grad([member_energy[k]], leaves, allow_unused=True,
                                        retain_graph=k + 1 < self.ensemble_size)
                f_k, w_k = self._forces_and_virial(g, kept, src, dst, positions.detach(), r_all, need_virial)
                member_forces.append(f_k)
                member_virial.append(w_k.sum(0))
            mf = torch.stack(member_forces)
            out["member_energy"] = member_energy.detach()
            out["member_forces"] = mf
            if need_virial:
                out["member_virial"] = torch.stack(member_virial)
            out["forces_std"] = self.force_uncertainty(mf)
            out["energies_std"] = member_atom_e.detach().std(1, unbiased=False) * self.uncertainty_scale
            out["energy_std"] = member_energy.detach().std(unbiased=False) * self.uncertainty_scale
        return out
