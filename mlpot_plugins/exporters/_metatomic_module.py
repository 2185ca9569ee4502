"""The metatomic ``ModelInterface`` around one of our atomistic models (imported lazily: needs metatomic-torch)."""
from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System
from torch import Tensor, nn


class ContractAsMetatomic(nn.Module):
    """metatomic ``forward`` -> our ``compute``.

    Edges come from the engine's full neighbour list (its vectors give our Cartesian shifts); the selected
    atoms go first as our local atoms, the others act as ghosts. Our compute returns forces and virial
    explicitly, so the energy handed back is made differentiable by zero-valued terms whose gradients are
    exactly those: (x_i - x_i')(-F_i) for the positions and tr((C - C') M) for the cell, with M solving
    C^T M = -W + sum_i x_i (x) F_i (the part of the virial the periodic images carry).
    """

    def __init__(self, model, atomic_numbers: List[int], cutoff: float, ensemble_size: int, has_virial: bool):
        super().__init__()
        self.model = model
        self.nl = NeighborListOptions(cutoff=cutoff, full_list=True, strict=True)
        self.ensemble_size: int = ensemble_size
        self.has_virial: bool = has_virial
        table = torch.full((max(atomic_numbers) + 1,), -1, dtype=torch.int64)
        for t, z in enumerate(atomic_numbers):
            table[z] = t
        self.register_buffer("type_of_number", table)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.nl]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        want_unc = "energy_uncertainty" in outputs or "energy_ensemble" in outputs
        energy_rows: List[Tensor] = []
        energy_samples: List[Tensor] = []
        unc_rows: List[Tensor] = []
        ens_rows: List[Tensor] = []
        per_atom = "energy" in outputs and outputs["energy"].sample_kind == "atom"
        unc_per_atom = "energy_uncertainty" in outputs and outputs["energy_uncertainty"].sample_kind == "atom"
        for s, system in enumerate(systems):
            n = len(system)
            dev = system.positions.device
            selected = torch.arange(n, device=dev)
            if selected_atoms is not None:
                sel = selected_atoms.values
                selected = sel[sel[:, 0] == s][:, 1].to(torch.int64)
            is_local = torch.zeros(n, dtype=torch.bool, device=dev)
            is_local[selected] = True
            order = torch.cat([selected, (~is_local).nonzero().squeeze(1)])  # new -> old index
            new_of_old = torch.empty_like(order)
            new_of_old[order] = torch.arange(n, device=dev)
            n_local = selected.shape[0]
            nl = system.get_neighbor_list(self.nl)
            i = new_of_old.index_select(0, nl.samples.column("first_atom").to(torch.int64))
            j = new_of_old.index_select(0, nl.samples.column("second_atom").to(torch.int64))
            x = system.positions.index_select(0, order)
            vec = nl.values.reshape(-1, 3)
            shifts = (vec - (x.index_select(0, j) - x.index_select(0, i))).detach()
            types = self.type_of_number.index_select(0, system.types.to(torch.int64)).index_select(0, order)
            out = self.model.compute(x.detach(), types, torch.stack([i, j]), shifts, n_local,
                                     self.has_virial, want_unc)
            forces = out["forces"]
            # zero-valued terms carrying the gradients (forces; virial through the cell)
            grad_terms = ((x - x.detach()) * (-forces)).sum(-1)  # [n]
            if self.has_virial:
                xd = x.detach()
                residual = -out["virial"] + (xd.unsqueeze(2) * forces.unsqueeze(1)).sum(0)
                cell = system.cell
                m = torch.linalg.pinv(cell.detach().T) @ residual
                cell_term = ((cell - cell.detach()) * m).sum()
                grad_terms = grad_terms + cell_term / n
            e_local = out["energies"] + grad_terms[:n_local]
            e_ghost = grad_terms[n_local:].sum()
            if per_atom:
                e_atoms = e_local + e_ghost / max(n_local, 1)
                energy_rows.append(e_atoms.reshape(-1, 1))
                energy_samples.append(torch.stack([torch.full_like(selected, s), selected], 1))
            else:
                energy_rows.append((e_local.sum() + e_ghost).reshape(1, 1))
                energy_samples.append(torch.tensor([[s]], device=dev))
            if want_unc:
                if self.ensemble_size > 1:
                    unc_rows.append(out["energies_std"].reshape(-1, 1) if unc_per_atom
                                    else out["energy_std"].reshape(1, 1))
                    ens_rows.append(out["member_energy"].reshape(1, -1))
                else:
                    unc_rows.append(torch.zeros((n_local if unc_per_atom else 1, 1), dtype=x.dtype, device=dev))
                    ens_rows.append(out["energy"].reshape(1, 1))
        result: Dict[str, TensorMap] = {}
        key = Labels(["_"], torch.tensor([[0]]))
        if "energy" in outputs:
            names = ["system", "atom"] if per_atom else ["system"]
            result["energy"] = TensorMap(key, [TensorBlock(
                values=torch.cat(energy_rows), samples=Labels(names, torch.cat(energy_samples).to(torch.int32)),
                components=[], properties=Labels(["energy"], torch.tensor([[0]])))])
        if "energy_uncertainty" in outputs:
            if unc_per_atom:
                if per_atom:
                    samples = torch.cat(energy_samples)
                else:
                    rows: List[Tensor] = []
                    for s, system in enumerate(systems):
                        idx = torch.arange(len(system))
                        if selected_atoms is not None:
                            sel = selected_atoms.values
                            idx = sel[sel[:, 0] == s][:, 1].to(torch.int64)
                        rows.append(torch.stack([torch.full_like(idx, s), idx], 1))
                    samples = torch.cat(rows)
                names = ["system", "atom"]
            else:
                samples = torch.arange(len(systems)).reshape(-1, 1)
                names = ["system"]
            result["energy_uncertainty"] = TensorMap(key, [TensorBlock(
                values=torch.cat(unc_rows), samples=Labels(names, samples.to(torch.int32)),
                components=[], properties=Labels(["energy"], torch.tensor([[0]])))])
        if "energy_ensemble" in outputs:
            k = ens_rows[0].shape[1]
            result["energy_ensemble"] = TensorMap(key, [TensorBlock(
                values=torch.cat(ens_rows), samples=Labels(["system"], torch.arange(len(systems)).reshape(-1, 1)),
                components=[], properties=Labels(["energy"], torch.arange(k).reshape(-1, 1)))])
        return result
