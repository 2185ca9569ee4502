"""Cost and accuracy of the exported exact local solver (``compute_lattice_block_fallback``) of the shipped
``holstein-d4`` on a hot random state (the regime a quench starts from) and on a relaxed (quenched) state:
share of sites that fall back at several thresholds, call time vs ``compute_lattice_block``, and the force
error vs exact diagonalisation (ED) of ML, of the fallback and of the solver alone (threshold -> 0). One run:

    PYTHONPATH=. python benchmarks/lattice_fallback_cost.py [--L 24] [--threads 1]
"""
import argparse
import os
import time

import torch

from mlpot_plugins.holstein.dynamics import make_forces, model_params, run_quench
from mlpot_plugins.holstein.ed import ed_solve
from mlpot_plugins.holstein.params import hot_random_state, periodic_block
from mlpot_plugins.model_file import load


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load("holstein-d4")
    p = model_params(model)
    L, h = args.L, model.metadata["fallback_range"]
    hot, _ = hot_random_state(L, generator=torch.Generator().manual_seed(0))
    relaxed = run_quench(make_forces("ml", p, model), p, L, 400, seed=1, record_every=400, progress=False)["final_Q"]
    print(f"holstein-d4 solver {model.metadata['fallback']}, fallback_range {h}; {L}x{L}; load average "
          f"{os.getloadavg()[0]:.1f}; {torch.get_num_threads()} thread(s)")
    for name, Q in (("hot (t = 0)", hot), ("quenched (t = 20)", relaxed)):
        block = periodic_block(Q, h)
        ed = ed_solve(Q, p)["forces"]
        fstd = ed.std().item()
        for _ in range(3):  # warm-up: TorchScript profiles the first calls
            model.compute_lattice_block(block, h, True)
            model.compute_lattice_block_fallback(block[:2 * h + 2, :2 * h + 2], h, 1e-300)
        t0 = time.perf_counter()
        ml = model.compute_lattice_block(block, h, True)
        t_ml = time.perf_counter() - t0
        std = ml["forces_std"].double().flatten().sort().values
        rows = []
        for share in (0.0, 0.05, 0.25, 1.0):
            thr = 1e-300 if share == 1.0 else float("inf") if share == 0 else std[int((1 - share) * len(std))].item()
            t0 = time.perf_counter()
            out = model.compute_lattice_block_fallback(block, h, thr)
            dt = time.perf_counter() - t0
            err = (out["forces"].double() - ed).pow(2).mean().sqrt().item()
            n = int(out["fallback_mask"].sum())
            rows.append(f"  threshold {thr:.3g}: {n} sites ({100 * n / L ** 2:.0f}%) fall back, RMSE vs ED "
                        f"{err:.4f} = {100 * err / fstd:.2f}% of the force std, {dt:.2f} s ({dt / t_ml:.0f}x ML; "
                        f"{1e3 * (dt - t_ml) / max(n, 1):.1f} ms per fallback site)")
        print(f"{name}: force std {fstd:.3f}, ML block call {1e3 * t_ml:.0f} ms")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
