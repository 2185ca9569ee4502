"""Shared pieces of the reference-data generators (``mlpot data emt``, ``mlpot data xtb``).

* ``label(atoms, calc, **info)``: a copy of ``atoms`` with ``calc``'s energy and forces (and stress for
  periodic cells) frozen in a SinglePointCalculator, ``info`` added.
* ``langevin_frames(...)``: seeded Langevin MD with a labelling function called every ``every`` steps.
* ``round_to_written(atoms)``: positions rounded to what extxyz writes (8 decimals), so a label computed
  afterwards belongs to the geometry in the file, not to one 1e-9 Å away.
* ``write(path, frames)``: extxyz through ``runsafe.atomic_write`` (never half a file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation


def label(atoms: Atoms, calc, **info) -> Atoms:
    """Copy ``atoms`` with ``calc``'s energy/forces/stress frozen in a SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    stress = atoms.get_stress() if atoms.pbc.all() else None
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
    atoms.info.pop("adsorbate_info", None)
    atoms.info.update(info)
    return atoms


def round_to_written(atoms: Atoms) -> Atoms:
    """``atoms`` with positions equal to what ``%16.8f`` (extxyz) writes and reads back."""
    atoms.positions = np.array([[float(f"{x:.8f}") for x in row] for row in atoms.positions])
    return atoms


def langevin_frames(atoms: Atoms, calc, temperature: float, n_frames: int, every: int,
                    rng: np.random.Generator, label_frame: Callable[[Atoms, int], Atoms],
                    timestep_fs: float = 4.0, friction: float = 0.02, warmup: Optional[int] = None,
                    molecule: bool = False, on_steps: Optional[Callable[[int], None]] = None) -> List[Atoms]:
    """``n_frames`` snapshots of seeded Langevin MD at ``temperature`` K, one every ``every`` steps after
    ``warmup`` steps (default ``3 * every``). ``friction`` in 1/ASE-time; ``molecule`` removes the
    centre-of-mass motion and rotation of the initial velocities and fixes the centre of mass (FixCom).
    ``label_frame(atoms, md_step)`` makes the stored frame; ``on_steps(n)`` reports progress."""
    atoms = atoms.copy()
    atoms.calc = calc
    if molecule:
        from ase.constraints import FixCom

        atoms.set_constraint(FixCom())
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    if molecule:
        Stationary(atoms)
        ZeroRotation(atoms)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature, friction=friction, rng=rng,
                   fixcm=False)
    warmup = 3 * every if warmup is None else warmup
    dyn.run(warmup)
    if on_steps:
        on_steps(warmup)
    frames = []
    for _ in range(n_frames):
        dyn.run(every)
        if on_steps:
            on_steps(every)
        snapshot = atoms.copy()
        snapshot.set_constraint()
        frames.append(label_frame(snapshot, dyn.nsteps))
    return frames


def write(path: Path, frames: List[Atoms]) -> Path:
    import ase.io

    from .runsafe import atomic_write

    return atomic_write(path, lambda tmp: ase.io.write(tmp, frames, format="extxyz"))
