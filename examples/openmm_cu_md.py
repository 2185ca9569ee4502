"""OpenMM MD of a Cu/Au crystal with an exported mlpot model, watching the committee's uncertainty.

Copy this script and change MODEL / the structure. Run:

    python examples/openmm_cu_md.py [--model morse-cuau-committee] [--steps 200] [--out openmm-run]

It builds an fcc Cu supercell with a few Au atoms and a vacancy at the model's own zero-pressure
lattice constant (not Cu's experimental 3.61 A, where the shipped Morse model is under ~16 GPa), adds
the model as a TorchForce (two lines: ``create_force`` + ``system.addForce``), runs Langevin MD at
300 K on the CPU platform, and lets ``UncertaintyReporter`` write the per-atom force std (eV/A) every
``--report`` steps, stopping the run with a clear message if any atom exceeds ``--threshold``.
``--quick`` (or MLPOT_EXAMPLE_QUICK=1) runs 40 steps, for smoke tests.
"""
import argparse
import os
from pathlib import Path

import torch  # import torch before openmm-torch
import openmm
import openmm.app as app
import openmm.unit as unit
from ase.build import bulk

from mlpot_plugins.crystals import equilibrium_lattice, openmm_crystal
from mlpot_plugins.openmm import UncertaintyExceeded, UncertaintyReporter, create_force


# morse-cuau-committee at its equilibrium lattice and 300 K: the largest per-atom force std over 4 ps is
# 0.35-0.55 eV/A (107 atoms; 2-core VM run, report every 50 steps), so an alarm at 1.0 means "unlike anything
# in this run", not noise
THRESHOLD = 1.0
THRESHOLD_WHY = "about twice the largest per-atom std of a 4 ps run at 300 K"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="morse-cuau-committee", help="exported .pt file or shipped name")
    parser.add_argument("--steps", type=int, default=2000, help="2 fs steps (default 4 ps)")
    parser.add_argument("--report", type=int, default=50, help="uncertainty report interval, steps")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"per-atom force std alarm, eV/A (default {THRESHOLD}: {THRESHOLD_WHY})")
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("MLPOT_EXAMPLE_QUICK")),
                        help="40 steps, a report every 10 (smoke test; also MLPOT_EXAMPLE_QUICK=1)")
    parser.add_argument("--out", default="openmm-run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (more help only for large systems; on a busy machine they thrash)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.report = 40, 10
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    a0 = equilibrium_lattice(args.model)  # the model's zero-pressure fcc Cu lattice constant
    print(f"{args.model}: fcc Cu equilibrium lattice constant {a0:.4f} A")
    atoms = bulk("Cu", "fcc", a=a0, cubic=True).repeat((3, 3, 3))
    atoms.symbols[[5, 17, 40]] = "Au"
    del atoms[0]  # a vacancy
    topology, system = openmm_crystal(atoms)  # one residue per atom, masses, periodic box
    system.addForce(create_force(args.model, topology))  # the model as a TorchForce

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)  # before the Context exists, or it is ignored
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                                {"Threads": str(args.threads)})
    simulation.context.setPositions(atoms.positions / 10.0 * unit.nanometer)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    simulation.reporters.append(app.StateDataReporter(str(out / "thermo.csv"), args.report, step=True,
                                                      potentialEnergy=True, temperature=True, speed=True))
    uncertainty = UncertaintyReporter(args.model, out / "uncertainty.txt", args.report, threshold=args.threshold,
                                      action="stop", pdb=out / "uncertainty.pdb")
    simulation.reporters.append(uncertainty)
    try:
        simulation.step(args.steps)
    except UncertaintyExceeded as exc:
        print(f"stopped: {exc}")
    finally:
        uncertainty.close()
    print(f"{simulation.currentStep} steps; max per-atom force std seen {uncertainty.max_seen:.4f} eV/A; "
          f"files in {out}/ (thermo.csv, uncertainty.txt/.npy, uncertainty.pdb with std as B-factors)")


if __name__ == "__main__":
    main()
