"""Rebuild the shipped Holstein committees: ``python -m mlpot_plugins.pretrained.build_holstein``.

1. ED Langevin training data (``mlpot holstein generate`` defaults: 16x16, 5 hot-quench + 5 domain
   trajectories; cached in out/holstein-train-L16.pt),
2. train the direct-force committee -> holstein-d4.pt and the energy-based one -> holstein-d4-energy.pt.
Seeded, but not bit-reproducible: training is capped by --budget seconds (cosine LR decay over the budget): ~10 min of training
on a shared 2-core CPU; the ED data take another ~10 min.
"""
import argparse
import json
from pathlib import Path

import torch

from ..holstein.data import generate
from ..holstein.train import train

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="out/holstein-train-L16.pt")
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--energy-epochs", type=int, default=40)
    ap.add_argument("--stride", type=int, default=2, help="use every stride-th training snapshot")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=900.0, help="seconds per direct model (energy: half)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not data.is_file():
        generate(data, L=16, n_quench=5, n_domain=5, quench_steps=600, domain_steps=200, stride=6, seed=0)
    m = train(data, HERE / "holstein-d4.pt", energy_based=False, ensemble_size=4, channels=12, hidden=32,
              epochs=args.epochs, seed=0, name="holstein-d4", snapshot_stride=args.stride, batch=8, lr=5e-3,
              time_budget_s=args.budget)
    print("holstein-d4", json.dumps(m, indent=1))
    m = train(data, HERE / "holstein-d4-energy.pt", energy_based=True, ensemble_size=4, channels=12, hidden=32,
              epochs=args.energy_epochs, seed=0, name="holstein-d4-energy", snapshot_stride=args.stride, batch=8, lr=5e-3,
              time_budget_s=args.budget / 2)
    print("holstein-d4-energy", json.dumps(m, indent=1))


if __name__ == "__main__":
    main()
