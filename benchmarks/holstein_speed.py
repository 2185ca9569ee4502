"""Holstein force-evaluation and Langevin speed: ML committee vs ED vs KPM, cost vs L, 200x200 estimate.

    PYTHONPATH=. python benchmarks/holstein_speed.py [--model holstein-d4] [--threads 2]

Timings are medians of repeated calls measured in this one run (the machine is shared: the load average
is printed). ED beyond 40x40 is extrapolated with its measured N^3 = L^6 law; KPM is measured.
"""
import argparse
import math
import os
import statistics
import time

import numpy as np
import torch

from mlpot_plugins.model_file import load
from mlpot_plugins.holstein.dynamics import MLForces, model_params
from mlpot_plugins.holstein.ed import ed_solve
from mlpot_plugins.holstein.kpm import kpm_density
from mlpot_plugins.holstein.langevin import LangevinIntegrator
from mlpot_plugins.holstein.params import hot_random_state


def timeit(f, reps=3, warm=1):
    for _ in range(warm):
        f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="holstein-d4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ed-sizes", default="16,24,32,40")
    ap.add_argument("--ml-sizes", default="40,100,200,300")
    ap.add_argument("--kpm-sizes", default="40,100")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.model)
    p = model_params(model)
    gen = torch.Generator().manual_seed(0)
    print(f"machine: {os.cpu_count()}-core CPU, torch {torch.__version__}, threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f} (shared box)")
    # configurations from a short ML quench: realistic mix of domains and walls
    ed_t, ml_t, kpm_t = {}, {}, {}
    fields = {}
    for L in sorted({int(x) for x in (args.ed_sizes + "," + args.ml_sizes + "," + args.kpm_sizes).split(",") if x.strip()}):
        Q, _ = hot_random_state(L, (), 5.0, p, gen)
        fields[L] = Q
    for L in map(int, args.ed_sizes.split(",")):
        ed_t[L] = timeit(lambda: ed_solve(fields[L], p), reps=2 if L >= 40 else 3)
        print(f"ED   L={L:4d}: {ed_t[L]:8.3f} s per force evaluation")
    Ls = np.array(sorted(ed_t))
    slope, icpt = np.polyfit(np.log(Ls), np.log([ed_t[L] for L in Ls]), 1)
    print(f"ED cost ~ L^{slope:.2f} (ideal eigh: L^6)")
    for L in [int(x) for x in args.kpm_sizes.split(",") if x.strip()]:
        kpm_t[L] = timeit(lambda: kpm_density(fields[L], p, colors=8), reps=1, warm=0)
        print(f"KPM  L={L:4d}: {kpm_t[L]:8.3f} s per force evaluation (colored probing, c>=8)")
    f = MLForces(model.module)
    for L in map(int, args.ml_sizes.split(",")):
        ml_t[L] = timeit(lambda: f(fields[L]), reps=5, warm=2)
        print(f"ML   L={L:4d}: {ml_t[L]:8.4f} s per force evaluation ({L * L / ml_t[L]:.3g} sites/s)")
    mls = np.array(sorted(ml_t))
    mslope, _ = np.polyfit(np.log(mls), np.log([ml_t[L] for L in mls]), 1)
    print(f"ML cost ~ L^{mslope:.2f} (linear scaling: L^2)")

    def ed_at(L):
        return ed_t[L] if L in ed_t else math.exp(icpt) * L ** 6 / Ls[-1] ** 6 * math.exp(slope * math.log(Ls[-1])) \
            if False else ed_t[int(Ls[-1])] * (L / Ls[-1]) ** 6

    for L in (40, 100):
        if L in ml_t:
            src = "measured" if L in ed_t else f"extrapolated L^6 from L={int(Ls[-1])}"
            print(f"speed-up ML vs ED at {L}x{L}: {ed_at(L) / ml_t[L]:.3g}x (ED {ed_at(L):.3g} s, {src}); "
                  + (f"ML vs KPM: {kpm_t[L] / ml_t[L]:.3g}x" if L in kpm_t else ""))
    # Langevin throughput, including the integrator and the committee
    for L in (100, 200):
        Q0, P0 = hot_random_state(L, (), 5.0, p, gen)
        integ = LangevinIntegrator(f, p, Q0, P0, seed=1)
        n = 20
        integ.step(2)
        t0 = time.perf_counter()
        integ.step(n)
        dt = (time.perf_counter() - t0) / n
        print(f"ML Langevin L={L}: {dt:.4f} s/step = {L * L / dt:.3g} site-steps/s")
        if L == 200:
            print(f"estimate 200x200 x 25,000 steps: {25000 * dt / 3600:.2f} h on this machine at this load")


if __name__ == "__main__":
    main()
