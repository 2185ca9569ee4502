"""Rebuild the shipped Holstein committees: ``python -m mlpot_plugins.pretrained.build_holstein [--device cuda]``.

holstein-d4 (direct forces, D4 group convolution, C=16, H=48, K=4):
1. ED Langevin training data on **40x40** (8 hot quenches of 1070 steps + 8 random-domain runs of 400
   steps, a snapshot every 10 steps: 1176 snapshots, 1.9M sites; cached in out/holstein-train-L40.pt).
   On an H100 this took 246 s (cuSOLVER eigh, 20 ms per 1600x1600 matrix); on this project's 2-core CPU
   it would take many hours (0.75-2.4 s per 40x40 eigh), so use ``--device cuda`` where there is a GPU;
2. training on the GPU (190 s on an H100: 134 epochs, batch 16, lr 5e-3, cosine decay), then
3. fine-tuning on the CPU from those weights (``--finetune`` seconds, lr 1.5e-3, one thread).
The last quench and the last domain trajectory are held out.
4. the t = 0 regime (``--hot-finetune`` seconds; ``--only-hot`` runs just this stage on the shipped file): the
   40x40 data keep quench snapshots from t = 0.5 on, so the hot random state every quench starts from was
   not in them (force error 7% of the force std there, 4.6% at t = 0.5-5). Fine-tuning (lr 5e-4, one CPU
   thread) on 24x24 ED data (out/holstein-hot-L24.pt, ~30 min on the loaded CPU: 240 hot t = 0 states, 8 quenches of
   400 steps with a snapshot every 4 steps, 8 domain runs of 150 steps; the hot states' forces are local, so
   24x24 labels equal 40x40 ones) from the stage-3 weights brings every regime under 3%
   (benchmarks/holstein_regimes.py, docs/holstein.md).
holstein-d4-energy (energy-based variant, C=12, H=32): ED data on 16x16 (5 + 5 trajectories, out/holstein-
train-L16.pt, ~10 min on the CPU), ``--budget``/2 seconds of CPU training.
Seeded, but not bit-reproducible: training is capped by time budgets (cosine LR decay over the budget).
"""
import argparse
import json
from pathlib import Path

import torch

from ..holstein.data import generate
from ..holstein.train import export_saved, train, weights_from_export

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
    ap.add_argument("--hot-data", default="out/holstein-hot-L24.pt")
    ap.add_argument("--hot-finetune", type=float, default=1500.0,
                    help="seconds of CPU fine-tuning on the hot/early-quench 24x24 data (0: skip)")
    ap.add_argument("--only-hot", action="store_true",
                    help="run only the hot-state fine-tuning, starting from the shipped holstein-d4.pt")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only_hot:
        hot_finetune(Path(args.hot_data), args.hot_finetune)
        return
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
    if args.hot_finetune > 0:
        hot_finetune(Path(args.hot_data), args.hot_finetune)
    if args.skip_energy:
        return
    edata = Path(args.energy_data)
    if not edata.is_file():
        generate(edata, L=16, n_quench=5, n_domain=5, quench_steps=600, domain_steps=200, stride=6, seed=0)
    m = train(edata, HERE / "holstein-d4-energy.pt", energy_based=True, ensemble_size=4, channels=12, hidden=32,
              epochs=40, seed=0, name="holstein-d4-energy", snapshot_stride=2, batch=8, lr=5e-3,
              time_budget_s=args.budget / 2)
    print("holstein-d4-energy", json.dumps(m, indent=1))


def hot_finetune(data: Path, seconds: float, lr: float = 5e-4) -> dict:
    """Stage 4: fine-tune the shipped holstein-d4 on hot-state + quench + domain ED data (24x24) and re-export
    it; the metrics of the earlier stages stay in the metadata (prefix ``stage3_``)."""
    if not data.is_file():
        generate(data, L=24, n_quench=8, n_domain=8, quench_steps=400, domain_steps=150, stride=4, seed=24,
                 n_hot=240)
    before = Path("out/holstein-d4-stage3.sd")
    weights_from_export(HERE / "holstein-d4.pt", before)
    earlier = torch.load(before, weights_only=False)["metrics"]
    final = Path("out/holstein-d4-hot.sd")
    cfg = torch.load(before, weights_only=False)["config"]
    train(data, Path("out/holstein-d4-hot.pt"), lr=lr, time_budget_s=seconds, init_state_dict=before,
          state_dict_path=final, ensemble_size=cfg["ensemble_size"], channels=cfg["channels"],
          hidden=cfg["hidden"], radius2=cfg["radius2"], seed=0, name="holstein-d4", batch=16, epochs=100000)
    saved = torch.load(final, weights_only=False)
    saved["config"]["data_L"] = cfg["data_L"]  # the main training lattice (40); the 24x24 stage is recorded below
    # unprefixed: this stage's held-out metrics (the weights' own); stage3_/stage1_: the earlier 40x40 stages
    saved["metrics"] = {**{k if k.startswith("stage") else f"stage3_{k}": v for k, v in earlier.items()},
                        **saved["metrics"], "stage4_data": f"{data.name}: 24x24 ED, 240 hot t=0 states + 8 "
                        "quenches (t <= 20) + 8 domain runs (t <= 7.5); held out: the last of each kind"}
    torch.save(saved, final)
    export_saved(final, HERE / "holstein-d4.pt")
    print("holstein-d4 hot stage", json.dumps(saved["metrics"], indent=1))
    return saved["metrics"]


if __name__ == "__main__":
    main()
