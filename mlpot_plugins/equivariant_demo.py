"""Demo stage of the shipped ``cu-emt`` equivariant committee (registered in ``demo.STAGES``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def cu_emt_stage(out_dir: Path, quick: bool) -> None:
    """ASE NVE MD of fcc Cu with a vacancy under cu-emt: energy drift, max force std, error vs EMT,
    and the committee's response to an out-of-distribution (10 % compressed) cell."""
    from .ase import MLPotCalculator

    _run(out_dir, quick, MLPotCalculator("cu-emt"))  # load() selects dynamic-shape specialisation


def _run(out_dir: Path, quick: bool, calc) -> None:
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from .demo import check_md

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    del atoms[0]
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    steps = 50 if quick else 200
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=2.0 * units.fs).run(steps)
    e1 = atoms.get_total_energy()
    std = calc.get_property("forces_std", atoms)
    check_md("cu-emt", e0, e1, std, len(atoms))
    ref = atoms.copy()
    ref.calc = EMT()
    err = np.sqrt(np.mean((atoms.get_forces() - ref.get_forces()) ** 2))
    print(f"[cu-emt] {len(atoms)} Cu atoms (vacancy), {steps} NVE steps of 2 fs from 600 K: energy drift "
          f"{abs(e1 - e0) / len(atoms) * 1e3:.3f} meV/atom, force RMSE vs EMT {err:.4f} eV/A, "
          f"max per-atom force std {std.max():.4f} eV/A (median {np.median(std):.4f})")
    squeezed = bulk("Cu", "fcc", a=3.61 * 0.9, cubic=True).repeat((2, 2, 2))
    squeezed.positions += np.random.default_rng(1).normal(0, 0.08, squeezed.positions.shape)
    squeezed.calc = calc
    squeezed.get_forces()
    print(f"[cu-emt] 10 % compressed cell (out of distribution): median force std "
          f"{np.median(calc.get_property('forces_std', squeezed)):.4f} eV/A")
