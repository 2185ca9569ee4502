"""Exploration walkers in LAMMPS and OpenMM, through the package's own engine adapters.

Both follow the ASE walker (``explore._ase_walker``): Langevin dynamics at ``temperature`` with the
committee's mean forces, and every ``check_every`` steps ``record(atoms, forces_std, step)`` with the
engine's own per-atom uncertainty output:

* LAMMPS: ``pair_style mlpot MODEL`` + ``compute u all mlpot/atom`` (column 1: calibrated per-atom force std,
  evaluated on the thermo step that ends each ``run``), ``fix langevin`` + ``fix nve``, ``units metal``;
  periodic cells only (checked with the config; a molecule in vacuum: engine ase or openmm).
* OpenMM: ``create_force`` (openmm-torch ``TorchForce``) + ``LangevinMiddleIntegrator`` on the CPU platform,
  per-atom std from ``UncertaintyReporter`` (its ``last_std`` after the report at each check).

The friction is ``explore.friction`` in ASE's 1/time unit (as ASE's Langevin), converted for each engine.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from ase import units as ase_units


def friction_per_ps(settings) -> float:
    return float(settings["friction"]) * 1000.0 * ase_units.fs


def _species(model_path, cache) -> list:
    if "species" not in cache:
        from ..model_file import load

        cache["species"] = list(load(model_path).species)
    return cache["species"]


def lammps_walker(model_path, atoms, temperature, settings, rng, record, on_steps, cache) -> None:
    from ase.calculators.lammps import Prism
    from ase.io.lammpsdata import write_lammps_data

    from ..lammps import lammps_instance

    species = _species(model_path, cache)
    every, n_checks = int(settings["check_every"]), int(settings["steps"]) // int(settings["check_every"])
    prism = Prism(atoms.cell.array)
    seed = int(rng.integers(1, 2 ** 30))
    with tempfile.TemporaryDirectory(prefix="mlpot-learn-lmp-") as tmp:
        data = Path(tmp) / "start.data"
        with open(data, "w") as fh:
            write_lammps_data(fh, atoms, specorder=species, masses=True, units="metal", prismobj=prism)
        lmp = lammps_instance()
        try:
            for cmd in ["units metal", "atom_style atomic", "boundary p p p", "atom_modify map array sort 0 0",
                        f"read_data {data}", f"pair_style mlpot {model_path}", f"pair_coeff * * {' '.join(species)}",
                        "compute u all mlpot/atom", f"timestep {float(settings['timestep_fs']) / 1000.0:.10g}",
                        f"velocity all create {temperature} {seed} dist gaussian mom yes rot no",
                        "fix nve all nve",
                        f"fix heat all langevin {temperature} {temperature} {1.0 / friction_per_ps(settings):.10g} "
                        f"{seed + 1} zero yes",
                        "thermo_style custom step pe c_u[1]", f"thermo {every}"]:
                lmp.command(cmd)
            n = lmp.get_natoms()
            frame = atoms.copy()
            for c in range(n_checks):
                lmp.command(f"run {every}")
                if on_steps:
                    on_steps(every)
                ids = np.asarray(lmp.numpy.extract_atom("id"))[:n]
                order = np.argsort(ids)
                x = np.asarray(lmp.numpy.extract_atom("x"))[:n][order]
                sigma = np.asarray(lmp.numpy.extract_compute("u", 1, 2))[:n, 0][order]
                frame.positions = prism.vector_to_ase(x, wrap=True)
                record(frame, sigma.copy(), (c + 1) * every)
        finally:
            lmp.close()


def openmm_walker(model_path, atoms, temperature, settings, rng, record, on_steps, cache) -> None:
    import torch  # noqa: F401  (before openmm-torch)
    import openmm
    import openmm.app as app
    import openmm.unit as u

    from .. import units
    from ..openmm import UncertaintyReporter, create_force

    every, n_checks = int(settings["check_every"]), int(settings["steps"]) // int(settings["check_every"])
    top = app.Topology()
    chain = top.addChain()
    for s in atoms.get_chemical_symbols():
        top.addAtom(s, app.Element.getBySymbol(s), top.addResidue(s, chain))
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))
    if atoms.pbc.any():
        box = [openmm.Vec3(*v) for v in atoms.cell.array * units.NM_PER_ANGSTROM]
        top.setPeriodicBoxVectors(box)
        system.setDefaultPeriodicBoxVectors(*box)
    system.addForce(create_force(str(model_path), top))
    if not atoms.pbc.any():
        system.addForce(openmm.CMMotionRemover())
    integ = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, friction_per_ps(settings) / u.picosecond,
                                            float(settings["timestep_fs"]) * u.femtoseconds)
    seed = int(rng.integers(1, 2 ** 30))
    integ.setRandomNumberSeed(seed)
    sim = app.Simulation(top, system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
    sim.context.setVelocitiesToTemperature(temperature * u.kelvin, seed + 1)
    reporter = UncertaintyReporter(str(model_path), io.StringIO(), every)
    sim.reporters.append(reporter)
    frame = atoms.copy()
    for c in range(n_checks):
        sim.step(every)
        if on_steps:
            on_steps(every)
        pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
        frame.positions = np.asarray(pos) / units.NM_PER_ANGSTROM
        if atoms.pbc.all():
            frame.wrap()
        record(frame, np.asarray(reporter.last_std).copy(), (c + 1) * every)
