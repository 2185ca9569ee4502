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


_ARITHMETIC = ("aten::mul", "aten::div", "aten::add", "aten::sub", "aten::pow", "aten::rsub")
_INTEGER_DTYPES = (0, 1, 2, 3, 4)  # torch.uint8, int8, int16, int32, int64 as TorchScript dtype constants


def _integer_cast(value) -> bool:
    """Is ``value`` the output of ``x.to(<integer dtype constant>)``?"""
    node = value.node()
    if node.kind() != "aten::to" or len(list(node.inputs())) < 2:
        return False
    dtype = list(node.inputs())[1].node()
    return dtype.kind() == "prim::Constant" and dtype.output().type().kind() == "IntType" \
        and dtype.output().toIValue() in _INTEGER_DTYPES


def cast_integer_operands(scripted: torch.jit.ScriptModule, dtype: torch.dtype) -> int:
    """Make a scripted imported model independent of the default dtype of the process that runs it.

    An integer tensor combined with a Python float gives a tensor of torch's *default* dtype, not the model's:
    MACE's ZBL pair repulsion computes ``14.3996 * Z_u * Z_v`` from ``Z.to(torch.int64)`` atomic numbers, so
    that prefactor was rounded to float32 where the running process's default is float32 (LAMMPS, a fresh
    Python) and exact where it is float64 (relative 2e-7 on the forces of close pairs). In every method graph
    of ``scripted`` this casts the integer operand of such an op (``aten::mul/div/add/sub/pow/rsub`` of
    ``x.to(<integer dtype constant>)`` and a float scalar) to the model's ``dtype`` first, which is what the
    foreign code computes when the default dtype is the model's (as mace_run_train sets it). Integer tensors of
    other origins (an integer buffer indexed directly) and free functions called from the graphs are not
    rewritten: the importers' tests compare the results under both default dtypes. Returns the ops changed.
    """
    changed = 0
    for module in scripted.modules():
        for name in module._c._method_names():
            graph = module._c._get_method(name).graph
            for node in [n for kind in _ARITHMETIC for n in graph.findAllNodes(kind)]:
                inputs = list(node.inputs())[:2]
                if not any(v.type().kind() == "FloatType" for v in inputs):
                    continue
                for i, value in enumerate(inputs):
                    if value.type().kind() == "TensorType" and _integer_cast(value):
                        with graph.insert_point_guard(node):
                            no = graph.insertConstant(False)
                            cast = graph.create("aten::to", [value, graph.insertConstant(dtype), no, no,
                                                             graph.insertConstant(None)])
                            graph.insertNode(cast)
                        node.replaceInput(i, cast.output())
                        changed += 1
    return changed


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
