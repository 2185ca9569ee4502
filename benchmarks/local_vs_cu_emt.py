"""Strictly local option: a single-layer equivariant model (interaction range = cutoff) vs ``cu-emt``.

Trains one K=1, 1-layer model with cu-emt's recipe otherwise (``pretrained/build_cu_emt.py`` CONFIG: same data,
channels, lmax, radial basis, fp32 training, float64 export) under a wall-clock budget, then measures on the
seed-1 held-out set the force RMSE of it, of cu-emt's member 0 (2 layers) and of the cu-emt committee mean, and
the step cost of exported ``compute`` (forces + virial) on 108 atoms (medians of interleaved rounds).

``python benchmarks/local_vs_cu_emt.py [WORKDIR] [--minutes 10] [--rounds 8]`` (1 thread).
"""
import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from committee_cost import step_time  # noqa: E402
from llpr_vs_committee import ensure_sets, step_inputs  # noqa: E402

from mlpot_plugins import export, load  # noqa: E402
from mlpot_plugins.llpr import single_model  # noqa: E402
from mlpot_plugins.pretrained.build_cu_emt import CONFIG  # noqa: E402
from mlpot_plugins.training.dataset import read_frames  # noqa: E402


def force_rmse(model, frames):
    err = [model.compute_on(a.positions, a.cell.array, a.pbc, [0] * len(a), False, False)["forces"].numpy()
           - a.calc.results["forces"] for a in frames]
    return float(np.sqrt(np.mean(np.concatenate(err) ** 2)))


def main():
    from mlpot_plugins.training.train import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", nargs="?", default="llpr-bench")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = ensure_sets(Path(a.workdir)).resolve()
    cfg = copy.deepcopy(CONFIG)
    cfg["data"] = {"train": str(work / "train.extxyz"), "test": str(work / "test.extxyz"), "ood": {}}
    cfg["model"].update(n_layers=1, ensemble_size=1)
    cfg["training"]["max_minutes"] = a.minutes
    cfg["output"] = {"dir": str(work / "local-run"), "name": "cu-emt-local", "export_dtype": "float64",
                     "description": "single-layer (strictly local) equivariant Cu EMT model"}
    (work / "local.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not (work / "local-run" / "model.pt").is_file():
        run(work / "local.yaml", progress=False, log=lambda *x: None)
    local, committee = load(work / "local-run" / "model.pt"), load("cu-emt")
    member = load(export(single_model(committee, 0), work / "member0.pt",
                         extra={"hparams": committee.metadata["extra"]["hparams"]}))
    test = read_frames(work / "test.extxyz")
    res = {"machine": "2-core AMD EPYC VM, 24 GiB, torch 2.9.1, 1 thread", "local_training_minutes": a.minutes,
           "force_rmse": {"local_1_layer": force_rmse(local, test), "cu_emt_member0": force_rmse(member, test),
                          "cu_emt_committee": force_rmse(committee, test)},
           "interaction_range": {"local_1_layer": local.interaction_range, "cu_emt": committee.interaction_range}}
    args = step_inputs(committee.cutoff)
    times = {"local_1_layer": [], "cu_emt_member0": [], "cu_emt_committee": []}
    models = {"local_1_layer": local, "cu_emt_member0": member, "cu_emt_committee": committee}
    for _ in range(a.rounds):
        for k, m in models.items():
            times[k].append(step_time(m, args, 5, False))
    res["step_seconds_108_atoms"] = {k: float(np.median(v)) for k, v in times.items()}
    print(json.dumps(res, indent=1))
    (work / "local_vs_cu_emt.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
