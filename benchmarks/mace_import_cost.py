"""Cost of an imported MACE model in our LAMMPS pair style vs the same model under MACE's own ASE calculator.

    PYTHONPATH=. .venv/bin/python benchmarks/mace_import_cost.py [--repeat 4] [--channels 32] [--steps 10]

Builds a randomly initialised ScaleShiftMACE (Cu/Au, 2 interactions, CHANNELS x (0e+1o), r_max 5 A, fp64) in
the MACE side environment, imports it with `mlpot import mace`, then times NVE MD steps of the same fcc Cu/Au
crystal (REPEAT^3 cubic fcc cells: 4 REPEAT^3 atoms) with:

* `lmp` (1 rank, one thread) + `pair_style mlpot imported.pt` ("Loop time" of `run STEPS` after `run 4`),
* ASE VelocityVerlet with MACECalculator (run in the side env, after 4 warm-up calls),
* ASE VelocityVerlet with our MLPotCalculator on the imported file.

One run each, seconds per step and the ratio LAMMPS / MACE-ASE. One thread per process (OMP_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 4
sys.path.insert(0, str(ROOT / "tests"))


def crystal(repeat: int):
    from lammps_util import cuau

    return cuau((repeat, repeat, repeat), a=3.7, seed=0, rattle=0.05)


def ase_md(atoms, calc, steps: int) -> float:
    """Seconds per VelocityVerlet step (1 fs) after WARMUP evaluations (TorchScript optimises its graph in the
    first calls)."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=__import__("numpy").random.default_rng(1))
    for _ in range(WARMUP):
        atoms.positions += 1e-3
        atoms.get_forces()
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps


def side_part(model: str, repeat: int, steps: int) -> None:
    """Runs in the MACE side environment: MACE's own calculator."""
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=model, device="cpu", default_dtype="float64")
    print(f"RESULT {ase_md(crystal(repeat), calc, steps):.6g}")


def lammps_part(plugin, model: Path, repeat: int, steps: int, work: Path) -> float:
    from lammps_util import run_lmp, write_data

    write_data(work / "system.data", crystal(repeat))
    deck = f"""units metal
atom_style atomic
plugin load {plugin}
read_data system.data
pair_style mlpot {model}
pair_coeff * * Cu Au
velocity all create 600 4928459
fix nve all nve
timestep 0.001
thermo 1000
run {WARMUP}
run {steps}
"""
    res = run_lmp(deck, work, 1, timeout=1800)
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", res.stdout)
    t, n = loops[-1]
    return float(t) / int(n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=4, help="cubic fcc cells per edge (4 -> 256 atoms)")
    p.add_argument("--channels", type=int, default=32, help="MACE feature channels per irrep")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--side", nargs=3, metavar=("MODEL", "REPEAT", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        side_part(args.side[0], int(args.side[1]), int(args.side[2]))
        return 0
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from mlpot_plugins.ase import MLPotCalculator
    from mlpot_plugins.importers.mace import import_mace, side_env
    from mlpot_plugins.lammps import build_plugin

    py = side_env().python()
    work = Path(tempfile.mkdtemp(prefix="mace-cost-"))
    model = work / "bench.model"
    subprocess.run([str(py), str(ROOT / "tests" / "mace_side.py"), "build", str(model), "0", str(args.channels), "5.0"],
                   check=True, capture_output=True)
    imported = import_mace(model, work / "bench.pt")
    n_atoms = len(crystal(args.repeat))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([str(py), __file__, "--side", str(model), str(args.repeat), str(args.steps)],
                         capture_output=True, text=True, env=env)
    t_mace = float([l for l in res.stdout.splitlines() if l.startswith("RESULT")][-1].split()[1])
    t_ours_ase = ase_md(crystal(args.repeat), MLPotCalculator(str(imported)), args.steps)
    t_lmp = lammps_part(build_plugin(), imported, args.repeat, args.steps, work)
    print(f"MACE {args.channels}x0e+{args.channels}x1o, 2 interactions, r_max 5 A, fp64; {n_atoms} atoms, "
          f"{args.steps} NVE steps, 1 thread")
    print(f"  MACE's ASE calculator       : {t_mace * 1e3:9.1f} ms/step")
    print(f"  mlpot ASE calculator        : {t_ours_ase * 1e3:9.1f} ms/step  ({t_ours_ase / t_mace:.2f} x MACE-ASE)")
    print(f"  mlpot LAMMPS (lmp, 1 rank)  : {t_lmp * 1e3:9.1f} ms/step  ({t_lmp / t_mace:.2f} x MACE-ASE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
