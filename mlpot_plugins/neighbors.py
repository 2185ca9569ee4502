"""Python-side neighbour lists (vesin) and the geometry checks every engine's Python path shares.

``check_geometry`` (TorchScript-compatible) rejects what no model can evaluate meaningfully: non-finite
positions or cell, a periodic cell that is flat (a height below ``MIN_CELL_HEIGHT``) and coincident
atoms (a pair, or an atom and an image, closer than ``MIN_DISTANCE``). It runs in ``neighbor_list``
(the ASE calculator and the OpenMM reporter, via ``LoadedModel.compute_on``) and in the scripted module
of both OpenMM backends (``openmm/torch_module.py``), so all of them reject the same inputs with the
same message.
"""
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor
from vesin import NeighborList

MIN_CELL_HEIGHT = 0.1  # Angstrom: a periodic image closer than this is a coincident atom, not physics
MIN_DISTANCE = 1e-4  # Angstrom: two atoms closer than this are the same point (NaN/inf forces)


def cell_heights(cell: Tensor, pbc: List[bool]) -> Tensor:
    """Height of the cell along each periodic lattice vector: its distance to the span of the other
    periodic vectors ([3]; inf for non-periodic directions, whose vectors may be anything, even zero)."""
    periodic: List[int] = []
    for k in range(3):
        if pbc[k]:
            periodic.append(k)
    heights = torch.full((3,), float("inf"), dtype=cell.dtype, device=cell.device)
    if len(periodic) == 3:
        a, b, c = cell[0], cell[1], cell[2]
        volume = torch.abs(torch.dot(a, _cross(b, c)))
        areas = torch.stack([_cross(b, c).norm(), _cross(c, a).norm(), _cross(a, b).norm()])
        heights = torch.where(areas > 0, volume / torch.clamp(areas, min=1e-300), torch.zeros_like(areas))
    elif len(periodic) == 2:
        i, j = periodic[0], periodic[1]
        area = _cross(cell[i], cell[j]).norm()
        li, lj = cell[i].norm(), cell[j].norm()
        heights[i] = area / lj if float(lj) > 0 else 0.0 * area
        heights[j] = area / li if float(li) > 0 else 0.0 * area
    elif len(periodic) == 1:
        heights[periodic[0]] = cell[periodic[0]].norm()
    return heights


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return torch.stack([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]])


def check_geometry(positions: Tensor, cell: Tensor, pbc: List[bool], min_height: float = MIN_CELL_HEIGHT) -> None:
    """ValueError naming the problem and the fix for non-finite positions/cell or a flat periodic cell."""
    if not bool(torch.isfinite(positions).all()):
        bad = int(torch.nonzero(~torch.isfinite(positions).all(dim=1))[0, 0])
        raise ValueError("mlpot: position of atom " + str(bad) + " is not finite (NaN or inf): the "
                         "simulation has blown up or was given bad coordinates; use a smaller time step or "
                         "check the input structure")
    if pbc[0] or pbc[1] or pbc[2]:
        if not bool(torch.isfinite(cell).all()):
            raise ValueError("mlpot: the periodic cell is not finite (NaN or inf); give a valid cell")
        heights = cell_heights(cell.to(torch.float64), pbc)
        for k in range(3):
            if pbc[k] and float(heights[k]) < min_height:
                raise ValueError("mlpot: the periodic cell is flat or degenerate: its height along lattice "
                                 "vector " + str(k) + " is " + str(float(heights[k])) + " A (minimum "
                                 + str(min_height) + " A, volume " + str(float(torch.abs(
                                     torch.det(cell.to(torch.float64))))) + " A^3); give a proper cell "
                                 "or switch off periodicity in that direction")


def check_distances(i: Tensor, j: Tensor, distances: Tensor, min_distance: float = MIN_DISTANCE) -> None:
    """ValueError naming the first pair of coincident atoms (closer than MIN_DISTANCE)."""
    if distances.numel() == 0:
        return
    k = int(torch.argmin(distances))
    d = float(distances[k])
    if d < min_distance:
        what = "an atom and its own periodic image" if int(i[k]) == int(j[k]) else "two atoms"
        raise ValueError("mlpot: coincident atoms: " + what + " (indices " + str(int(i[k])) + " and "
                         + str(int(j[k])) + ") are " + str(d) + " A apart (minimum " + str(min_distance)
                         + " A); remove the duplicate atom or fix the coordinates")


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``edge_index`` [2, E] (int64) and Cartesian ``shifts`` [E, 3] for all pairs within cutoff.

    Works for periodic, mixed and open boundaries, triclinic cells, and cutoffs larger than half the
    cell (several images of the same neighbour appear as separate edges). Bad geometry (see
    :func:`check_geometry`, :func:`check_distances`) raises ValueError.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc.any():
        cell = np.zeros((3, 3))
    check_geometry(torch.from_numpy(positions), torch.from_numpy(cell), [bool(p) for p in pbc])
    i, j, s, d = NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=positions, box=cell, periodic=[bool(p) for p in pbc], quantities="ijSd")
    check_distances(torch.from_numpy(i), torch.from_numpy(j), torch.from_numpy(d))
    edge_index = np.stack([i, j]).astype(np.int64)
    # explicit sum: a threaded BLAS matmul on [E, 3] x [3, 3] is slower than this on small machines
    s = s.astype(np.float64)
    shifts = s[:, :1] * cell[0] + s[:, 1:2] * cell[1] + s[:, 2:3] * cell[2]
    return edge_index, shifts
