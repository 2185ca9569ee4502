"""A tiny metatomic AtomisticModel built in the tests (no downloads): an EAM-like many-body Cu/Au potential in
nm and kJ/mol, so the import's unit conversion and neighbour-list wiring are exercised."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput,
                             NeighborListOptions, System)


class TinyEAM(torch.nn.Module):
    """E_i = 1/2 sum_j D (e^{-2a(r-r0)} - 2 e^{-a(r-r0)}) fc(r) - c_i sqrt(1 + sum_j A_j e^{-b r} fc(r))."""

    def __init__(self, cutoff: float = 0.5, full_list: bool = True, two_hop: bool = False,
                 dtype: torch.dtype = torch.float64, embed_scale: float = 1.0, ensemble_scales: Sequence[float] = ()):
        super().__init__()
        self.two_hop = two_hop  # + 0.1 sum_j fc(r_ij) sqrt(1 + rho_j): a message over two cutoffs
        self.nl = NeighborListOptions(cutoff=cutoff, full_list=full_list, strict=True)
        self.cutoff = cutoff
        self.full_list = full_list
        self.register_buffer("numbers", torch.tensor([29, 79]))
        self.register_buffer("amp", torch.tensor([1.0, 1.6], dtype=dtype))
        self.register_buffer("embed", torch.tensor([30.0, 45.0], dtype=dtype))
        self.embed_scale = embed_scale
        # energy_ensemble members: the embedding term scaled by each of these
        self.register_buffer("ensemble_scales", torch.tensor(list(ensemble_scales), dtype=dtype))

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.nl]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        result: Dict[str, TensorMap] = {}
        for name, output in outputs.items():
            per_atom = output.sample_kind == "atom"
            values: List[torch.Tensor] = []
            samples: List[torch.Tensor] = []
            for s, system in enumerate(systems):
                e_pair, emb = self.terms(system)
                if name == "energy":
                    e = (e_pair - self.embed_scale * emb).unsqueeze(1)
                else:  # energy_ensemble: one column per embedding scale
                    e = e_pair.unsqueeze(1) - emb.unsqueeze(1) * self.ensemble_scales.unsqueeze(0)
                atoms = torch.arange(len(system))
                if selected_atoms is not None:
                    sel = selected_atoms.values
                    atoms = sel[sel[:, 0] == s][:, 1].to(torch.int64)
                if per_atom:
                    values.append(e.index_select(0, atoms))
                    samples.append(torch.stack([torch.full_like(atoms, s), atoms], 1))
                else:
                    values.append(e.index_select(0, atoms).sum(0, keepdim=True))
                    samples.append(torch.tensor([[s]]))
            names = ["system", "atom"] if per_atom else ["system"]
            k = values[0].shape[1]
            block = TensorBlock(values=torch.cat(values), samples=Labels(names, torch.cat(samples).to(torch.int32)),
                                components=[], properties=Labels(["energy"], torch.arange(k).reshape(-1, 1)))
            result[name] = TensorMap(Labels(["_"], torch.tensor([[0]])), [block])
        return result

    def terms(self, system: System) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-atom pair (and two-hop) energy, and the embedding term embed_t sqrt(1 + rho)."""
        nl = system.get_neighbor_list(self.nl)
        i = nl.samples.column("first_atom").to(torch.int64)
        j = nl.samples.column("second_atom").to(torch.int64)
        r = torch.linalg.norm(nl.values.reshape(-1, 3), dim=-1)
        fc = (1.0 - (r / self.cutoff) ** 2) ** 2
        t = (system.types.unsqueeze(1) == self.numbers.unsqueeze(0)).to(torch.int64).argmax(1)
        pair = 40.0 * (torch.exp(-2 * 14.0 * (r - 0.27)) - 2 * torch.exp(-14.0 * (r - 0.27))) * fc
        dens = self.amp.index_select(0, t.index_select(0, j)) * torch.exp(-20.0 * r) * fc
        n = len(system)
        half = 0.5 if self.full_list else 1.0
        e = torch.zeros(n, dtype=r.dtype).index_add(0, i, half * pair)
        rho = torch.zeros(n, dtype=r.dtype).index_add(0, i, dens)
        if not self.full_list:
            e = e.index_add(0, j, half * pair)
            rho = rho.index_add(0, j, self.amp.index_select(0, t.index_select(0, i)) * torch.exp(-20.0 * r) * fc)
        if self.two_hop:
            e = e.index_add(0, i, 0.1 * fc * torch.sqrt(1.0 + rho).index_select(0, j))
            if not self.full_list:
                e = e.index_add(0, j, 0.1 * fc * torch.sqrt(1.0 + rho).index_select(0, i))
        return e, self.embed.index_select(0, t) * torch.sqrt(1.0 + rho)


def save_tiny_eam(path, full_list: bool = True, length_unit: str = "nm", energy_unit: str = "kJ/mol",
                  per_atom: bool = True, two_hop: bool = False, dtype: str = "float64", embed_scale: float = 1.0,
                  ensemble_scales: Sequence[float] = ()) -> str:
    outputs = {"energy": ModelOutput(unit=energy_unit, sample_kind="atom" if per_atom else "system")}
    if ensemble_scales:
        outputs["energy_ensemble"] = ModelOutput(unit=energy_unit, sample_kind="atom")
    caps = ModelCapabilities(
        outputs=outputs,
        atomic_types=[29, 79], interaction_range=1.0 if two_hop else 0.5, length_unit=length_unit,
        supported_devices=["cpu"], dtype=dtype)
    module = TinyEAM(full_list=full_list, two_hop=two_hop, dtype=getattr(torch, dtype), embed_scale=embed_scale,
                     ensemble_scales=ensemble_scales).eval()
    model = AtomisticModel(module, ModelMetadata(name="tiny-eam"), caps)
    model.save(str(path))
    return str(path)
