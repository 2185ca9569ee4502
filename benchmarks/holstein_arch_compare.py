"""Irreps features vs D4 group convolution: force-evaluation speed and held-out accuracy of two exported
Holstein committees (e.g. both trained with the same CPU time budget on the same data).

    PYTHONPATH=. python benchmarks/holstein_arch_compare.py out/convcpu.pt out/irreps.pt [--threads 2] [--L 200]

Rounds of model A and model B alternate in one process (the machine is shared), best-of-rounds time per
committee force evaluation (no std); accuracy is the held-out RMSE stored in each model's metadata.
"""
import argparse
import os
import time

import torch

from mlpot_plugins.model_file import load


def best_time(module, Q, reps):
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        module.compute_lattice(Q, False)
        t = min(t, time.perf_counter() - t0)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--L", type=int, nargs="+", default=[40, 200])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = [load(m) for m in args.models]
    print(f"{os.cpu_count()}-core CPU, torch {torch.__version__}, {args.threads} thread(s), "
          f"load {os.getloadavg()[0]:.1f}")
    for m in models:
        a, tr = m.metadata["extra"]["architecture"], m.metadata["extra"]["training"]
        print(f"{m.metadata['name']}: arch {a.get('arch', 'conv')}, channels {a['channels']}, hidden {a['hidden']}, "
              f"K={m.metadata['ensemble_size']}; held-out RMSE/force std {100 * tr['rmse_over_force_std']:.2f}% "
              f"after {tr['train_seconds']:.0f} s ({tr['epochs_run']} epochs)")
    for L in args.L:
        Q = torch.randn(L, L, generator=torch.Generator().manual_seed(L), dtype=torch.float64) * 3
        for m in models:  # warm-up: TorchScript profiles the first calls
            for _ in range(3):
                m.module.compute_lattice(Q, False)
        best = [float("inf")] * 2
        for _ in range(args.rounds):
            for k, m in enumerate(models):
                best[k] = min(best[k], best_time(m.module, Q, 2))
        print(f"L={L}: " + ", ".join(f"{m.metadata['name']} {1e3 * t:.1f} ms ({L * L / t:.3g} sites/s)"
                                     for m, t in zip(models, best)) + f"; time ratio B/A {best[1] / best[0]:.2f}")


if __name__ == "__main__":
    main()
