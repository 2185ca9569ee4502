"""LAMMPS overhead of pair_style mlpot: time per MD step in LAMMPS divided by the bare model's
energy+forces evaluation (`compute` on a precomputed edge list) of the same configuration, and the
speed-up of `mpiexec -n 2 lmp` over `lmp`.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/lammps_overhead.py [--sizes 6 10 15 19] [--steps 10]

The machine is shared, so the one-rank ratio is measured in one process, alternating rounds of
N MD steps in an in-process LAMMPS (`run N+1` minus `run 1`: steps without thermo output, as in a
long run) with rounds of N bare calls (median of the per-round ratios), and the plugin times itself
(time outside the model's compute() call: "adapter"). `lmp` timings are the best
of several rounds. One thread per process everywhere; model morse-cuau (fp64, cutoff 6 A).
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


def deck_lines(n: int, model: str = MODEL, pair_extra: str = ""):
    return ["units metal", "atom_style atomic", "lattice fcc 3.61", f"region box block 0 {n} 0 {n} 0 {n}",
            "create_box 1 box", "create_atoms 1 box", "mass 1 63.546",
            f"pair_style mlpot {pretrained_path(model)} {pair_extra}", "pair_coeff * * Cu",
            "velocity all create 300 4928459", "fix nve all nve", "timestep 0.002", "thermo 1000"]


def interleaved(atoms, n: int, steps: int, rounds: int = 4):
    """(median LAMMPS/bare ratio, best LAMMPS s/step, best bare s/step, adapter %) in one process."""
    from mlpot_plugins.lammps import lammps_instance

    model = load(MODEL)
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    args = (torch.tensor(atoms.positions), torch.zeros(len(atoms), dtype=torch.int64), torch.tensor(ei),
            torch.tensor(sh))
    lmp = lammps_instance()
    try:
        for cmd in deck_lines(n) + ["run 3"]:
            lmp.command(cmd)
        for _ in range(3):
            model.compute(*args, need_virial=False)
        ratios, t_lmp, t_bare, t_eval, t_model = [], [], [], 0.0, 0.0

        def timed(cmd):
            e0, m0, t0 = lmp.extract_pair("time_evaluate"), lmp.extract_pair("time_model"), time.perf_counter()
            lmp.command(cmd)
            return (time.perf_counter() - t0, lmp.extract_pair("time_evaluate") - e0,
                    lmp.extract_pair("time_model") - m0)

        for _ in range(rounds):
            # a run's last step has thermo output (energy + virial): the difference of a run of
            # steps + 1 and a run of 1 is the cost of `steps` ordinary MD steps
            long, short = timed(f"run {steps + 1} pre no post no"), timed("run 1 pre no post no")
            t_lmp.append((long[0] - short[0]) / steps)
            t_eval += long[1] - short[1]
            t_model += long[2] - short[2]
            t0 = time.perf_counter()
            for _ in range(steps):
                model.compute(*args, need_virial=False)
            t_bare.append((time.perf_counter() - t0) / steps)
            ratios.append(t_lmp[-1] / t_bare[-1])
    finally:
        lmp.close()
    return float(np.median(ratios)), min(t_lmp), min(t_bare), 100.0 * (t_eval - t_model) / t_model


def lammps_time(n: int, steps: int, nprocs: int, plugin: Path, work: Path, rounds: int = 3, model: str = MODEL,
                pair_extra: str = "", warmup: int = 3):
    """(best seconds per step, adapter overhead in % of the model call measured inside the plugin)"""
    deck = "\n".join([f"plugin load {plugin}"] + deck_lines(n, model, pair_extra) + [f"run {warmup}"]
                     + [f"run {steps}"] * rounds) + "\n"
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
    parser.add_argument("--steps", type=int, default=10,
                        help="steps per round (the last step of each run also computes the virial)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    plugin = plugin_path()
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, model {MODEL} (fp64, cutoff 6 A)")
    print("# in-process: bare = model compute() s/call, lammps = s/step without output, ratio = median of")
    print("# interleaved rounds,")
    print("# adapter = time in pair_style mlpot outside the model call (% of the call); lmp 1r / 2r = s/step")
    print(f"{'atoms':>7} {'bare':>9} {'lammps':>9} {'ratio':>7} {'adapter':>8} {'lmp 1r':>9} {'lmp 2r':>9} "
          f"{'speed-up 2r':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
            ratio, t_lmp, bare, adapter = interleaved(atoms, n, args.steps)
            t1, _ = lammps_time(n, args.steps, 1, plugin, Path(tmp))
            t2, _ = lammps_time(n, args.steps, 2, plugin, Path(tmp))
            print(f"{len(atoms):7d} {bare:9.4f} {t_lmp:9.4f} {ratio:7.3f} {adapter:7.2f}% {t1:9.4f} {t2:9.4f} "
                  f"{t1 / t2:11.2f}", flush=True)


if __name__ == "__main__":
    main()
