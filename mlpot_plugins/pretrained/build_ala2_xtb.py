"""Rebuild the shipped ``ala2-xtb`` committee: ``python -m mlpot_plugins.pretrained.build_ala2_xtb [WORKDIR]``.

1. generates the deterministic alanine-dipeptide GFN2-xTB sets with ``mlpot data xtb``'s generator (train
   600 frames at 300-600 K, seed 0; held-out test 100 frames, seed 2; OOD 100 frames at 1000 K started on
   the phi > 0 side, seed 3); files already in WORKDIR are reused (they are deterministic);
2. runs the active-learning loop ``mlpot learn`` (``LEARN``; config written to WORKDIR/ala2_learn.yaml):
   iteration 0 continues training the committee in the package (``training.init_from``: copied to
   WORKDIR/start.pt first, so a rebuild is self-contained; ``--from-scratch`` starts from random weights) on the
   600 frames with a cosine learning-rate decay (30 epochs); iterations 1-5 each explore with the previous
   iteration's committee (ASE Langevin, 4 walkers x 500 steps of 0.5 fs at 300-600 K, checked every 10 steps;
   a walker ends early once 24 of its frames are over 0.45 eV/A),
   label the 48 frames of largest committee force std with GFN2-xTB (tblite) and retrain from the previous
   weights on everything labelled so far (30 epochs, cosine); the loop recalibrates the force std on its
   validation split (10 % of train) and exports every iteration. fp32 training, 1 CPU thread, ~13 min per
   iteration on the 2-core VM; an interrupted run continues where it stopped when the same command is run
   again (``mlpot learn --resume``);
3. a final fit (``POLISH``, plain ``mlpot train`` runs in WORKDIR/final, final_2, ...): the loop converges (its
   walkers stay under the threshold) while the in-distribution error still falls at the end of every 30-epoch
   cycle, so the last iteration's committee is trained on to convergence on the same 840 structures (its own
   train/validation split) with ``POLISH_CYCLES`` longer cosine cycles (``POLISH_EPOCHS`` each, each from the
   previous one's best weights), then recalibrated on validation;
4. sets the stop threshold for engines: ``THRESHOLD_FACTOR`` x the largest calibrated per-atom force std on
   the held-out in-distribution test set, stored in the metadata as ``extra["uncertainty_threshold"]``
   (eV/A; :func:`uncertainty_threshold` reads it), exports in float64 to ``pretrained/ala2-xtb.pt`` and
   leaves parity/calibration PNGs and ala2_summary.json (held-out metrics) in WORKDIR.

``--finish WORKDIR`` redoes step 4 from the last finished final-fit cycle's best.pt (or the last iteration's).
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
               "16 channels, cutoff 5 A, float64; trained with the active-learning loop `mlpot learn` on 300-600 K xTB MD "
               "around C7eq (phi < 0) plus the frames of largest committee disagreement of its own 300-600 K MD; "
               "built by mlpot_plugins/pretrained/build_ala2_xtb.py")

CONFIG = {
    "data": {"train": "ala2-train.extxyz", "test": "ala2-test.extxyz", "ood": {"ood-1000K": "ala2-ood.extxyz"}},
    "model": {"species": ["H", "C", "N", "O"], "cutoff": 5.0, "lmax": 2, "n_layers": 2, "channels": 16,
              "radial": "spline", "n_basis": 8, "nonlinearity": "gate", "readout_hidden": 16, "ensemble_size": 4,
              "ensemble": "committee", "seed": 0, "dtype": "float32"},
    "training": {"epochs": 30, "lr": 2e-3, "min_lr": 1e-5, "lr_schedule": "cosine", "batch_size": 4,
                 "energy_weight": 1.0, "force_weight": 1.0, "early_stopping_patience": 30, "val_fraction": 0.1,
                 "seed": 0, "threads": 1, "init_from": "start.pt"},
    "output": {"dir": "learn", "name": NAME, "export_dtype": "float64"},
}
LEARN = {
    "reference": {"calculator": "xtb"},
    "explore": {"engine": "ase", "walkers": 4, "steps": 500, "check_every": 10, "temperatures": [300, 400, 500, 600],
                "timestep_fs": 0.5, "friction": 0.02, "seed": 0, "min_distance": 0.7, "stop_after": 24},
    "select": {"mode": "topk", "threshold": 0.45, "per_iteration": 48, "score": "max", "min_separation": 2},
    "stop": {"label_budget": 240, "max_iterations": 5},
}
POLISH_EPOCHS = 60
POLISH_CYCLES = 3
POLISH = {"epochs": POLISH_EPOCHS, "lr": 1.5e-3, "min_lr": 1e-5, "lr_schedule": "cosine"}
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


def last_iteration(work: Path) -> Path:
    iters = sorted((work / CONFIG["output"]["dir"]).glob("iter_*/best.pt"))
    if not iters:
        raise FileNotFoundError(f"{work / CONFIG['output']['dir']} holds no finished iteration (iter_*/best.pt); "
                                "run the build first")
    return iters[-1].parent


def final_dirs(work: Path) -> list:
    """The final fit's run folders, one per cosine cycle (``POLISH_CYCLES``)."""
    return [work / ("final" if c == 0 else f"final_{c + 1}") for c in range(POLISH_CYCLES)]


def polish(work: Path) -> Path:
    """Step 3: train the last iteration's committee on (``POLISH``, ``POLISH_CYCLES`` cycles, each from the
    previous one's best weights) with its own data, split and architecture; resumable (an interrupted cycle
    continues when the build is run again)."""
    from ..training.train import architecture_options
    from ..training.train import run as train

    run = last_iteration(work)
    start = run / "best.pt"
    for final in final_dirs(work):
        if not (final / "model.pt").is_file():  # not finished (model.pt is exported after calibration)
            model = dict(architecture_options(start), dtype=CONFIG["model"]["dtype"], seed=CONFIG["model"]["seed"])
            training = dict(CONFIG["training"], **POLISH, early_stopping_patience=POLISH_EPOCHS, init_from=str(start))
            config = {"data": dict(CONFIG["data"], train=str(run / "train.extxyz")), "model": model,
                      "training": training, "output": {"dir": final.name, "name": NAME, "export_dtype": "float64"}}
            path = work / f"ala2_{final.name}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            train(path, resume=(final / "last.pt").is_file(), progress=sys.stderr.isatty())
        start = final / "best.pt"
    return start.parent


def finish(work: Path) -> Path:
    """Threshold from the held-out test set, export with it and the xTB references, copy into the package."""
    from ..training.checkpoint import read_checkpoint
    from ..training.dataset import read_frames, to_structures
    from ..training.report import evaluate_sets, export_checkpoint, plot_calibration, plot_parity
    from ..training.train import model_from_checkpoint

    done = [d / "best.pt" for d in final_dirs(work) if (d / "model.pt").is_file()]
    best = done[-1] if done else last_iteration(work) / "best.pt"
    ck = read_checkpoint(best)
    model = model_from_checkpoint(best)
    hp = ck["hparams"]
    import torch
    from scipy import stats

    sets = {name: to_structures(read_frames(work / f"ala2-{name}.extxyz"), hp["species"], hp["cutoff"],
                                getattr(torch, hp["dtype"])) for name in ("test", "ood")}
    result = evaluate_sets(model, sets, model.uncertainty_scale)  # accuracy + calibrated-σ metrics per set
    preds, metrics = result["predictions"], result["metrics"]
    sigma = preds["test"]["forces_std"]
    threshold = float(THRESHOLD_FACTOR * sigma.max())
    pooled_sigma = np.concatenate([p["forces_std"] for p in preds.values()])
    pooled_err = np.concatenate([np.linalg.norm(p["forces"] - p["forces_ref"], axis=1) for p in preds.values()])
    summary = {"model": str(best), "uncertainty_scale": float(model.uncertainty_scale), "held_out": metrics,
               "spearman_sigma_vs_abs_error_test_plus_ood": float(stats.spearmanr(pooled_sigma, pooled_err).statistic),
               "ood_over_test_median_forces_std": metrics["ood"]["median_std_over_test"],
               "ood_frames_over_threshold": float(np.mean([s.max() > threshold for s in np.split(
                   preds["ood"]["forces_std"], np.cumsum(preds["ood"]["n_atoms"])[:-1])])),
               "threshold_eV_A": threshold}
    (work / "ala2_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    plot_parity(preds, work / "parity.png")
    plot_calibration(preds, work / "calibration.png")
    extra = {"uncertainty_threshold": round(threshold, 6),
             "uncertainty_threshold_rule": f"{THRESHOLD_FACTOR:g} x the largest calibrated per-atom force std "
                                           "on the held-out 300-600 K test set (eV/A)"}
    out = export_checkpoint(best, work / "model.pt", dtype="float64", name=NAME, description=DESCRIPTION,
                            references=REFERENCES, more=extra)
    target = HERE / f"{NAME}.pt"
    shutil.copyfile(out, target)
    print(f"threshold {threshold:.4f} eV/A; wrote {target} ({target.stat().st_size / 1024:.0f} KiB)")
    return target


def main(workdir: str = "ala2-xtb-build", from_scratch: bool = False) -> Path:
    from ..learn.loop import run as learn
    from ..refdata import write
    from ..xtb_data import generate

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, (which, seed, frames) in SETS.items():
        if not (work / name).is_file():
            write(work / name, generate("ala2", which, seed=seed, frames=frames))
    config = json.loads(json.dumps(CONFIG))
    config.update(LEARN)
    if from_scratch:
        del config["training"]["init_from"]
    elif not (work / "start.pt").is_file():
        shutil.copyfile(HERE / f"{NAME}.pt", work / "start.pt")
    (work / "ala2_learn.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    state = work / CONFIG["output"]["dir"] / "learn_state.pt"
    learn(work / "ala2_learn.yaml", resume=state.is_file(), progress=sys.stderr.isatty())
    polish(work)
    return finish(work)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    from ..runsafe import RunError

    try:
        if sys.argv[1:2] == ["--finish"]:
            finish(Path(sys.argv[2]))
        else:
            args = [a for a in sys.argv[1:] if a != "--from-scratch"]
            main(*args[:1], from_scratch="--from-scratch" in sys.argv[1:])
    except RunError as exc:  # interrupted training (resumable: run the same command again)
        raise SystemExit(f"build_ala2_xtb: {exc}; run the same command again to continue") from None
