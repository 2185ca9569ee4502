"""The contract module around a metatomic AtomisticModel (imported lazily: needs metatomic-torch)."""
from typing import Dict, List

import torch
from metatensor.torch import Labels, TensorBlock
from metatomic.torch import ModelEvaluationOptions, ModelOutput, NeighborListOptions, System
from torch import Tensor, nn


class MetatomicModel(nn.Module):
    """Contract ``compute`` around a metatomic AtomisticModel (energies per atom -> forces, virial)."""

    def __init__(self, model, species: List[str], atomic_numbers: List[int], cutoff: float,
                 options: List[NeighborListOptions], nl_cutoffs: List[float], dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.species: List[str] = species
        self.n_species: int = len(species)
        self.cutoff: float = float(cutoff)
        self.ensemble_size: int = 1
        self.uncertainty_scale: float = 1.0
        self.nl_options: List[NeighborListOptions] = options
        self.nl_cutoffs: List[float] = nl_cutoffs
        self.register_buffer("numbers", torch.tensor(atomic_numbers, dtype=torch.int32))
        self.register_buffer("zero_cell", torch.zeros((3, 3), dtype=dtype))

    @torch.jit.export
    def compute(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor,
                n_local: int, need_virial: bool, need_uncertainty: bool) -> Dict[str, Tensor]:
        n = positions.shape[0]
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
        local = torch.arange(n_local, device=dev, dtype=torch.int32)
        selected = Labels(["system", "atom"], torch.stack([torch.zeros_like(local), local], 1))
        outputs: Dict[str, ModelOutput] = {"energy": ModelOutput(unit="eV", sample_kind="atom")}
        options = ModelEvaluationOptions(length_unit="angstrom", outputs=outputs, selected_atoms=selected)
        block = self.model([system], options, False)["energy"].block()
        atom = block.samples.column("atom").to(torch.int64)
        energies = torch.zeros(n_local, dtype=positions.dtype, device=dev).index_add(
            0, atom, block.values.reshape(-1))
        energy = energies.sum()
        grads = torch.autograd.grad([energy], leaves, allow_unused=True)
        g_pos = grads[0]
        if g_pos is None:
            g_pos = torch.zeros_like(pos)
        forces = -g_pos
        virial = torch.zeros((3, 3), dtype=positions.dtype, device=dev)
        atom_w = -positions.detach().unsqueeze(2) * g_pos.unsqueeze(1)  # direct position dependence
        for k in range(len(kept)):
            g = grads[k + 1]
            if g is not None:
                idx = kept[k]
                s, d = src.index_select(0, idx), dst.index_select(0, idx)
                forces = forces.index_add(0, s, g).index_add(0, d, -g)
                if need_virial:
                    half = -0.5 * r_all.index_select(0, idx).unsqueeze(2) * g.unsqueeze(1)
                    atom_w = atom_w.index_add(0, s, half).index_add(0, d, half)
        out: Dict[str, Tensor] = {"energy": energy.detach(), "energies": energies.detach(), "forces": forces}
        if need_virial:
            out["virial"] = atom_w.sum(0)
            out["atom_virial"] = atom_w
        return out
