"""Cost of the domain-decomposed lattice call vs the periodic one, for the shipped Holstein models:
``compute_lattice_block`` on an L x L interior with its minimal halo (what one LAMMPS rank holding the whole
lattice would pay) and on a 2 x 1 split (two L/2 x L blocks, the work of 2 ranks done one after the other)
vs ``compute_lattice`` on the L x L periodic grid. One run:

    PYTHONPATH=. python benchmarks/lattice_block_cost.py [--L 200] [--threads 1] [--repeats 5]

Min and median of interleaved repeated calls after warm-up calls (TorchScript profiles the first ones); the machine is shared,
so the load average is printed.
"""
import argparse
import os
import statistics
import time

import torch

from mlpot_plugins.holstein.dynamics import model_params
from mlpot_plugins.holstein.params import hot_random_state
from mlpot_plugins.model_file import load


def timeit(fs, reps, warm=2):
    """Min and median seconds of each callable in ``fs``, calls interleaved so load drift hits all alike."""
    for f in fs:
        for _ in range(warm):
            f()
    ts = [[] for _ in fs]
    for _ in range(reps):
        for f, t in zip(fs, ts):
            t0 = time.perf_counter()
            f()
            t.append(time.perf_counter() - t0)
    return [(min(t), statistics.median(t)) for t in ts]


def with_halo(Q, x0, x1, h):
    """Rows [x0 - h, x1 + h) and all columns of the periodic lattice, plus h wrapped columns each side."""
    n = Q.shape[-1]
    rows = Q[torch.arange(x0 - h, x1 + h) % n]
    return rows[:, torch.arange(-h, n + h) % n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", default="holstein-d4,holstein-d4-energy")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"machine: {os.cpu_count()}-core CPU, torch {torch.__version__}, {a.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} at start (shared box)")
    for name in a.models.split(","):
        model = load(name)
        h = int(model.interaction_range)
        Q, _ = hot_random_state(a.L, (), 5.0, model_params(model), torch.Generator().manual_seed(0))
        Q = Q.to(model.dtype)
        full = model.module.compute_lattice
        block = with_halo(Q, 0, a.L, h)
        halves = [with_halo(Q, 0, a.L // 2, h), with_halo(Q, a.L // 2, a.L, h)]
        ref = full(Q, True)["forces"]
        got = model.compute_lattice_block(block, h, True)["forces"]
        (f_min, f_med), (b_min, b_med), (s_min, s_med) = timeit(
            [lambda: full(Q, True), lambda: model.compute_lattice_block(block, h, True),
             lambda: [model.compute_lattice_block(b, h, True) for b in halves]], a.repeats)
        print(f"{name}: halo {h}, L={a.L}, min (median) of {a.repeats}: compute_lattice {f_min * 1e3:.0f} "
              f"({f_med * 1e3:.0f}) ms; one block {a.L}x{a.L}+halo {b_min * 1e3:.0f} ({b_med * 1e3:.0f}) ms, "
              f"ratio {b_min / f_min:.2f} ({b_med / f_med:.2f}); two blocks {a.L // 2}x{a.L}+halo "
              f"{s_min * 1e3:.0f} ({s_med * 1e3:.0f}) ms, ratio {s_min / f_min:.2f} ({s_med / f_med:.2f}); "
              f"max |dF| block vs full {(got - ref).abs().max().item():.1e}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
