"""Reference engine of the layer-wise message-passing contract (``contract.py``, "Message passing layer by
layer"): what LAMMPS does across MPI ranks, written out in Python on explicit domains.

A system is split into domains (``domain[i]`` names atom i's owner). Each domain holds its own atoms and, as
ghosts, every periodic image or foreign atom within ONE cutoff of them (its own images included: they are
never recomputed, their features are copied). Each layer runs on owned atoms only; between layers the owners'
new features are copied to their ghosts (forward exchange); in the backward pass the feature gradients of
ghost rows are summed into their owners (reverse exchange), and at the end ghost position gradients are summed
into their owners as forces. ``layered_compute`` returns the same dict as the model's ``compute`` on the whole
periodic system, to round-off (tests/test_message_passing.py: 1e-10 in fp64).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor
from vesin import NeighborList

from .contract import LAYERWISE_METHODS


def has_layerwise(module) -> bool:
    """True when a (scripted) module exports the whole layer-wise contract."""
    return all(hasattr(module, name) for name in LAYERWISE_METHODS)


@dataclass
class Domain:
    """One domain: rows ``:n_local`` are its atoms, then ghosts at their image positions (shifts are zero)."""
    atom: Tensor        # [N] global index of the atom each row is (an image of)
    positions: Tensor   # [N, 3]
    types: Tensor       # [N]
    edge_index: Tensor  # [2, E] rows; every centre is owned
    n_local: int


def split(positions: np.ndarray, cell: np.ndarray, pbc, types: np.ndarray, domain: np.ndarray, cutoff: float,
          dtype=torch.float64) -> List[Domain]:
    """Domains with one-cutoff ghosts (periodic images and other domains' atoms) and their edge lists."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    i, j, s = NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=positions, box=cell, periodic=[bool(p) for p in np.broadcast_to(pbc, (3,))], quantities="ijS")
    out = []
    for d in np.unique(domain):
        owned = np.flatnonzero(domain == d)
        row_of = {(int(a), 0, 0, 0): r for r, a in enumerate(owned)}
        atoms, images = list(owned), [np.zeros(3)] * len(owned)
        src, dst = [], []
        for e in np.flatnonzero(domain[i] == d):
            key = (int(j[e]),) + tuple(int(v) for v in s[e])
            if key not in row_of:
                row_of[key] = len(atoms)
                atoms.append(int(j[e]))
                images.append(s[e] @ cell)
            src.append(row_of[(int(i[e]), 0, 0, 0)])
            dst.append(row_of[key])
        atoms = np.array(atoms, dtype=np.int64)
        pos = positions[atoms] + np.array(images)
        out.append(Domain(torch.from_numpy(atoms), torch.tensor(pos, dtype=dtype),
                          torch.as_tensor(np.asarray(types)[atoms], dtype=torch.int64),
                          torch.tensor([src, dst], dtype=torch.int64).reshape(2, -1), len(owned)))
    return out


def forward_exchange(domains: List[Domain], owned: List[Tensor], n_atoms: int) -> List[Tensor]:
    """Owned rows' features [n_local, F] -> every row's [N, F]: ghosts get their owner's row."""
    everyone = torch.zeros((n_atoms, owned[0].shape[1]), dtype=owned[0].dtype)
    for dom, h in zip(domains, owned):
        everyone[dom.atom[:dom.n_local]] = h.detach()
    return [torch.cat([h.detach(), everyone[dom.atom[dom.n_local:]]]) for dom, h in zip(domains, owned)]


def reverse_exchange(domains: List[Domain], rows: List[Tensor], n_atoms: int) -> List[Tensor]:
    """Every row's gradients (or forces) [N, ...] -> owned rows' [n_local, ...], ghost rows summed into owners."""
    total = torch.zeros((n_atoms,) + tuple(rows[0].shape[1:]), dtype=rows[0].dtype)
    for dom, g in zip(domains, rows):
        total.index_add_(0, dom.atom, g)
    return [total[dom.atom[:dom.n_local]] for dom in domains]


def edge_pieces(attr) -> List[Tensor]:
    """``mp_edges``'s result as a list of tensors: a list as it is, one tensor as a list of one."""
    return list(attr) if isinstance(attr, (list, tuple)) else [attr]


def layered_compute(module, domains: List[Domain], n_atoms: int, need_virial: bool = True,
                    need_uncertainty: bool = False, uncertainty_scale: Optional[float] = None) -> Dict[str, Tensor]:
    """The model's ``compute`` outputs for the whole system, evaluated layer by layer on the domains with
    feature and gradient exchange only (rows in global atom order; ``member_forces`` etc. as ``compute``)."""
    copies = module.mp_copies(need_uncertainty)
    n_layers = int(module.mp_layers)
    r, rk, attr = [], [], []
    for dom in domains:  # geometry once per domain, a leaf for the layers to differentiate against
        src, dst = dom.edge_index
        r.append(dom.positions[dst] - dom.positions[src])
        rk.append(r[-1].unsqueeze(0).expand(copies, -1, -1).clone().requires_grad_(True))
    # mp_edges returns a list of tensors, or one tensor (layer-wise files exported before stop 26): both are
    # passed back to mp_layer as they came
    raw = [module.mp_edges(x) for x in rk]
    one_tensor = not isinstance(raw[0], (list, tuple))
    edges = [edge_pieces(e) for e in raw]
    attr = [[e.detach().requires_grad_(True) for e in pieces] for pieces in edges]
    h = [module.mp_embed(dom.types, copies) for dom in domains]
    ins: List[List[Tensor]] = []
    outs: List[List[Tensor]] = []
    for t in range(n_layers):
        ins.append([x.detach().requires_grad_(t > 0) for x in h])
        outs.append([module.mp_layer(t, x, a[0] if one_tensor else a, dom.edge_index, dom.types, dom.n_local)
                     for x, a, dom in zip(ins[t], attr, domains)])
        if t + 1 < n_layers:
            h = forward_exchange(domains, outs[t], n_atoms)
    energies = [module.mp_readout(x, dom.types[:dom.n_local]) for x, dom in zip(outs[-1], domains)]
    k = energies[0].shape[0]
    targets = [e.sum() if copies == k else e.sum(1).mean() for e in energies]
    # backward, layer by layer: d target / d features of the layer's input, ghost rows summed into owners
    g_attr: List[Optional[List[Tensor]]] = [None] * len(domains)
    g_owned: List[Tensor] = []
    for t in reversed(range(n_layers)):
        g_rows = []
        for d in range(len(domains)):
            n_attr = len(attr[d])
            wrt = attr[d] + ([ins[t][d]] if t > 0 else [])
            if t == n_layers - 1:
                grads = torch.autograd.grad([targets[d]], wrt, allow_unused=True)
            else:
                grads = torch.autograd.grad([outs[t][d]], wrt, [g_owned[d]], allow_unused=True)
            g = [torch.zeros_like(a) if x is None else x for x, a in zip(grads[:n_attr], attr[d])]
            g_attr[d] = g if g_attr[d] is None else [a + b for a, b in zip(g_attr[d], g)]
            if t > 0:
                g_rows.append(grads[n_attr])
        if t > 0:
            g_owned = reverse_exchange(domains, g_rows, n_atoms)
    per_domain = []
    for d, dom in enumerate(domains):
        pairs = [(e, g) for e, g in zip(edges[d], g_attr[d]) if e.requires_grad]
        g_r = torch.autograd.grad([e for e, _ in pairs], [rk[d]], [g for _, g in pairs], allow_unused=True)[0] \
            if pairs else None
        if g_r is None:
            g_r = torch.zeros_like(rk[d])
        per_domain.append(module.mp_outputs(r[d], g_r, dom.edge_index, dom.positions.shape[0],
                                            energies[d].detach(), need_virial, need_uncertainty))
    return combine(module, domains, per_domain, n_atoms, uncertainty_scale)


def combine(module, domains: List[Domain], outs: List[Dict[str, Tensor]], n_atoms: int,
            uncertainty_scale: Optional[float]) -> Dict[str, Tensor]:
    """What an engine does with the domains' outputs: sums over domains, ghost rows into owners."""
    def owned_rows(key):
        total = torch.zeros((n_atoms,) + tuple(outs[0][key].shape[1:]), dtype=outs[0][key].dtype)
        for dom, o in zip(domains, outs):
            total[dom.atom[:dom.n_local]] = o[key][:dom.n_local].detach()
        return total

    def all_rows(key):
        return reverse_exchange(domains, [o[key].detach() for o in outs], n_atoms)

    def scatter(parts):
        total = torch.zeros((n_atoms,) + tuple(parts[0].shape[1:]), dtype=parts[0].dtype)
        for dom, p in zip(domains, parts):
            total[dom.atom[:dom.n_local]] = p
        return total

    res = {"energy": sum(o["energy"] for o in outs), "energies": owned_rows("energies"),
           "forces": scatter(all_rows("forces"))}
    if "virial" in outs[0]:
        res["virial"] = sum(o["virial"] for o in outs)
        res["atom_virial"] = scatter(all_rows("atom_virial"))
    if "member_forces" in outs[0]:
        member = [o["member_forces"].detach().transpose(0, 1) for o in outs]  # rows first
        res["member_forces"] = scatter(reverse_exchange(domains, member, n_atoms)).transpose(0, 1)
        res["forces_std"] = module.force_uncertainty(res["member_forces"])
        res["energies_std"] = owned_rows("energies_std")
        res["member_energy"] = sum(o["member_energy"] for o in outs)
        scale = float(module.uncertainty_scale) if uncertainty_scale is None else uncertainty_scale
        res["energy_std"] = res["member_energy"].std(unbiased=False) * scale
        if "member_virial" in outs[0]:
            res["member_virial"] = sum(o["member_virial"] for o in outs)
    return res
