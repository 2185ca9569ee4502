"""Labelled structures read with ASE and turned into contract-shaped tensors (neighbour lists built once)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from ..neighbors import neighbor_list


@dataclass
class Structure:
    positions: torch.Tensor  # [N, 3]
    types: torch.Tensor  # [N] int64
    edge_index: torch.Tensor  # [2, E]
    shifts: torch.Tensor  # [E, 3]
    energy: float
    forces: torch.Tensor  # [N, 3]
    stress: Optional[torch.Tensor]  # [3, 3] (eV/A^3, ASE sign) or None
    volume: float
    config_type: str

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])


def read_frames(path) -> list:
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {path} does not exist; generate one with `mlpot data emt --out {path}`")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # truncated/garbled files raise many kinds (XYZError, ValueError, IndexError...)
        raise ValueError(f"dataset {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                         "the file is truncated or not extxyz: regenerate it (e.g. `mlpot data emt --out "
                         f"{path}`) or fix it") from None
    if not frames:
        raise ValueError(f"dataset {path} holds no structures")
    return frames


def to_structures(frames: Sequence, species: List[str], cutoff: float, dtype: torch.dtype,
                  source: str = "dataset") -> List[Structure]:
    index = {s: i for i, s in enumerate(species)}
    out = []
    for n, atoms in enumerate(frames):
        missing = sorted(set(atoms.get_chemical_symbols()) - set(index))
        if missing:
            raise ValueError(f"{source}: structure {n} has element(s) {missing} not in model species {species}; "
                             "add them to model.species in the config")
        calc = atoms.calc
        if calc is None or "energy" not in calc.results or "forces" not in calc.results:
            raise ValueError(f"{source}: structure {n} has no energy/forces labels; write them to the extxyz "
                             "(ase.io.write with a calculator attached)")
        if not (np.isfinite(calc.results["energy"]) and np.isfinite(calc.results["forces"]).all()
                and np.isfinite(atoms.positions).all()):
            raise ValueError(f"{source}: structure {n} has NaN/inf positions, energy or forces; remove it or "
                             "regenerate the labels")
        ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        stress = None
        periodic = bool(atoms.pbc.all())
        if periodic and "stress" in calc.results:
            s = np.asarray(calc.results["stress"], dtype=np.float64)
            if s.shape == (6,):
                xx, yy, zz, yz, xz, xy = s
                s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            stress = torch.as_tensor(s, dtype=dtype)
        out.append(Structure(
            positions=torch.as_tensor(atoms.positions, dtype=dtype),
            types=torch.as_tensor([index[s] for s in atoms.get_chemical_symbols()], dtype=torch.int64),
            edge_index=torch.as_tensor(ei), shifts=torch.as_tensor(sh, dtype=dtype),
            energy=float(calc.results["energy"]), forces=torch.as_tensor(calc.results["forces"], dtype=dtype),
            stress=stress, volume=float(atoms.get_volume()) if periodic else 0.0,
            config_type=str(atoms.info.get("config_type", ""))))
    return out


def species_statistics(structures: Sequence[Structure], n_species: int):
    """Per-species energy shift (least squares on composition) and scale (force RMS), average neighbours."""
    counts = np.zeros((len(structures), n_species))
    energies = np.array([s.energy for s in structures])
    for i, s in enumerate(structures):
        counts[i] = np.bincount(s.types.numpy(), minlength=n_species)
    shift, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    forces = torch.cat([s.forces for s in structures])
    force_rms = float(forces.pow(2).mean().sqrt())
    avg_neighbors = float(np.mean([s.edge_index.shape[1] / s.n_atoms for s in structures]))
    return shift, np.full(n_species, max(force_rms, 1e-3)), avg_neighbors


def split(structures: Sequence[Structure], val_fraction: float, seed: int):
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(len(structures))
    n_val = max(1, int(round(val_fraction * len(structures))))
    if n_val >= len(structures):
        raise ValueError(f"{len(structures)} structures are too few to split off a validation set")
    return [structures[i] for i in perm[n_val:]], [structures[i] for i in perm[:n_val]]
