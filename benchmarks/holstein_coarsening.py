"""Holstein CDW kinetics: ML vs ED S(pi,pi,t) over seeds, and an ML coarsening run with L(t) and its
growth exponent (Allen-Cahn: 1/2). Writes PNGs and JSON into --out.

    PYTHONPATH=. python benchmarks/holstein_coarsening.py --compare-L 16 --seeds 4 --compare-steps 600 \
        --coarsen-L 100 --coarsen-steps 4000
"""
import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from mlpot_plugins.model_file import load
from mlpot_plugins.holstein.dynamics import make_forces, model_params, run_quench
from mlpot_plugins.holstein.observables import growth_exponent, plot_growth, plot_snapshot, s_pi_pi


def _stats(a):
    """[seeds, times] -> mean, standard error of the mean."""
    return {"mean": a.mean(0).tolist(), "sem": (a.std(0, ddof=1) / math.sqrt(a.shape[0])).tolist()}


def ed_from_data(path):
    """S(pi,pi,t)/N of the ED quench trajectories stored in a training-data file (every snapshot)."""
    from mlpot_plugins.holstein.data import load_data

    d = load_data(path)
    kinds = d.get("kind") or ["quench"] * len(d["traj"])
    sel = torch.tensor([k == "quench" for k in kinds])
    Q, traj, t = d["Q"][sel].double(), d["traj"][sel], d["time"][sel]
    row = {tr: i for i, tr in enumerate(sorted(set(traj.tolist())))}
    times = sorted(set(round(float(x), 6) for x in t))
    col = {tt: j for j, tt in enumerate(times)}
    a = np.full((len(row), len(times)), np.nan)
    for tr, tt, sp in zip(traj.tolist(), t.tolist(), s_pi_pi(Q).tolist()):
        a[row[tr], col[round(tt, 6)]] = sp
    return int(d["L"]), times, a


def plot_compare(res, path, title):
    """Mean S(pi,pi)/N of each engine with a +-1 s.e.m. band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.4), dpi=110)
    t = np.array(res["t"])
    for eng, c in (("ed", "k"), ("ml", "C3")):
        m, e = np.array(res[eng]["mean"]), np.array(res[eng]["sem"])
        ax.plot(t, m, color=c, label=f"{eng.upper()} (mean ± s.e.m.)")
        ax.fill_between(t, m - e, m + e, color=c, alpha=0.2, lw=0)
    ax.set_xlabel("time t"); ax.set_ylabel(r"$S(\pi,\pi)/N$")
    ax.set_title(title, fontsize=9); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path); plt.close(fig)


def compare(model, p, L, seeds, steps, every, out, ed_data=None):
    """Each engine quenches `seeds` hot states (batched); S(pi,pi)/N mean and s.e.m. vs t. With ed_data the
    ED side is read from the quench trajectories of a training-data file (other seeds of the same hot
    distribution) and the ML side runs as many seeds to the same times."""
    res = {}
    engines = ("ml", "ed")
    if ed_data:
        L, times, a = ed_from_data(ed_data)
        seeds, every = a.shape[0], int(round((times[1] - times[0]) / p.dt))
        steps = int(round(times[-1] / p.dt))
        res["ed"] = dict(_stats(a), source=str(ed_data))
        engines = ("ml",)
    for engine in engines:
        forces = make_forces(engine, p, model)
        # the seeds run as one batch (one batched eigh / one model call per step)
        r = run_quench(forces, p, L, steps, seed=100, batch=seeds, record_every=every, progress=True)
        a_eng = np.array(r["s_pi_pi_per_sample"]).T  # [seeds, times]
        if ed_data:  # ML records t = 0 too; the data start one stride later
            a_eng = a_eng[:, 1:]
            r["t"] = r["t"][1:]
        res.setdefault("t", r["t"])
        res[engine] = dict(_stats(a_eng), wall_per_seed=r["wall_seconds"])
    m, e = np.array(res["ml"]["mean"]), np.array(res["ed"]["mean"])
    err = np.sqrt(np.array(res["ml"]["sem"]) ** 2 + np.array(res["ed"]["sem"]) ** 2)
    z = np.abs(m - e) / np.maximum(err, 1e-12)
    res["z_max"], res["z_rms"] = float(z[1:].max()), float(np.sqrt((z[1:] ** 2).mean()))
    res["frac_within_2sigma"] = float((z[1:] < 2).mean())
    res["L"], res["seeds"] = L, seeds
    plot_compare(res, out / "spipi_ml_vs_ed.png",
                 f"{L}x{L}, {seeds} seeds" + (" (ED: training-data trajectories)" if ed_data else ""))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="holstein-d4")
    ap.add_argument("--compare-L", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--compare-steps", type=int, default=600)
    ap.add_argument("--coarsen-L", type=int, default=100)
    ap.add_argument("--coarsen-steps", type=int, default=4000)
    ap.add_argument("--t-min", type=float, default=20.0, help="start of the growth-exponent fit window")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/holstein-coarsening")
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--ed-data", default=None,
                    help="take the ED side from the quench trajectories of this training-data file "
                         "(e.g. the 40x40 GPU data); --compare-L/--seeds/--compare-steps then follow the file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load(args.model)
    p = model_params(model)
    print(f"{os.cpu_count()}-core CPU, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}")
    res = {}
    if not args.skip_compare and args.compare_steps:
        c = compare(model, p, args.compare_L, args.seeds, args.compare_steps, 25, out, args.ed_data)
        res["compare"] = c
        print(f"S(pi,pi,t) ML vs ED on {c['L']}x{c['L']}, {c['seeds']} seeds, t <= "
              f"{c['t'][-1]:g}: max |diff|/sigma {c['z_max']:.2f}, rms {c['z_rms']:.2f}, "
              f"{100 * c['frac_within_2sigma']:.0f}% of times within 2 sigma; final ML "
              f"{c['ml']['mean'][-1]:.3f}±{c['ml']['sem'][-1]:.3f} vs ED {c['ed']['mean'][-1]:.3f}±{c['ed']['sem'][-1]:.3f}")
    if args.coarsen_steps:
        r = run_quench(make_forces("ml", p, model), p, args.coarsen_L, args.coarsen_steps, seed=7,
                       record_every=max(1, args.coarsen_steps // 100), out_dir=out, snapshots=4)
        fit = growth_exponent(r["t"], r["domain_length"], t_min=args.t_min,
                              t_max=None)
        plot_growth(r["t"], r["domain_length"], out / "domain_growth.png", fit)
        plot_snapshot(r["final_Q"], out / "final_order_field.png",
                      f"ML quench {args.coarsen_L}x{args.coarsen_L}, t={r['t'][-1]:g}", p.cdw_amplitude())
        res["coarsen"] = {k: v for k, v in r.items() if k != "final_Q"}
        res["coarsen"]["fit"] = fit
        print(f"ML coarsening {args.coarsen_L}x{args.coarsen_L}, {args.coarsen_steps} steps "
              f"({r['wall_seconds']:.0f} s, {r['site_steps_per_second']:.3g} site-steps/s): L(t) "
              f"{r['domain_length'][1]:.2f} -> {r['domain_length'][-1]:.2f}; growth exponent "
              f"{fit['exponent']:.3f} ± {fit['exponent_err']:.3f} for t >= {args.t_min} (Allen-Cahn 0.5)")
    (out / "results.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
