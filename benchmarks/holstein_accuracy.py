"""Holstein ML accuracy: held-out force RMSE at 40x40 (ED labels), uncertainty-gated fallback (error vs
cost) and NVE energy drift of the direct and the energy-based committee.

    PYTHONPATH=. python benchmarks/holstein_accuracy.py [--L 40] [--snapshots 3]
"""
import argparse
import json
import os
import time

import torch

from mlpot_plugins.model_file import load
from mlpot_plugins.holstein.dynamics import MLForces, model_params
from mlpot_plugins.holstein.ed import ed_solve
from mlpot_plugins.holstein.fallback import GatedForces
from mlpot_plugins.holstein.langevin import LangevinIntegrator
from mlpot_plugins.holstein.params import HolsteinParams


def held_out_40(model, p, L, times, seed):
    """Configurations along an ML quench on L x L, labelled by ED."""
    f = MLForces(model.module)
    snaps = []
    prev = 0
    gen = torch.Generator().manual_seed(seed)
    from mlpot_plugins.holstein.params import hot_random_state

    Q0, P0 = hot_random_state(L, (), 5.0, p, gen)
    integ = LangevinIntegrator(f, p, Q0, P0, seed=seed + 1)
    for t in times:
        integ.step(int(round((t - prev) / p.dt)))
        prev = t
        snaps.append(integ.Q.clone())
    if not snaps:
        return None, None, None
    Q = torch.stack(snaps)
    t0 = time.perf_counter()
    ed = ed_solve(Q, p)
    return Q, ed["forces"], (time.perf_counter() - t0) / len(Q)


def drift(model_name, p, L, steps, seed, energy_model):
    """NVE (gamma = 0) from a domain state: drift of KE + ED free energy (same yardstick for every
    engine) and, for the energy model, of KE + its own energy. Per site, per unit time."""
    from mlpot_plugins.holstein.ed import EDForces

    model = load(model_name) if model_name != "ed" else None
    pn = HolsteinParams.from_dict({**p.to_dict(), "gamma": 0.0})
    f = MLForces(model.module) if model is not None else EDForces(p)
    gen = torch.Generator().manual_seed(seed)
    from mlpot_plugins.holstein.data import domain_state

    Q0, P0 = domain_state(L, 1, p, L / 4, gen)
    integ = LangevinIntegrator(f, pn, Q0[0], P0[0], seed=seed)
    rows = []
    for k in range(steps // 50 + 1):
        if k:
            integ.step(50)
        ke = integ.kinetic_energy().item()
        e_ed = ed_solve(integ.Q, p)["free_energy"].item() + ke
        e_own = (model.module.compute_lattice(integ.Q, False)["energy"].item() + ke) if energy_model else float("nan")
        rows.append((integ.time, e_ed, e_own))
    t = torch.tensor([r[0] for r in rows])
    out = {}
    for i, name in ((1, "ed_yardstick"), (2, "own_energy")):
        e = torch.tensor([r[i] for r in rows], dtype=torch.float64)
        if torch.isnan(e).any():
            continue
        slope = torch.linalg.lstsq(torch.stack([t, torch.ones_like(t)], 1).double(), e[:, None]).solution[0, 0]
        out[name] = {"drift_per_site_per_time": slope.item() / (L * L),
                     "max_abs_deviation_per_site": (e - e[0]).abs().max().item() / (L * L)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="holstein-d4")
    ap.add_argument("--energy-model", default="holstein-d4-energy")
    ap.add_argument("--L", type=int, default=40)
    ap.add_argument("--times", default="2,10,40", help="ML quench times of the 40x40 held-out snapshots")
    ap.add_argument("--drift-L", type=int, default=16)
    ap.add_argument("--drift-steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only-drift", action="store_true", help="skip the 40x40 accuracy and fallback parts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.model)
    p = model_params(model)
    res = {"machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"}
    print(res["machine"])
    tr = model.metadata["extra"]["training"]
    print(f"held-out L={tr['data_L']} ED trajectories: force RMSE {tr['rmse']:.4f} = "
          f"{100 * tr['rmse_over_force_std']:.2f}% of the force std {tr['force_std']:.3f} "
          f"({100 * tr['rmse_over_electronic_force_std']:.2f}% of the electronic-force std)")
    times = [float(x) for x in args.times.split(",")]
    if args.only_drift:
        times = []
    Q, F_ed, ed_s = held_out_40(model, p, args.L, times, seed=11)
    res["fallback"] = []
    for _ in [0] if Q is not None else []:
        fallback_part(model, p, Q, F_ed, ed_s, res, args)
    drift_part(args, p, res)


def fallback_part(model, p, Q, F_ed, ed_s, res, args):
    times = [float(x) for x in args.times.split(",")]
    t0 = time.perf_counter()
    out = model.module.compute_lattice(Q, True)
    ml_s = (time.perf_counter() - t0) / len(Q)
    err = (out["forces"].double() - F_ed)
    rmse, fstd = err.pow(2).mean().sqrt().item(), F_ed.std().item()
    per_t = [err[i].pow(2).mean().sqrt().item() for i in range(len(Q))]
    print(f"held-out {args.L}x{args.L} (ML quench snapshots at t={times}, ED labels): force RMSE {rmse:.4f} = "
          f"{100 * rmse / fstd:.2f}% of force std {fstd:.3f}; per snapshot {[round(x, 4) for x in per_t]}; "
          f"committee std (calibrated) {out['forces_std'].pow(2).mean().sqrt():.4f}")
    res["held_out_40"] = {"rmse": rmse, "force_std": fstd, "per_snapshot": per_t, "times": times}
    std = out["forces_std"]
    corr = torch.corrcoef(torch.stack([std.flatten().double(), err.abs().flatten()]))[0, 1].item()
    print(f"correlation |error| vs predicted std: {corr:.2f}")
    for q in (0.99, 0.95, 0.9, 0.8):
        thr = torch.quantile(std.flatten().double(), q).item()
        gate = GatedForces(model.module, p, thr, radius=6, max_fraction=1.0)
        t0 = time.perf_counter()
        Fg = torch.stack([gate(Q[i]) for i in range(len(Q))])
        g_s = (time.perf_counter() - t0) / len(Q)
        e2 = (Fg - F_ed).pow(2).mean().sqrt().item()
        frac = gate.stats["fallback_sites"] / gate.stats["sites"]
        row = {"threshold": thr, "fallback_fraction": frac, "rmse": e2, "rmse_reduction": 1 - e2 / rmse,
               "cost_vs_ml": g_s / ml_s, "cost_vs_ed": g_s / ed_s}
        res["fallback"].append(row)
        print(f"fallback std>{thr:.4f}: {100 * frac:.1f}% of sites -> RMSE {e2:.4f} ({100 * (1 - e2 / rmse):.0f}% "
              f"lower), cost {g_s / ml_s:.1f}x ML, {g_s / ed_s:.3f}x ED")


def drift_part(args, p, res):
    res["drift"] = {}
    for name, energy in (("ed", False), (args.model, False), (args.energy_model, True)):
        try:
            d = drift(name, p, args.drift_L, args.drift_steps, 3, energy)
        except (FileNotFoundError, KeyError) as exc:
            print(f"skip drift for {name}: {exc}")
            continue
        res["drift"][name] = d
        for k, v in d.items():
            print(f"NVE {args.drift_L}x{args.drift_L}, {args.drift_steps} steps dt={p.dt}: {name} energy ({k}) "
                  f"drift {v['drift_per_site_per_time']:.2e} /site/time, max |dE| {v['max_abs_deviation_per_site']:.2e} /site")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
