"""The ``mlpot learn`` report: ``OUT/report.json`` (one row per iteration: labels, errors per set, median σ,
Spearman ρ(σ, |error|), timings and the loop overhead) and two PNGs: ``learning_curve.png`` (force RMSE of
every evaluated set vs number of labels) and ``sigma_vs_error.png`` (median calibrated σ vs force RMSE per
set and iteration: a calibrated committee sits near the diagonal, σ ≈ RMSE·√3 per atom)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..runsafe import atomic_write, atomic_write_text


def _series(rows, key):
    sets = sorted({s for r in rows for s in r.get("metrics", {})})
    out = {}
    for s in sets:
        pts = [(r["n_labels"], r["metrics"][s].get(key, np.nan), r["metrics"][s].get("median_force_std", np.nan))
               for r in rows if s in r.get("metrics", {})]
        out[s] = np.array(pts, dtype=float)
    return out


def plot(out: Path, rows, unit: str = "eV/Å", components: int = 3) -> None:
    """The two PNGs; ``unit`` of forces and ``components`` per atom (3; 1 for a lattice site's scalar force)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(rows, "force_rmse")
    if not series:
        return
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for s, p in series.items():
        ax.plot(p[:, 0], p[:, 1], "o-", label=s)
    ax.set_xlabel("labels added by the loop")
    ax.set_ylabel(f"force RMSE [{unit}]")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "learning_curve.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    lo, hi = np.inf, 0.0
    for s, p in series.items():
        x, y = p[:, 2], p[:, 1] * np.sqrt(float(components))
        ax.plot(x, y, "o-", label=s)
        for (n, xx, yy) in zip(p[:, 0], x, y):
            ax.annotate(f"{int(n)}", (xx, yy), fontsize=6)
        good = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        if good.any():
            lo, hi = min(lo, x[good].min(), y[good].min()), max(hi, x[good].max(), y[good].max())
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    site = "per-site" if components == 1 else "per-atom"
    ax.set_xlabel(f"median calibrated {site} force σ [{unit}]")
    ax.set_ylabel(f"{site} force RMSE{' (√3 × component)' if components == 3 else ''} [{unit}]")
    ax.set_title("σ vs error (numbers: labels)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "sigma_vs_error.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_report(out: Path, st: Dict[str, Any], cfg: Dict[str, Any], log=print) -> Dict[str, Any]:
    rows = st["rows"]
    trained = [r for r in rows if "timings" in r and "train" in r.get("timings", {}) and r["iteration"] > 0]
    overhead = [r["overhead_fraction"] for r in trained if "overhead_fraction" in r]
    report = {"phase": st["phase"], "stop_reason": st.get("stop_reason"), "n_labels": st["n_labels"],
              "iterations": rows, "models": [r["model"] for r in rows if "model" in r],
              "overhead_fraction_max": max(overhead) if overhead else None,
              "overhead_fraction_mean": float(np.mean(overhead)) if overhead else None}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    lattice = cfg.get("system") == "lattice"
    plot(out, [r for r in rows if "metrics" in r], *(("t/Q", 1) if lattice else ("eV/Å", 3)))
    if report["overhead_fraction_max"] is not None:
        log(f"loop overhead (all but labelling and training): mean {100 * report['overhead_fraction_mean']:.1f} %, "
            f"max {100 * report['overhead_fraction_max']:.1f} % of an iteration")
    log(f"wrote {out / 'report.json'}, learning_curve.png, sigma_vs_error.png")
    return report
