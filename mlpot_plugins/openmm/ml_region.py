"""Which OpenMM particles the model sees (the ML region) and their species indices.

Shared by the TorchForce and PythonForce backends and by the uncertainty reporter, so all three map
particles to model types the same way and reject the same bad inputs with the same messages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from ..model_file import species_types


@dataclass
class MLRegion:
    """``types[k]`` is the model species index of system particle ``indices[k]``.

    ``indices`` is None when the model covers every particle in order (no subset bookkeeping).
    """

    types: np.ndarray  # int64 [n_ml]
    indices: Optional[np.ndarray]  # int64 [n_ml] or None
    n_particles: int
    periodic: bool
    box_known_default: bool = False  # the topology's box is OpenMM's default 2 nm cube

    @property
    def n_ml(self) -> int:
        return int(self.types.shape[0])

    def system_index(self, k: np.ndarray) -> np.ndarray:
        """ML-region positions -> system particle indices."""
        return np.asarray(k) if self.indices is None else self.indices[np.asarray(k)]


def element_symbols(topology_or_elements) -> List[Optional[str]]:
    """Element symbol of every particle (None for particles without an element, e.g. virtual sites)."""
    if hasattr(topology_or_elements, "atoms"):  # openmm.app.Topology
        return [a.element.symbol if a.element is not None else None for a in topology_or_elements.atoms()]
    if isinstance(topology_or_elements, str):
        raise TypeError("give a Topology or a list of element symbols (e.g. ['Cu', 'Au']), not a string")
    out: List[Optional[str]] = []
    for e in topology_or_elements:
        out.append(e if isinstance(e, str) or e is None else e.symbol)  # str or openmm.app.Element
    return out


def topology_box_nm(topology_or_elements) -> Optional[np.ndarray]:
    """The topology's periodic box [3, 3] in nm, or None (no box, or a list of elements)."""
    get_box = getattr(topology_or_elements, "getPeriodicBoxVectors", None)
    box = get_box() if get_box is not None else None
    if box is None:
        return None
    import openmm.unit as u

    return np.asarray(box.value_in_unit(u.nanometer), dtype=np.float64)


def check_periodic(periodic: Optional[bool], topology_or_elements, system=None) -> bool:
    """Resolve ``periodic`` (None: periodic when the topology has a box, or the System is periodic) and
    refuse a periodic force without a box: OpenMM would silently use its default 2 nm cube."""
    box = topology_box_nm(topology_or_elements)
    if periodic is None:
        periodic = box is not None or (system is not None and system.usesPeriodicBoundaryConditions())
    # a list of elements has no box to compare with: the force itself refuses OpenMM's default box at run time
    if periodic and box is None and hasattr(topology_or_elements, "atoms"):
        raise ValueError("periodic=True but the Topology has no periodic box, so OpenMM would silently use its "
                         "default 2 nm box; "
                         "pass a Topology with topology.setPeriodicBoxVectors(...) (and set the same box on the "
                         "System), or use periodic=False")
    return bool(periodic)


def resolve_region(species: Sequence[str], topology_or_elements,
                   atoms: Optional[Iterable[int]] = None, periodic: Optional[bool] = None,
                   system=None) -> MLRegion:
    """Map particles to the model's species; ValueError/IndexError naming the bad atoms otherwise."""
    symbols = element_symbols(topology_or_elements)
    n = len(symbols)
    if atoms is None:
        indices = None
        chosen = np.arange(n)
    else:
        chosen = _check_subset(atoms, n)
        indices = chosen
    types = species_types(species, [symbols[i] for i in chosen], chosen,
                          "use a model trained for them, or leave those particles out of the ML region with atoms=[...]")
    periodic = check_periodic(periodic, topology_or_elements, system)
    box = topology_box_nm(topology_or_elements)
    box_known_default = box is not None and np.array_equal(box, 2.0 * np.eye(3))
    return MLRegion(types=types, indices=indices, n_particles=n, periodic=periodic,
                    box_known_default=bool(box_known_default))


def _check_subset(atoms: Iterable[int], n: int) -> np.ndarray:
    try:
        arr = np.asarray(list(atoms))
    except TypeError:
        raise TypeError(f"atoms must be an iterable of particle indices, got {type(atoms).__name__}") from None
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"atoms must be integer particle indices, got {arr.dtype} values")
    arr = arr.astype(np.int64).reshape(-1)
    out_of_range = arr[(arr < 0) | (arr >= n)]
    if out_of_range.size:
        raise IndexError(f"ML-region atom index(es) {_short(out_of_range.tolist())} out of range for a system "
                         f"of {n} particles; use indices 0..{n - 1}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"ML-region atom index(es) {_short(uniq[counts > 1].tolist())} listed more than once; "
                         "list each particle once")
    return arr


def _short(values: Union[List[int], List[str]], limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"
