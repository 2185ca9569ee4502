"""Rebuild the shipped Holstein committees: ``python -m mlpot_plugins.pretrained.build_holstein [--device cuda]``.

holstein-d4 (direct forces, D4 group convolution, C=16, H=48, K=4):
1. ED Langevin training data on **40x40** (8 hot quenches of 1070 steps + 8 random-domain runs of 400
   steps, a snapshot every 10 steps: 1176 snapshots, 1.9M sites; cached in out/holstein-train-L40.pt).
   On an H100 this took 246 s (cuSOLVER eigh, 20 ms per 1600x1600 matrix); on this project's 2-core CPU
   it would take many hours (0.75-2.4 s per 40x40 eigh), so use ``--device cuda`` where there is a GPU;
2. training on the GPU (190 s on an H100: 134 epochs, batch 16, lr 5e-3, cosine decay), then
3. fine-tuning on the CPU from those weights (``--finetune`` seconds, lr 1.5e-3, one thread).
The last quench and the last domain trajectory are held out.
holstein-d4-energy (energy-based variant, C=12, H=32): ED data on 16x16 (5 + 5 trajectories, out/holstein-
train-L16.pt, ~10 min on the CPU), ``--budget``/2 seconds of CPU training.
Seeded, but not bit-reproducible: training is capped by time budgets (cosine LR decay over the budget).
"""
import argparse
import json
from pathlib import Path

import torch

from ..holstein.data import generate
from ..holstein.train import export_saved, train

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="out/holstein-train-L40.pt")
    ap.add_argument("--energy-data", default="out/holstein-train-L16.pt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="device for the 40x40 ED data and the first training stage")
    ap.add_argument("--gpu-budget", type=float, default=190.0, help="seconds of first-stage training")
    ap.add_argument("--finetune", type=float, default=1500.0, help="seconds of CPU fine-tuning (0: skip)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=900.0, help="seconds for the energy model x 2")
    ap.add_argument("--skip-energy", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    if not data.is_file():
        generate(data, L=40, n_quench=8, n_domain=8, quench_steps=1070, domain_steps=400, stride=10, seed=40,
                 device=args.device)
    arch = dict(ensemble_size=4, channels=16, hidden=48, seed=0, name="holstein-d4", batch=16, epochs=100000)
    stage1 = Path("out/holstein-d4-stage1.sd")
    m = train(data, HERE / "holstein-d4.pt", lr=5e-3, time_budget_s=args.gpu_budget, device=args.device,
              state_dict_path=stage1, **arch)
    print("holstein-d4 stage 1", json.dumps(m, indent=1))
    if args.finetune > 0:
        final = Path("out/holstein-d4.sd")
        train(data, HERE / "holstein-d4.pt", lr=1.5e-3, time_budget_s=args.finetune, init_state_dict=stage1,
              state_dict_path=final, **arch)
        saved, first = torch.load(final, weights_only=False), torch.load(stage1, weights_only=False)["metrics"]
        saved["metrics"].update(stage1_device=args.device, stage1_seconds=first["train_seconds"],
                                stage1_epochs=first["epochs_run"],
                                stage1_rmse_over_force_std=first["rmse_over_force_std"])
        torch.save(saved, final)
        export_saved(final, HERE / "holstein-d4.pt")  # metrics of both stages in the metadata
        print("holstein-d4", json.dumps(saved["metrics"], indent=1))
    if args.skip_energy:
        return
    edata = Path(args.energy_data)
    if not edata.is_file():
        generate(edata, L=16, n_quench=5, n_domain=5, quench_steps=600, domain_steps=200, stride=6, seed=0)
    m = train(edata, HERE / "holstein-d4-energy.pt", energy_based=True, ensemble_size=4, channels=12, hidden=32,
              epochs=40, seed=0, name="holstein-d4-energy", snapshot_stride=2, batch=8, lr=5e-3,
              time_budget_s=args.budget / 2)
    print("holstein-d4-energy", json.dumps(m, indent=1))


if __name__ == "__main__":
    main()
