"""The receptive field of the local atoms in a message-passing graph (TorchScript; used by the imported models).

With LAMMPS ghosts a model with L message-passing layers gets every atom within L x cutoff of the local ones,
and a full edge list for all of them; but the local energies only depend on edges whose centre lies within
L - 1 hops of a local atom, and on the atoms those edges reach. Evaluating the foreign network on that subgraph
gives the same local energies exactly (and zero gradient on the dropped edges, which is their true gradient),
at a fraction of the cost: the outer ghost shell is most of the atoms of a small domain. Without ghosts
(n_local == n: ASE, OpenMM) nothing is dropped.
"""
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from ..models.base import AtomisticPotential


def receptive_subgraph(edge_index: Tensor, n_nodes: int, n_local: int, n_layers: int) -> Tuple[Tensor, Tensor, Tensor]:
    """-> (kept edge ids [E'], kept node ids [N'] in ascending order (locals first), edge_index relabelled [2, E']).

    Contract convention: information flows from the neighbour ``edge_index[1]`` to the centre ``edge_index[0]``.
    """
    centre, neighbour = edge_index[0], edge_index[1]
    near = torch.arange(n_nodes, device=edge_index.device) < n_local
    for _ in range(n_layers - 1):  # atoms that send to a centre which is near become near
        near = near.index_fill(0, neighbour[near.index_select(0, centre)], True)
    kept = torch.nonzero(near.index_select(0, centre)).flatten()
    nodes_mask = near.index_fill(0, neighbour.index_select(0, kept), True)
    nodes = torch.nonzero(nodes_mask).flatten()
    remap = torch.full((n_nodes,), -1, dtype=torch.int64, device=edge_index.device)
    remap = remap.index_copy(0, nodes, torch.arange(nodes.shape[0], device=edge_index.device))
    return kept, nodes, remap[edge_index.index_select(1, kept)]


class ImportedMessagePassing(AtomisticPotential):
    """Base of imported message-passing networks: subclasses give ``network_energies`` (per-atom energies of a
    graph from its edge vectors [E, 3]); this class evaluates it on the local atoms' receptive field only."""

    def __init__(self, species: List[str], cutoff: float, n_layers: int):
        super().__init__(species, cutoff)
        self.n_layers = n_layers
        self.n_local = 0  # of the current compute() call: atoms beyond are ghosts

    def interaction_range(self) -> float:
        return self.n_layers * self.cutoff

    @torch.jit.export
    def compute(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor,
                n_local: int, need_virial: bool, need_uncertainty: bool) -> Dict[str, Tensor]:
        self.n_local = n_local
        return self.evaluate(positions, types, edge_index, shifts, n_local, need_virial, need_uncertainty, False)

    def network_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        raise NotImplementedError

    def member_atom_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        n_all = types.shape[0]
        kept, nodes, sub_index = receptive_subgraph(edge_index, n_all, self.n_local, self.n_layers)
        e = self.network_energies(edge_vectors[0].index_select(0, kept), sub_index, types.index_select(0, nodes))
        # atoms outside the receptive field get no energy: only the local ones are summed
        out = torch.zeros((1, n_all), dtype=edge_vectors.dtype, device=edge_vectors.device)
        return out.index_copy(1, nodes, e.to(edge_vectors.dtype).unsqueeze(0))
