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
          "mlpot_plugins.byom_demo:byom_stage", "mlpot_plugins.holstein.cli:holstein_stage",
          "mlpot_plugins.holstein.learn:learn_stage"]


def ase_stage(out_dir: Path, quick: bool) -> None:
    """ASE NVE MD of fcc Cu with a vacancy under the shipped committee: drift and max uncertainty."""
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from .ase import MLPotCalculator
    from .crystals import equilibrium_lattice

    import torch

    torch.set_num_threads(1)  # a few hundred atoms: threads only add overhead
    model = "morse-cuau-committee"
    a0 = equilibrium_lattice(model)  # the model's own lattice constant (Cu's 3.61 A is ~16 GPa for it)
    atoms = bulk("Cu", "fcc", a=a0, cubic=True).repeat((3, 3, 3))
    del atoms[0]
    atoms.calc = MLPotCalculator(model)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    steps = 50 if quick else 200
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=2.0 * units.fs).run(steps)
    e1 = atoms.get_total_energy()
    std = atoms.calc.get_property("forces_std", atoms)
    check_md(model, e0, e1, std, len(atoms))
    print(f"[ase] {model}: {len(atoms)} Cu atoms at its lattice constant {a0:.3f} A, {steps} NVE steps of 2 fs: "
          f"energy drift {abs(e1 - e0) / len(atoms) * 1e3:.3f} meV/atom, "
          f"max per-atom force std {std.max():.4f} eV/A (atom {int(std.argmax())})")


def check_md(label: str, e0: float, e1: float, std, n_atoms: int, max_drift_ev_per_atom: float = 0.05) -> None:
    """Stop a demo stage whose MD blew up (non-finite energy or uncertainty, or a runaway energy drift)
    instead of printing a meaningless number."""
    from .runsafe import DivergenceError, check_finite

    fix = "the model or the time step is unsuitable; report it with the demo output"
    check_finite(e1, f"[{label}] the total energy after the MD", fix)
    check_finite(float(np.max(std)), f"[{label}] the largest force std", fix)
    if abs(e1 - e0) / n_atoms > max_drift_ev_per_atom:
        raise DivergenceError(f"[{label}] the NVE energy drifted by {abs(e1 - e0) / n_atoms:.3g} eV/atom "
                              f"(> {max_drift_ev_per_atom}): the MD is unstable; {fix}")


def run_demo(out: str, quick: bool = False, only=None) -> int:
    from .runsafe import check_output_dir

    out_dir = check_output_dir(out, "demo --out folder")
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
