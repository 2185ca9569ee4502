"""Python-side neighbour lists (vesin): a full list with Cartesian shifts, as the contract wants."""
from __future__ import annotations

from typing import Tuple

import numpy as np
from vesin import NeighborList


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``edge_index`` [2, E] (int64) and Cartesian ``shifts`` [E, 3] for all pairs within cutoff.

    Works for periodic, mixed and open boundaries, triclinic cells, and cutoffs larger than half the
    cell (several images of the same neighbour appear as separate edges).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc.any():
        cell = np.zeros((3, 3))
    elif abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError("periodic boundaries need a cell with non-zero volume; set atoms.cell or pbc=False")
    i, j, s = NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=positions, box=cell, periodic=[bool(p) for p in pbc], quantities="ijS")
    edge_index = np.stack([i, j]).astype(np.int64)
    # explicit sum: a threaded BLAS matmul on [E, 3] x [3, 3] is slower than this on small machines
    s = s.astype(np.float64)
    shifts = s[:, :1] * cell[0] + s[:, 1:2] * cell[1] + s[:, 2:3] * cell[2]
    return edge_index, shifts
