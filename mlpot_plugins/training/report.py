"""End of training: calibrate on validation, measure every set, draw parity/calibration PNGs, export."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..model_file import export
from ..runsafe import atomic_write_text
from .calibration import calibration_curve, fit_scale, uncertainty_metrics
from .dataset import read_frames, to_structures
from .train import accuracy, predict

REFERENCES = ["S. Batzner et al., Nat. Commun. 13, 2453 (2022) (NequIP)",
              "K. W. Jacobsen, P. Stoltze, J. K. Norskov, Surf. Sci. 366, 394 (1996) (EMT reference data)"]


def evaluate_sets(model, sets: Dict[str, list], scale: float) -> Dict[str, Any]:
    """Accuracy and calibrated-uncertainty metrics per named set; raw predictions for plots."""
    metrics, preds = {}, {}
    for name, structures in sets.items():
        pred = predict(model, structures)
        pred["forces_std"] = pred["forces_std"] * scale
        m = accuracy(pred)
        if model.ensemble_size > 1:
            m.update(uncertainty_metrics(pred["forces_std"], pred["forces"] - pred["forces_ref"]))
        metrics[name], preds[name] = m, pred
    if model.ensemble_size > 1 and "test" in metrics:
        for name in sets:
            if name.startswith("ood"):
                metrics[name]["median_std_over_test"] = (metrics[name]["median_force_std"]
                                                         / metrics["test"]["median_force_std"])
    return {"metrics": metrics, "predictions": preds}


def plot_parity(preds: Dict[str, Dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, p in preds.items():
        axes[0].scatter(p["energy_ref"] / p["n_atoms"], p["energy"] / p["n_atoms"], s=8, label=name)
        axes[1].scatter(p["forces_ref"].ravel(), p["forces"].ravel(), s=2, alpha=0.5, label=name)
    for ax, what in zip(axes, ("energy per atom [eV]", "force component [eV/A]")):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {what}")
        ax.set_ylabel(f"predicted {what}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_calibration(preds: Dict[str, Dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    for name, p in preds.items():
        err = p["forces"] - p["forces_ref"]
        exp, obs = calibration_curve(p["forces_std"], err)
        axes[0].plot(exp, obs, label=name)
        axes[1].scatter(p["forces_std"], np.linalg.norm(err, axis=1), s=3, alpha=0.5, label=name)
    axes[0].set_xlabel("expected fraction in central interval")
    axes[0].set_ylabel("observed fraction")
    axes[0].legend(fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("calibrated per-atom force std [eV/A]")
    axes[1].set_ylabel("|force error| [eV/A]")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def final_report(trainer, log=print) -> Dict[str, Any]:
    model, cfg = trainer.model, trainer.cfg
    out_dir = trainer.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    hp = trainer.hparams
    scale = 1.0
    if model.ensemble_size > 1:
        raw = predict(model, trainer.val_set)
        scale = fit_scale(raw["forces_std"], raw["forces"] - raw["forces_ref"])
    model.uncertainty_scale = scale
    sets = {"val": trainer.val_set}
    extra_paths = {}
    if cfg["data"].get("test"):
        extra_paths["test"] = cfg["data"]["test"]
    extra_paths.update(cfg["data"].get("ood", {}))
    for name, p in extra_paths.items():
        sets[name] = to_structures(read_frames(p), hp["species"], hp["cutoff"], trainer.dtype, p)
    result = evaluate_sets(model, sets, scale)
    metrics = result["metrics"]
    plot_parity({k: v for k, v in result["predictions"].items() if not k.startswith("ood")},
                out_dir / "parity.png")
    if model.ensemble_size > 1:
        plot_calibration(result["predictions"], out_dir / "calibration.png")
    trainer.save("best.pt")  # now holds the calibrated scale
    ck = torch.load(out_dir / "best.pt", weights_only=False)
    ck["state_dict"] = ck["best_state_dict"]
    ck["metrics"] = metrics
    trainer.save("best.pt", ck)
    summary = {"uncertainty_scale": scale, "metrics": metrics, "epochs": trainer.epoch,
               "history": trainer.history, "hparams": hp}
    atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=1))
    export_dtype = cfg["output"].get("export_dtype", "float64")
    exported = export_checkpoint(out_dir / "best.pt", out_dir / "model.pt", dtype=export_dtype,
                                 name=cfg["output"].get("name", ""),
                                 description=cfg["output"].get("description", ""))
    for name, m in metrics.items():
        log(f"[{name}] " + ", ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float)))
    log(f"uncertainty scale {scale:.4g}; wrote {out_dir / 'parity.png'}, metrics.json and {exported}")
    return summary


def export_checkpoint(checkpoint, out, dtype: str = "float64", name: str = "", description: str = "",
                      references=None, more=None):
    """Rebuild the model of a `mlpot train` checkpoint and write it through the exported-model contract
    (``references`` replace the default ones; ``more`` entries are added to the metadata's ``extra``)."""
    from .checkpoint import read_checkpoint
    from .train import model_from_checkpoint

    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    model = model_from_checkpoint(checkpoint).to(getattr(torch, dtype))
    ck = read_checkpoint(checkpoint)
    hp = ck["hparams"]
    metrics = ck.get("metrics", {})
    desc = description or (f"E(3)-equivariant {hp['ensemble']} (K={hp['ensemble_size']}) on "
                           f"{'/'.join(hp['species'])}, lmax={hp['lmax']}, {hp['n_layers']} layers, "
                           f"{hp['channels']} channels, {hp['radial']} radial, {hp['nonlinearity']} nonlinearity")
    extra = {"architecture": "mlpot_plugins.models.equivariant.EquivariantPotential",
             "hparams": {k: v for k, v in hp.items() if k != "species"}}
    if metrics:
        extra["metrics"] = {s: {k: round(v, 6) for k, v in m.items() if isinstance(v, float)}
                            for s, m in metrics.items()}
    extra.update(more or {})
    return export(model, out, name=name or Path(out).stem, description=desc,
                  references=REFERENCES if references is None else list(references), extra=extra)
