"""``mlpot demo``: an end-to-end run of every capability on the models shipped in the package.

Each stage is a function ``stage(out_dir: Path, quick: bool) -> None`` printing what it measured;
feature modules add theirs to ``STAGES``.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np

STAGES = ["mlpot_plugins.demo:ase_stage", "mlpot_plugins.openmm.demo:openmm_stage",
          "mlpot_plugins.lammps:lammps_stage", "mlpot_plugins.equivariant_demo:cu_emt_stage",
          "mlpot_plugins.holstein.cli:holstein_stage"]


def ase_stage(out_dir: Path, quick: bool) -> None:
    """ASE NVE MD of fcc Cu with a vacancy under the shipped committee: drift and max uncertainty."""
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from .ase import MLPotCalculator

    import torch

    torch.set_num_threads(1)  # a few hundred atoms: threads only add overhead
    model = "morse-cuau-committee"
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    del atoms[0]
    atoms.calc = MLPotCalculator(model)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    steps = 50 if quick else 200
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=2.0 * units.fs).run(steps)
    e1 = atoms.get_total_energy()
    std = atoms.calc.get_property("forces_std", atoms)
    print(f"[ase] {model}: {len(atoms)} Cu atoms, {steps} NVE steps of 2 fs: "
          f"energy drift {abs(e1 - e0) / len(atoms) * 1e3:.3f} meV/atom, "
          f"max per-atom force std {std.max():.4f} eV/A (atom {int(std.argmax())})")


def run_demo(out: str, quick: bool = False, only=None) -> int:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [spec.split(":")[1] for spec in STAGES]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"unknown demo stage(s) {unknown}; stages are {names}")
    for spec in STAGES:
        if only and spec.split(":")[1] not in only:
            continue
        module, func = spec.split(":")
        t0 = time.perf_counter()
        getattr(importlib.import_module(module), func)(out_dir, quick)
        print(f"    ({spec.split(':')[1]} took {time.perf_counter() - t0:.1f} s)")
    print(f"demo finished; files in {out_dir.resolve()}")
    return 0
