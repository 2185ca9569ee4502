"""Rebuild the shipped ``ala2-xtb`` committee: ``python -m mlpot_plugins.pretrained.build_ala2_xtb [WORKDIR]``.

1. generates the deterministic alanine-dipeptide GFN2-xTB sets with ``mlpot data xtb``'s generator (train
   600 frames at 300-600 K, seed 0; held-out test 100 frames, seed 2; OOD 100 frames at 1000 K started on
   the phi > 0 side, seed 3); files already in WORKDIR are reused (they are deterministic);
2. trains a K=4 equivariant committee with ``mlpot train`` for 26 epochs (fp32, 1 CPU thread; ~30 min on an
   idle core, ~55 min on the loaded 2-core VM it was built on; an interrupted run resumes where it stopped
   when the command is run again); the trainer calibrates the force std on its validation split (10 % of
   train), as for ``cu-emt``;
3. sets the stop threshold for engines: ``THRESHOLD_FACTOR`` x the largest calibrated per-atom force std on
   the held-out in-distribution test set, stored in the metadata as ``extra["uncertainty_threshold"]``
   (eV/A; :func:`uncertainty_threshold` reads it), exports in float64 to ``pretrained/ala2-xtb.pt`` and
   leaves parity.png, calibration.png and metrics.json in WORKDIR/run.

Trained directly (not by the active-learning loop ``mlpot learn``, which did not exist when it was built).
``--finish WORKDIR`` redoes step 3 from WORKDIR/run/best.pt.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
NAME = "ala2-xtb"
THRESHOLD_FACTOR = 2.0
REFERENCES = ["S. Batzner et al., Nat. Commun. 13, 2453 (2022) (NequIP)",
              "C. Bannwarth, S. Ehlert, S. Grimme, J. Chem. Theory Comput. 15, 1652 (2019) (GFN2-xTB labels)"]
DESCRIPTION = ("Alanine dipeptide (Ace-Ala-Nme, vacuum) GFN2-xTB committee (K=4), E(3)-equivariant, lmax 2, 2 layers, "
               "16 channels, cutoff 5 A, float64; trained on 300-600 K xTB MD around C7eq (phi < 0); "
               "built by mlpot_plugins/pretrained/build_ala2_xtb.py")

CONFIG = {
    "data": {"train": "ala2-train.extxyz", "test": "ala2-test.extxyz", "ood": {"ood-1000K": "ala2-ood.extxyz"}},
    "model": {"species": ["H", "C", "N", "O"], "cutoff": 5.0, "lmax": 2, "n_layers": 2, "channels": 16,
              "radial": "spline", "n_basis": 8, "nonlinearity": "gate", "readout_hidden": 16, "ensemble_size": 4,
              "ensemble": "committee", "seed": 0, "dtype": "float32"},
    "training": {"epochs": 26, "lr": 5e-3, "batch_size": 4, "energy_weight": 1.0, "force_weight": 1.0,
                 "lr_patience": 4, "early_stopping_patience": 15, "val_fraction": 0.1, "seed": 0, "threads": 1,
                 "max_minutes": 60.0},
    "output": {"dir": "run", "name": NAME, "export_dtype": "float64", "description": DESCRIPTION},
}
SETS = {"ala2-train.extxyz": ("train", 0, 600), "ala2-test.extxyz": ("test", 2, 100),
        "ala2-ood.extxyz": ("ood", 3, 100)}


def uncertainty_threshold(model) -> float:
    """The calibrated per-atom force-std stop threshold (eV/A) a shipped committee carries in its metadata."""
    from ..model_file import load

    loaded = model if hasattr(model, "metadata") else load(model)
    value = loaded.metadata.get("extra", {}).get("uncertainty_threshold")
    if value is None:
        raise KeyError(f"{loaded.path.name} carries no extra['uncertainty_threshold']; pass a threshold in eV/A "
                       "(e.g. a few times the largest per-atom force std of an in-distribution run)")
    return float(value)


def finish(work: Path) -> Path:
    """Threshold from the held-out test set, export with it and the xTB references, copy into the package."""
    from ..training.checkpoint import read_checkpoint
    from ..training.dataset import read_frames, to_structures
    from ..training.report import export_checkpoint
    from ..training.train import model_from_checkpoint, predict

    best = work / "run" / "best.pt"
    ck = read_checkpoint(best)
    model = model_from_checkpoint(best)
    hp = ck["hparams"]
    import torch
    from scipy import stats

    preds = {}
    for name in ("test", "ood"):
        frames = to_structures(read_frames(work / f"ala2-{name}.extxyz"), hp["species"], hp["cutoff"],
                               getattr(torch, hp["dtype"]))
        preds[name] = predict(model, frames)
        preds[name]["forces_std"] = preds[name]["forces_std"] * model.uncertainty_scale
    sigma = preds["test"]["forces_std"]
    threshold = float(THRESHOLD_FACTOR * sigma.max())
    pooled_sigma = np.concatenate([p["forces_std"] for p in preds.values()])
    pooled_err = np.concatenate([np.linalg.norm(p["forces"] - p["forces_ref"], axis=1) for p in preds.values()])
    summary = {"spearman_sigma_vs_abs_error_test_plus_ood": float(stats.spearmanr(pooled_sigma, pooled_err).statistic),
               "ood_over_test_median_forces_std": float(np.median(preds["ood"]["forces_std"]) / np.median(sigma)),
               "ood_frames_over_threshold": float(np.mean([s.max() > threshold for s in np.split(
                   preds["ood"]["forces_std"], np.cumsum(preds["ood"]["n_atoms"])[:-1])])),
               "threshold_eV_A": threshold}
    (work / "run" / "ala2_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    extra = {"uncertainty_threshold": round(threshold, 6),
             "uncertainty_threshold_rule": f"{THRESHOLD_FACTOR:g} x the largest calibrated per-atom force std "
                                           "on the held-out 300-600 K test set (eV/A)"}
    out = export_checkpoint(best, work / "run" / "model.pt", dtype="float64", name=NAME, description=DESCRIPTION,
                            references=REFERENCES, more=extra)
    target = HERE / f"{NAME}.pt"
    shutil.copyfile(out, target)
    metrics = json.loads((work / "run" / "metrics.json").read_text())["metrics"]
    print(json.dumps({k: {m: round(v, 4) for m, v in d.items() if isinstance(v, float)}
                      for k, d in metrics.items()}, indent=1))
    print(f"threshold {threshold:.4f} eV/A; wrote {target} ({target.stat().st_size / 1024:.0f} KiB)")
    return target


def main(workdir: str = "ala2-xtb-build") -> Path:
    from ..refdata import write
    from ..training.train import run
    from ..xtb_data import generate

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, (which, seed, frames) in SETS.items():
        if not (work / name).is_file():
            write(work / name, generate("ala2", which, seed=seed, frames=frames))
    (work / "ala2_xtb.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    if not (work / "run" / "metrics.json").is_file():
        resume = (work / "run" / "last.pt").is_file()
        run(work / "ala2_xtb.yaml", resume=resume, progress=sys.stderr.isatty())
    return finish(work)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    from ..runsafe import RunError

    try:
        if sys.argv[1:2] == ["--finish"]:
            finish(Path(sys.argv[2]))
        else:
            main(*sys.argv[1:2])
    except RunError as exc:  # interrupted training (resumable: run the same command again)
        raise SystemExit(f"build_ala2_xtb: {exc}; run the same command again to continue") from None
