"""Alanine dipeptide in explicit water, ML/MM: the peptide on the shipped `ala2-xtb` committee (GFN2-xTB),
the water on TIP3P, through openmm-ml's ``MLPotential("mlpot").createMixedSystem``; the run stops when the
committee's per-atom force uncertainty crosses its calibrated threshold.

    python examples/openmm_ala2_water.py [--out ala2-water] [--steps 5000] [--padding 1.0] [--quick]

1. reads ``examples/ala2.pdb`` (ACE-ALA-NME, amber14 residue/atom names, the GFN2-xTB C7eq minimum) and
   solvates it with ``Modeller.addSolvent`` in a cubic TIP3P box (``--padding`` nm around the peptide);
2. builds the all-MM system from OpenMM's own ``amber14-all.xml`` + ``amber14/tip3p.xml`` (PME, 0.9 nm
   cutoff, or 0.49 x the box if smaller; H bonds constrained), then ``createMixedSystem`` replaces the peptide's internal MM terms by the
   ML committee (mechanical embedding: peptide-water Coulomb and LJ stay MM);
3. minimises, runs Langevin dynamics (``LangevinMiddleIntegrator``, 300 K, 1/ps, 1 fs) with a PDB of the
   start, a DCD trajectory, a CSV of energies/temperature, and an ``UncertaintyReporter`` on the 22 ML atoms
   with ``threshold`` = the model's calibrated ``extra["uncertainty_threshold"]`` and ``action="stop"``.

On an alarm it prints the step and atoms and saves the frame (``extrapolating.pdb``): the configuration to
label with xTB and add to the training set. Files in --out: ``start.pdb``, ``trajectory.dcd``,
``thermo.csv``, ``uncertainty.txt``/``.npy``. ``--quick`` (or MLPOT_EXAMPLE_QUICK=1): a small box and a few
steps, for smoke tests.
"""
import argparse
import os
from pathlib import Path

import torch  # import torch before openmm-torch
import openmm
import openmm.app as app
import openmm.unit as unit
from openmmml import MLPotential

from mlpot_plugins.cli_types import positive_float, positive_int
from mlpot_plugins.openmm import UncertaintyExceeded, UncertaintyReporter
from mlpot_plugins.pretrained.build_ala2_xtb import uncertainty_threshold

MODEL = "ala2-xtb"
PDB = Path(__file__).resolve().parent / "ala2.pdb"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="ala2-water")
    parser.add_argument("--steps", type=positive_int, default=5000, help="MD steps of 1 fs")
    parser.add_argument("--padding", type=positive_float, default=1.0, help="water around the peptide, nm")
    parser.add_argument("--threshold", type=positive_float, default=None,
                        help="stop threshold, eV/A (default: the model's calibrated one)")
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("MLPOT_EXAMPLE_QUICK")),
                        help="small box, few steps (smoke test; also MLPOT_EXAMPLE_QUICK=1)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.padding = min(args.steps, 20), min(args.padding, 0.5)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pdb = app.PDBFile(str(PDB))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addSolvent(forcefield, model="tip3p", padding=args.padding * unit.nanometer, boxShape="cube")
    topology = modeller.topology
    box = topology.getPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer)
    cutoff = min(0.9, round(0.49 * box, 2))  # PME needs cutoff <= half the box (the --quick box is small)
    mm_system = forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff * unit.nanometer,
                                        constraints=app.HBonds, rigidWater=True)
    peptide = [a.index for a in topology.atoms() if a.residue.name in ("ACE", "ALA", "NME")]
    potential = MLPotential("mlpot", modelPath=MODEL)
    system = potential.createMixedSystem(topology, mm_system, peptide)
    threshold = uncertainty_threshold(MODEL) if args.threshold is None else args.threshold
    n_water = sum(1 for r in topology.residues() if r.name == "HOH")
    print(f"{len(peptide)} ML atoms ({MODEL}) + {n_water} TIP3P waters in a {box:.2f} nm box (PME cutoff "
          f"{cutoff:.2f} nm); "
          f"stop threshold {threshold:.3f} eV/A")

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(11)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                                {"Threads": "1"})
    simulation.context.setPositions(modeller.positions)
    simulation.minimizeEnergy(maxIterations=50 if args.quick else 500)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 11)
    state = simulation.context.getState(getPositions=True, getEnergy=True)
    with open(out / "start.pdb", "w") as f:
        app.PDBFile.writeFile(topology, state.getPositions(), f)
    every = 5 if args.quick else 100
    simulation.reporters.append(app.DCDReporter(str(out / "trajectory.dcd"), every))
    simulation.reporters.append(app.StateDataReporter(str(out / "thermo.csv"), every, step=True,
                                                      potentialEnergy=True, temperature=True, speed=True))
    watch = UncertaintyReporter(MODEL, out / "uncertainty.txt", every, threshold=threshold, action="stop",
                                atoms=peptide)
    simulation.reporters.append(watch)
    try:
        simulation.step(args.steps)
        print(f"{args.steps} steps, largest per-atom force std {watch.max_seen:.4f} eV/A (threshold {threshold:.3f})")
        return 0
    except UncertaintyExceeded as exc:
        state = simulation.context.getState(getPositions=True)
        with open(out / "extrapolating.pdb", "w") as f:
            app.PDBFile.writeFile(topology, state.getPositions(), f)
        print(f"stopped: step {exc.step}, atoms {exc.atoms[:5]} with force std {max(exc.std):.4f} eV/A > "
              f"{threshold:.3f}; frame saved to {out / 'extrapolating.pdb'} (label it with xTB and retrain)")
        return 0
    finally:
        watch.close()


if __name__ == "__main__":
    raise SystemExit(main())
