"""Last-layer (LLPR) uncertainty of one model vs the shipped ``cu-emt`` committee, on the same Cu/EMT data.

1. regenerates the EMT sets of ``pretrained/build_cu_emt.py`` (train seed 0, test seed 1, OOD 2400 K seed 2,
   OOD 10 % compressed seed 3) in WORKDIR (cached);
2. ``mlpot llpr cu-emt --member 0`` (and ``--last-layer-only``): covariance on train, regulariser/scales on the
   even test frames;
3. on the odd (held-out) test frames: force RMSE and the committee's calibration metrics (NLL, miscalibration
   area, Spearman rho(sigma, |error|)) for LLPR and for the committee; OOD/ID median force std;
4. step cost of ``compute`` (forces, virial) on a 108-atom cell, interleaved rounds: single model, LLPR with
   uncertainty, committee with uncertainty.

``python benchmarks/llpr_vs_committee.py [WORKDIR] [--rounds 8]`` (1 thread).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from committee_cost import step_time  # noqa: E402

from mlpot_plugins import export, load  # noqa: E402
from mlpot_plugins.emt_data import generate, write  # noqa: E402
from mlpot_plugins.llpr import make_llpr, single_model  # noqa: E402
from mlpot_plugins.neighbors import neighbor_list  # noqa: E402
from mlpot_plugins.training.calibration import uncertainty_metrics  # noqa: E402
from mlpot_plugins.training.dataset import read_frames  # noqa: E402

SETS = {"train": ("train", 0), "test": ("train", 1), "ood-hot": ("ood-hot", 2), "ood-compressed": ("ood-compressed", 3)}


def ensure_sets(work: Path) -> Path:
    """The EMT sets of build_cu_emt.py in ``work`` (generated once)."""
    work.mkdir(exist_ok=True)
    for name, (which, seed) in SETS.items():
        if not (work / f"{name}.extxyz").is_file():
            write(work / f"{name}.extxyz", generate("Cu", which, seed=seed))
    return work


def step_inputs(cutoff: float):
    """compute() inputs of the timed step: 108 Cu atoms (fcc 3x3x3, rattled by 0.05 A, seed 0)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    return (torch.tensor(atoms.positions), torch.zeros(len(atoms), dtype=torch.long), torch.tensor(ei),
            torch.tensor(sh))


def predictions(model, frames):
    sig, err = [], []
    for atoms in frames:
        out = model.compute_on(atoms.positions, atoms.cell.array, atoms.pbc, [0] * len(atoms), False, True)
        sig.append(out["forces_std"].numpy())
        err.append(out["forces"].numpy() - atoms.calc.results["forces"])
    return np.concatenate(sig), np.concatenate(err)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", nargs="?", default="llpr-bench")
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = ensure_sets(Path(a.workdir))
    test = read_frames(work / "test.extxyz")
    write(work / "val.extxyz", test[::2])
    heldout = test[1::2]
    llpr_path = make_llpr("cu-emt", work / "train.extxyz", work / "val.extxyz", work / "llpr0.pt", member=0)
    last_path = make_llpr("cu-emt", work / "train.extxyz", work / "val.extxyz", work / "llpr0-last.pt", member=0,
                          readout_gradient=False)
    committee, llpr_model = load("cu-emt"), load(llpr_path)
    single = load(export(single_model(committee, 0), work / "member0.pt",
                         extra={"hparams": committee.metadata["extra"]["hparams"]}))
    res = {"machine": "2-core AMD EPYC VM, 24 GiB, torch 2.9.1, 1 thread", "llpr": llpr_model.metadata["extra"]["llpr"],
           "llpr_last_layer_only": load(last_path).metadata["extra"]["llpr"]}
    ood = [f for n in ("ood-hot", "ood-compressed") for f in read_frames(work / f"{n}.extxyz")]
    for label, model in (("llpr_member0", llpr_model), ("llpr_member0_last_layer_only", load(last_path)),
                         ("committee_cu_emt", committee)):
        sig, err = predictions(model, heldout)
        sig_ood, _ = predictions(model, ood)
        m = uncertainty_metrics(sig, err)
        m["force_rmse"] = float(np.sqrt(np.mean(err ** 2)))
        m["ood_over_id_median_std"] = float(np.median(sig_ood) / np.median(sig))
        res[label] = m
    args = step_inputs(committee.cutoff)
    times = {"single": [], "llpr_with_uncertainty": [], "committee_with_uncertainty": []}
    for _ in range(a.rounds):  # interleaved: load changes hit all three alike
        times["single"].append(step_time(single, args, 5, False))
        times["llpr_with_uncertainty"].append(step_time(llpr_model, args, 5, True))
        times["committee_with_uncertainty"].append(step_time(committee, args, 5, True))
    t = {k: float(np.median(v)) for k, v in times.items()}
    res["step_seconds_108_atoms"] = t
    res["llpr_cost_over_single"] = t["llpr_with_uncertainty"] / t["single"]
    res["committee_cost_over_single"] = t["committee_with_uncertainty"] / t["single"]
    print(json.dumps(res, indent=1))
    (work / "llpr_vs_committee.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
