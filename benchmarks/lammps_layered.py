"""The message-passing committee cu-emt in LAMMPS, layer by layer (ghosts one cutoff deep, features exchanged
between layers) vs the ASE calculator on the same atoms, and 2 ranks vs 1.

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/lammps_layered.py [--sizes 6 8 15] [--steps 3] [--old]
        [--ranks [--rank-rounds R] [--warmup W]] [--ceiling] [--no-ase] [--dtype float32] [--edges device]

In one process, alternating rounds: N MD steps of an in-process LAMMPS (`run N+1` minus `run 1`, as
lammps_overhead.py) and N ASE `get_forces` calls on slightly moved copies of the same crystal (median of the
per-round ratios; the ASE calculator also returns the virial and committee std, LAMMPS steps without thermo
output do not). One rank folds periodic images onto their atoms (`images fold`, the default: one compute() call
on the local atoms); `--ghosts` adds the same ratio for `images ghosts` (images as ghost rows, run layer by layer
with feature exchange: the multi-rank path on one rank). `--old` adds `layerwise no images ghosts` (the path
before issue 12: the whole network on a ghost shell of interaction_range = 2 cutoffs). `--ranks` adds `lmp` on 1
and 2 ranks (best round of each run; 2 ranks run layer by layer); `--rank-rounds R` alternates R such pairs of
runs and reports the medians (this VM's step time drifts by up to 25 % between runs at 13.5k atoms). Each `lmp`
run first runs `--warmup` steps (default 6): the heap of a 13.5k-atom rank still grows for several steps (page
faults, ~13 us each in this VM), and a burst of them in one rank stalls the other at the next exchange (waits
of 0.4-1.4 s per step seen in steps 1-4); production MD runs at the steady state after that.
`--ceiling` adds what two cores give to two independent 1-rank runs of the same cell started together
(2 x t_alone / t_together): the most two ranks can gain on this machine when the memory traffic, not the
arithmetic, limits a step.
`--dtype float32` runs both engines on the float32 conversion of the committee (`pair_style ... dtype float32`,
`MLPotCalculator(dtype=...)`): a 13.5k-atom cell of the fp64 K = 4 committee needs more than this machine's
24 GiB in one process (peak RSS is printed per size). `--edges device` runs every LAMMPS engine with
`pair_style ... edges device` (default `host`, the CPU default). One torch thread per process.
Targets (issue 12): LAMMPS/ASE <= 1.10 at 864-13.5k atoms; 2 ranks >= 1.7x at 13.5k.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lammps_overhead import deck_lines, lammps_time  # noqa: E402

from mlpot_plugins.ase import MLPotCalculator  # noqa: E402
from mlpot_plugins.lammps import plugin_path  # noqa: E402

MODEL = "cu-emt"
EDGES = "host"  # pair_style ... edges host|device (--edges)


def interleaved(n: int, steps: int, rounds: int, pair_extra: str = "", dtype: str = "float64"):
    """(median LAMMPS/ASE ratio, best LAMMPS s/step, best ASE s/call, median ratio of CPU times) in one process.
    With one thread, the process CPU time counts the work done whatever the other processes on the machine do."""
    from mlpot_plugins.lammps import lammps_instance

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
    atoms.calc = MLPotCalculator(MODEL, dtype=dtype)
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    lmp = lammps_instance()
    try:
        for cmd in deck_lines(n, MODEL, f"{pair_extra} dtype {dtype} edges {EDGES}") + ["run 1"]:
            lmp.command(cmd)
        atoms.get_forces()
        ratios, cpu_ratios, t_lmp, t_ase = [], [], [], []
        clocks = (time.perf_counter, time.process_time)
        for _ in range(rounds):
            t0 = [c() for c in clocks]
            lmp.command(f"run {steps + 1} pre no post no")
            t1 = [c() for c in clocks]
            lmp.command("run 1 pre no post no")
            t2 = [c() for c in clocks]
            lmp_round = [(b - a - (c - b)) / steps for a, b, c in zip(t0, t1, t2)]
            t0 = [c() for c in clocks]
            for _ in range(steps):
                atoms.positions = base + rng.normal(scale=0.01, size=base.shape)
                atoms.get_forces()
            ase_round = [(c() - a) / steps for c, a in zip(clocks, t0)]
            t_lmp.append(lmp_round[0])
            t_ase.append(ase_round[0])
            ratios.append(lmp_round[0] / ase_round[0])
            cpu_ratios.append(lmp_round[1] / ase_round[1])
    finally:
        lmp.close()
    return float(np.median(ratios)), min(t_lmp), min(t_ase), float(np.median(cpu_ratios))


def ceiling(n: int, steps: int, plugin, tmp: Path, dtype: str, warmup: int):
    """(s/step of one 1-rank lmp alone, mean s/step of two identical 1-rank lmp runs started together)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(k: int) -> float:
        work = tmp / f"ceiling{k}"
        work.mkdir(exist_ok=True)
        return lammps_time(n, steps, 1, plugin, work, 2, MODEL, f"dtype {dtype} edges {EDGES}", warmup=warmup)[0]

    alone = one(0)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(one, (1, 2)))
    return alone, float(np.mean(together))


def rank_pairs(n: int, steps: int, pairs: int, plugin, tmp: Path, dtype: str, warmup: int):
    """Alternating 1-rank and 2-rank lmp runs: (median 1-rank s/step, median 2-rank s/step, median of the
    per-pair speed-ups). Alternation spreads a slow spell of a shared machine over both; each pair is printed."""
    extra = f"dtype {dtype} edges {EDGES}"
    t1s, t2s = [], []
    for k in range(pairs):
        t1s.append(lammps_time(n, steps, 1, plugin, tmp, 2, MODEL, extra, warmup=warmup)[0])
        t2s.append(lammps_time(n, steps, 2, plugin, tmp, 2, MODEL, extra, warmup=warmup)[0])
        if pairs > 1:
            print(f"# {4 * n ** 3} atoms, pair {k + 1}/{pairs}: 1 rank {t1s[-1]:.3f} s/step, 2 ranks {t2s[-1]:.3f} "
                  f"s/step, speed-up {t1s[-1] / t2s[-1]:.2f}", flush=True)
    ratios = [a / b for a, b in zip(t1s, t2s)]
    return float(np.median(t1s)), float(np.median(t2s)), float(np.median(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 8], help="fcc cubic repeats n (4 n^3 atoms)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", action="store_true",
                        help="also time `layerwise no images ghosts` (the wide ghost shell)")
    parser.add_argument("--ghosts", action="store_true",
                        help="also time `images ghosts` (one rank, layer by layer with ghost rows)")
    parser.add_argument("--ranks", action="store_true", help="also time lmp on 1 and 2 ranks")
    parser.add_argument("--rank-rounds", type=int, default=1,
                        help="--ranks: alternate this many 1-rank and 2-rank lmp runs; the speed-up is the median of "
                             "the per-pair ratios (each run's best round), every pair printed as a comment")
    parser.add_argument("--warmup", type=int, default=6,
                        help="--ranks / --ceiling: MD steps each lmp run takes before its timed rounds")
    parser.add_argument("--no-ase", action="store_true",
                        help="skip the in-process LAMMPS vs ASE rounds (only --ranks / --ceiling)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time two independent 1-rank lmp runs started together")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="the committee's dtype in both engines")
    parser.add_argument("--edges", choices=["host", "device"], default="host",
                        help="pair_style ... edges: built on the host each step, or filtered where the model runs "
                             "from candidates kept between neighbour-list builds")
    args = parser.parse_args()
    global EDGES
    EDGES = args.edges
    torch.set_num_threads(1)
    plugin = plugin_path()
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, model {MODEL} (K=4, 2 layers, {args.dtype}, "
          "cutoff 4 A)")
    print("# s/step (LAMMPS, no thermo output) and s/call (ASE get_forces); ratio = median of interleaved rounds")
    print("# of wall-clock times, cpu ratio = the same with process CPU times (robust on a busy machine)")
    head = f"{'atoms':>7}" + ("" if args.no_ase else f" {'ase':>8} {'lammps':>8} {'ratio':>6} {'cpu ratio':>9}")
    head += f" {'ghosts':>8} {'gh ratio':>9} {'gh cpu':>9}" if args.ghosts else ""
    head += f" {'old':>8} {'old ratio':>9} {'old cpu':>9}" if args.old else ""
    head += f" {'lmp 1r':>8} {'lmp 2r':>8} {'2r speed-up':>11}" if args.ranks else ""
    head += f" {'2 x 1r':>8} {'ceiling':>7}" if args.ceiling else ""
    head += f" {'peak GB':>7}"
    print(head, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            line = f"{4 * n ** 3:7d}"
            if not args.no_ase:
                ratio, t_lmp, t_ase, cpu_ratio = interleaved(n, args.steps, args.rounds, dtype=args.dtype)
                line += f" {t_ase:8.3f} {t_lmp:8.3f} {ratio:6.2f} {cpu_ratio:9.2f}"
            if args.ghosts:
                gh_ratio, t_gh, _, gh_cpu = interleaved(n, args.steps, args.rounds, "images ghosts", args.dtype)
                line += f" {t_gh:8.3f} {gh_ratio:9.2f} {gh_cpu:9.2f}"
            if args.old:
                old_ratio, t_old, _, old_cpu = interleaved(n, max(1, args.steps // 2), 2, "layerwise no images ghosts",
                                                           args.dtype)
                line += f" {t_old:8.3f} {old_ratio:9.2f} {old_cpu:9.2f}"
            if args.ranks:
                t1, t2, speedup = rank_pairs(n, args.steps, args.rank_rounds, plugin, Path(tmp), args.dtype,
                                             args.warmup)
                line += f" {t1:8.3f} {t2:8.3f} {speedup:11.2f}"
            if args.ceiling:
                t_alone, t_pair = ceiling(n, args.steps, plugin, Path(tmp), args.dtype, args.warmup)
                line += f" {t_pair:8.3f} {2 * t_alone / t_pair:7.2f}"
            line += f" {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:7.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
