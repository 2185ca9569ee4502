"""LAMMPS overhead of pair_style mlpot: time per MD step in `lmp` (1 and 2 MPI ranks) divided by the
bare model's energy+forces evaluation (`compute` on a precomputed edge list) of the same configuration.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/lammps_overhead.py [--sizes 4 7 10 15 19] [--steps 5]

Each number is the best of several rounds (the machine is shared). Both sides use one thread per
process (OMP_NUM_THREADS=1, torch.set_num_threads(1)); model morse-cuau (fp64, cutoff 6 A).
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

import numpy as np
import torch
from ase.build import bulk

from mlpot_plugins import load, pretrained_path
from mlpot_plugins.lammps import plugin_path
from mlpot_plugins.neighbors import neighbor_list

MODEL = "morse-cuau"
BIN = Path(sys.executable).parent


def bare_time(atoms, repeats: int) -> float:
    model = load(MODEL)
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    args = (torch.tensor(atoms.positions), torch.zeros(len(atoms), dtype=torch.int64), torch.tensor(ei),
            torch.tensor(sh))
    for _ in range(3):  # TorchScript profiling runs, as LAMMPS' warm-up run
        model.compute(*args, need_virial=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.compute(*args, need_virial=False)
        times.append(time.perf_counter() - t0)
    return float(np.min(times))  # the box is shared: the least disturbed repeat


def lammps_time(n: int, steps: int, nprocs: int, plugin: Path, work: Path, rounds: int = 3):
    """(best seconds per step, adapter overhead in % of the model call measured inside the plugin)"""
    deck = f"""units metal
atom_style atomic
plugin load {plugin}
lattice fcc 3.61
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mlpot {pretrained_path(MODEL)}
pair_coeff * * Cu
velocity all create 300 4928459
fix nve all nve
timestep 0.002
thermo 1000
run 3
""" + f"run {steps}\n" * rounds
    (work / "in.bench").write_text(deck)
    cmd = [str(BIN / "lmp"), "-in", "in.bench", "-log", "none"]
    if nprocs > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(nprocs)] + cmd
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1", MLPOT_TIMING="1")).stdout
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", out)
    adapter = float(re.findall(r"adapter overhead ([0-9.eE+-]+)%", out)[-1])
    return min(float(t) / int(s) for t, s in loops[1:]), adapter  # least disturbed round after warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 10, 15, 19],
                        help="fcc cubic repeats n (4 n^3 atoms)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plugin = plugin_path()
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, model {MODEL} (fp64, cutoff 6 A)")
    print("# ratio = LAMMPS s/step / bare model s/step; adapter = time in pair_style mlpot outside the model's")
    print("# compute() call, in % of that call (rank 0, measured in the same process: robust to machine load)")
    print(f"{'atoms':>7} {'bare s/step':>12} {'lmp 1r':>10} {'ratio 1r':>9} {'adapter 1r':>10} {'lmp 2r':>10} "
          f"{'ratio 2r':>9} {'speed-up 2r':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
            bare = bare_time(atoms, args.steps)
            t1, adapter = lammps_time(n, args.steps, 1, plugin, Path(tmp))
            t2, _ = lammps_time(n, args.steps, 2, plugin, Path(tmp))
            print(f"{len(atoms):7d} {bare:12.4f} {t1:10.4f} {t1 / bare:9.3f} {adapter:9.2f}% {t2:10.4f} "
                  f"{t2 / bare:9.3f} {t1 / t2:11.2f}", flush=True)


if __name__ == "__main__":
    main()
