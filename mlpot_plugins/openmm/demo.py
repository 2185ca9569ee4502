"""``mlpot demo`` stage: a short OpenMM NVE run of the shipped committee with the uncertainty reporter."""
from __future__ import annotations

import time
from pathlib import Path


def openmm_stage(out_dir: Path, quick: bool) -> None:
    """fcc Cu (vacancy, 3 Au) NVE in OpenMM (best available backend): steps/s, energy drift, max per-atom std."""
    import torch  # before openmm-torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 107-atom model gains nothing from more; on a busy machine they thrash
    try:
        _run(out_dir, quick)
    finally:
        torch.set_num_threads(threads)


def _run(out_dir: Path, quick: bool) -> None:
    import openmm
    import openmm.app as app
    from ase.build import bulk

    from .. import units
    from ..crystals import equilibrium_lattice, openmm_crystal
    from .force import create_force
    from .reporter import UncertaintyReporter

    model = "morse-cuau-committee"
    atoms = bulk("Cu", "fcc", a=equilibrium_lattice(model), cubic=True).repeat((3, 3, 3))  # zero pressure
    atoms.symbols[[5, 17, 40]] = "Au"
    del atoms[0]
    top, system = openmm_crystal(atoms)
    force = create_force(model, top)
    system.addForce(force)
    integrator = openmm.VerletIntegrator(0.001)  # 1 fs NVE
    sim = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
    sim.context.setVelocitiesToTemperature(300, 0)
    out = Path(out_dir) / "openmm"
    out.mkdir(parents=True, exist_ok=True)
    reporter = UncertaintyReporter(model, out / "uncertainty.txt", 10, pdb=out / "uncertainty.pdb")
    sim.reporters.append(reporter)

    def total():
        st = sim.context.getState(getEnergy=True)
        return (st.getPotentialEnergy() + st.getKineticEnergy())._value  # kJ/mol

    steps = 50 if quick else 200
    sim.step(1)  # build the TorchScript module before timing
    e0, t0 = total(), time.perf_counter()
    sim.step(steps)
    elapsed = time.perf_counter() - t0
    drift = abs(total() - e0) / len(atoms) * units.EV_PER_KJ_PER_MOL * 1e3
    reporter.close()
    print(f"[openmm] {model} ({force.mlpot_backend} backend), {len(atoms)} atoms, {steps} NVE steps of 1 fs on the CPU platform: "
          f"{steps / elapsed:.1f} steps/s (uncertainty report every 10), energy drift {drift:.4f} meV/atom, max per-atom force std "
          f"{reporter.max_seen:.4f} eV/A (files in {out})")
