"""Heat Cu in OpenMM with the trained `cu-emt` committee until its uncertainty says "I am extrapolating",
then stop and save that frame for retraining.

    python examples/openmm_cu_emt_heating.py [--out cu-emt-heating] [--quick]

`cu-emt` (shipped) is an equivariant K=4 committee trained on EMT Cu MD at 300-1200 K. The script

1. builds fcc Cu with a vacancy at the model's own equilibrium lattice constant;
2. equilibrates at 600 K (inside the training range) with an ``UncertaintyReporter`` that only logs, and
   takes the largest per-atom force std seen there as the in-distribution level;
3. heats in 300 K stages (Langevin thermostat) with a second reporter whose threshold is ``--factor`` times
   that level and ``action="stop"``: when an atom crosses it the run stops with the atoms named;
4. writes the stopping frame to ``extrapolating.extxyz`` (add it, labelled, to the training set) and checks
   the alarm against the truth: the committee's force error vs ASE's EMT at the alarm frame vs at 600 K.

Files in --out: ``equilibrate.txt``/``.npy`` and ``heating.txt``/``.npy`` (per report: step, max and mean
per-atom std, worst atoms), ``thermo.csv``, ``extrapolating.extxyz``. ``--quick`` (or MLPOT_EXAMPLE_QUICK=1)
uses short stages, for smoke tests.
"""
import argparse
import os
from pathlib import Path

import torch  # import torch before openmm-torch
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.crystals import equilibrium_lattice, openmm_crystal
from mlpot_plugins.openmm import UncertaintyExceeded, UncertaintyReporter, create_force

MODEL = "cu-emt"


def force_error_vs_emt(atoms, positions_nm) -> float:
    """RMS force error (eV/A) of the committee mean vs ASE EMT at these positions."""
    frame = atoms.copy()
    frame.positions = positions_nm * 10.0
    frame.calc = EMT()
    ref = frame.get_forces()
    frame.calc = MLPotCalculator(MODEL)
    return float(np.sqrt(np.mean((frame.get_forces() - ref) ** 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="cu-emt-heating")
    parser.add_argument("--factor", type=float, default=3.0,
                        help="alarm at this multiple of the largest per-atom std seen at 600 K")
    parser.add_argument("--t-max", type=float, default=3600.0, help="last heating stage, K")
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("MLPOT_EXAMPLE_QUICK")),
                        help="short stages (smoke test; also MLPOT_EXAMPLE_QUICK=1)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # 31 atoms: more threads only add overhead
    equil_steps, stage_steps, every = (80, 30, 10) if args.quick else (1000, 250, 25)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    a0 = equilibrium_lattice(MODEL)
    atoms = bulk("Cu", "fcc", a=a0, cubic=True).repeat((2, 2, 2))
    del atoms[0]  # a vacancy
    topology, system = openmm_crystal(atoms)  # one residue per atom, masses, periodic box
    system.addForce(create_force(MODEL, topology))
    integrator = openmm.LangevinMiddleIntegrator(600 * unit.kelvin, 10 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(7)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                                {"Threads": "1"})
    simulation.context.setPositions(atoms.positions / 10.0 * unit.nanometer)
    simulation.context.setVelocitiesToTemperature(600 * unit.kelvin, 7)
    simulation.reporters.append(app.StateDataReporter(str(out / "thermo.csv"), every, step=True,
                                                      potentialEnergy=True, temperature=True))

    # 1. the in-distribution level: 600 K, inside the 300-1200 K training range; log only
    log = UncertaintyReporter(MODEL, out / "equilibrate.txt", every)
    simulation.reporters.append(log)
    simulation.step(equil_steps)
    log.close()
    simulation.reporters.remove(log)
    level = log.max_seen
    positions_600 = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value
    threshold = args.factor * level
    print(f"{MODEL}: a0 = {a0:.4f} A; {len(atoms)} atoms; 600 K for {equil_steps} steps: largest per-atom force std "
          f"{level:.4f} eV/A -> alarm threshold {threshold:.4f} eV/A")

    # 2. heat in stages until an atom's std crosses the threshold
    alarm = UncertaintyReporter(MODEL, out / "heating.txt", every, threshold=threshold, action="stop")
    simulation.reporters.append(alarm)
    temperature = 600.0
    try:
        while temperature < args.t_max:
            temperature += 300.0
            integrator.setTemperature(temperature * unit.kelvin)
            simulation.step(stage_steps)
        print(f"no alarm up to {temperature:.0f} K (largest std {alarm.max_seen:.4f} eV/A)")
        return 1
    except UncertaintyExceeded as exc:
        state = simulation.context.getState(getPositions=True)
        frame = atoms.copy()
        frame.positions = state.getPositions(asNumpy=True)._value * 10.0
        frame.info.update(step=exc.step, thermostat_K=temperature)
        write(out / "extrapolating.extxyz", frame)
        err_alarm, err_600 = force_error_vs_emt(atoms, frame.positions / 10.0), force_error_vs_emt(atoms, positions_600)
        print(f"ALARM at step {exc.step}, thermostat {temperature:.0f} K (trained up to 1200 K): atoms {exc.atoms[:5]} "
              f"std {max(exc.std):.4f} eV/A > {threshold:.4f}")
        print(f"force RMSE vs EMT: {err_alarm:.4f} eV/A at the alarm frame, {err_600:.4f} eV/A at 600 K "
              f"({err_alarm / err_600:.1f}x): the alarm is real. Frame saved to {out / 'extrapolating.extxyz'}; "
              "label it (EMT here) and add it to the training set.")
        return 0
    finally:
        alarm.close()


if __name__ == "__main__":
    raise SystemExit(main())
