"""Deterministic reference datasets labelled by ASE's EMT calculator (``mlpot data emt``).

Every configuration is a function of ``seed`` only (numpy Generator streams, seeded Langevin), so a set
regenerates bit-for-bit in seconds. Sets:

* ``train`` (Cu or CuAu): Langevin MD at 300/600/900/1200 K (32- and 108-atom cells), strained + rattled
  cells, vacancies, (100)/(111) slabs. Use different seeds for training and held-out test sets.
* ``ood-hot``: MD at 2400 K (twice the highest training temperature).
* ``ood-compressed``: lattice constant compressed by 10 %, rattled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT

from .refdata import label, langevin_frames, write  # noqa: F401  (write: the dataset writer, used by the CLI)

A_CU, A_AU = 3.61, 4.08
TRAIN_TEMPERATURES = (300.0, 600.0, 900.0, 1200.0)
SYSTEMS = ("Cu", "CuAu")
SETS = ("train", "ood-hot", "ood-compressed")


def _label(atoms: Atoms, config_type: str) -> Atoms:
    """Copy ``atoms`` with EMT energy/forces/stress frozen in a SinglePointCalculator."""
    return label(atoms, EMT(), config_type=config_type)


def _crystal(system: str, rng: np.random.Generator, repeat: int, scale: float = 1.0) -> Atoms:
    if system == "Cu":
        return bulk("Cu", "fcc", a=A_CU * scale, cubic=True).repeat(repeat)
    x = rng.choice([0.25, 0.5])
    atoms = bulk("Cu", "fcc", a=((1 - x) * A_CU + x * A_AU) * scale, cubic=True).repeat(repeat)
    n_au = int(round(x * len(atoms)))
    symbols = np.array(["Cu"] * len(atoms))
    symbols[rng.permutation(len(atoms))[:n_au]] = "Au"
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def _md_frames(atoms: Atoms, temperature: float, n_frames: int, every: int, rng: np.random.Generator,
               config_type: str) -> List[Atoms]:
    return langevin_frames(atoms, EMT(), temperature, n_frames, every, rng,
                           lambda a, step: _label(a, config_type))  # 3*every warm-up steps leave the lattice


def _train_set(system: str, rng: np.random.Generator, scale: int) -> List[Atoms]:
    frames: List[Atoms] = []
    for t in TRAIN_TEMPERATURES:
        frames += _md_frames(_crystal(system, rng, 2), t, 24 * scale, 10, rng, f"md{int(t)}K")
        frames += _md_frames(_crystal(system, rng, 3), t, 4 * scale, 10, rng, f"md{int(t)}K-108")
    for _ in range(30 * scale):  # strained cells: random symmetric strain up to +-4 %, rattled
        atoms = _crystal(system, rng, 2)
        eps = rng.uniform(-0.04, 0.04, (3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        frames.append(_label(atoms, "strained"))
    for t in (600.0, 900.0):  # vacancies
        atoms = _crystal(system, rng, 2)
        del atoms[[int(i) for i in rng.choice(len(atoms), size=1 + int(t > 700), replace=False)]]
        frames += _md_frames(atoms, t, 12 * scale, 10, rng, "vacancy")
    for build in (fcc100, fcc111):  # surfaces: 4-layer slabs with 5 A vacuum each side
        slab = build("Cu", size=(3, 3, 4), a=A_CU, vacuum=5.0, periodic=True)
        if system == "CuAu":
            sym = np.array(slab.get_chemical_symbols())
            sym[rng.permutation(len(slab))[: len(slab) // 4]] = "Au"
            slab.set_chemical_symbols(list(sym))
        for t in (300.0, 700.0):
            frames += _md_frames(slab, t, 8 * scale, 10, rng, f"surface-{build.__name__[3:]}")
    return frames


def _ood_hot(system: str, rng: np.random.Generator, scale: int) -> List[Atoms]:
    return _md_frames(_crystal(system, rng, 2), 2 * max(TRAIN_TEMPERATURES), 20 * scale, 10, rng, "md2400K")


def _ood_compressed(system: str, rng: np.random.Generator, scale: int) -> List[Atoms]:
    frames = []
    for _ in range(20 * scale):
        atoms = _crystal(system, rng, 2, scale=0.9)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        frames.append(_label(atoms, "compressed10"))
    return frames


BUILDERS: Dict[str, Callable[[str, np.random.Generator, int], List[Atoms]]] = {
    "train": _train_set, "ood-hot": _ood_hot, "ood-compressed": _ood_compressed}


def generate(system: str = "Cu", which: str = "train", seed: int = 0, scale: int = 1) -> List[Atoms]:
    """Labelled configurations of one set; identical for identical arguments."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown EMT system {system!r}; choose one of {list(SYSTEMS)}")
    if which not in BUILDERS:
        raise ValueError(f"unknown EMT set {which!r}; choose one of {list(BUILDERS)}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return BUILDERS[which](system, np.random.default_rng(seed), scale)
