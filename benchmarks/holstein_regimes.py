"""Holstein ML force error per regime of the quench tools, against exact diagonalisation (ED) labels.

Regimes (each: force RMSE / std of the ED forces of that regime, committee std, fallback fraction):
  t0     the hot random state a quench starts from (``dynamics.quench_initial_state``), t = 0
  early  ML Langevin quench snapshots at t = 0.5, 1, 2, 5 (new seeds), ED labels
  late   the same quenches at t = 10, 20, 40
  ed     an ED Langevin quench (ED dynamics, ``--ed-L``) at t = 0.5 ... 20: the regime of the training data
  domain random CDW domain states (``data.domain_state``, sizes 2-10) after 20 ML steps

Each regime is scored twice: the ML committee alone, and what the quench tools run by default (``--engine
auto`` of ``mlpot holstein run``, the deck of ``mlpot holstein lammps``): the model's recommended hot-phase
fallback (metadata extra.fallback_default: exact windowed-KPM forces where the calibrated std exceeds the
threshold, for t < until_time; the engines' ``compute_lattice_block_fallback``), with the share of sites that
fell back. ``--threshold``/``--until`` try other values (how the recommendation was chosen); ``--curve``
prints the ML error at every early time (t = 0.5 ... 6, 7, 8, 10, 12: where it stays below 3%).

    PYTHONPATH=. python benchmarks/holstein_regimes.py [--model holstein-d4] [--L 40] [--json out.json]
"""
import argparse
import json
import os
import time

import torch

from mlpot_plugins.holstein.data import domain_state
from mlpot_plugins.holstein.dynamics import MLForces, model_params, quench_initial_state
from mlpot_plugins.holstein.ed import EDForces, ed_solve
from mlpot_plugins.holstein.fallback import recommended_fallback
from mlpot_plugins.holstein.params import periodic_block
from mlpot_plugins.holstein.langevin import LangevinIntegrator
from mlpot_plugins.model_file import load


def quench_snapshots(force_fn, p, L, seeds, times):
    """Snapshots of quenches from the t = 0 hot state (one batch of seeds) at the given times."""
    Q0, P0 = quench_initial_state(L, p, seed=seeds[0], batch=len(seeds))
    integ = LangevinIntegrator(force_fn, p, Q0, P0, seed=seeds[0] + 1)
    out, prev = [], 0.0
    for t in times:
        integ.step(int(round((t - prev) / p.dt)))
        prev = t
        out.append(integ.Q.clone().reshape(-1, L, L))
    return out


def score(model, Q, F_ref, times=None, fallback=None):
    """ML error of the fields Q [B, L, L] vs the ED forces; with ``fallback`` = (threshold, until_time) and
    ``times`` [B] (the time of each field) also the error of the default (gated) forces and the share of
    sites that fell back."""
    out = model.module.compute_lattice(Q, True)
    err = out["forces"].double() - F_ref
    rmse = err.pow(2).mean().sqrt().item()
    res = {"rmse": rmse, "force_std": F_ref.std().item(), "rmse_over_force_std": rmse / F_ref.std().item(),
           "committee_std_rms": out["forces_std"].double().pow(2).mean().sqrt().item(), "sites": err.numel()}
    if fallback is not None:
        thr, until = fallback
        h = model.metadata["fallback_range"]
        F, n = [], 0
        for b in range(Q.shape[0]):
            on = until is None or times[b] < until - 1e-9
            o = model.compute_lattice_block_fallback(periodic_block(Q[b], h), h, thr if on else float("inf"))
            F.append(o["forces"].double())
            n += int(o["fallback_mask"].sum())
        e = (torch.stack(F) - F_ref).pow(2).mean().sqrt().item()
        res.update(default_rmse=e, default_rmse_over_force_std=e / F_ref.std().item(),
                   fallback_fraction=n / err.numel())
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein-d4")
    ap.add_argument("--L", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=2, help="quench seeds per regime (t0 uses 2x)")
    ap.add_argument("--ed-L", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--threshold", type=float, default=None, help="fallback threshold (default: the model's)")
    ap.add_argument("--until", type=float, default=None, help="fallback until time (default: the model's)")
    ap.add_argument("--curve", action="store_true", help="ML error at t = 0, 0.5, 1, 1.5 ... 6 (the crossing)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load(args.model)
    p = model_params(model)
    ml = MLForces(model.module)
    rec = recommended_fallback(model) or {}
    thr = args.threshold if args.threshold is not None else rec.get("threshold")
    until = args.until if args.until is not None else rec.get("until_time")
    fb = (thr, until) if thr is not None and model.metadata.get("fallback") else None
    res = {"model": str(model.path), "L": args.L,
           "machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"}
    t0 = time.perf_counter()
    seeds = [1000 + 7 * k for k in range(args.seeds)]
    regimes, when = {}, {}
    Q0 = torch.cat([quench_initial_state(args.L, p, seed=s, batch=2)[0] for s in seeds])
    regimes["t0"], when["t0"] = Q0, [0.0] * len(Q0)
    times = [0.5, 1, 2, 5, 10, 20, 40]
    snaps = quench_snapshots(ml, p, args.L, seeds, times)
    nb = len(seeds)
    regimes["early"], when["early"] = torch.cat(snaps[:4]), [t for t in times[:4] for _ in range(nb)]
    regimes["late"], when["late"] = torch.cat(snaps[4:]), [t for t in times[4:] for _ in range(nb)]
    gen = torch.Generator().manual_seed(77)
    Qd = torch.cat([domain_state(args.L, 1, p, c, gen)[0] for c in (2.0, 5.0, 10.0)])
    integ = LangevinIntegrator(ml, p, Qd, seed=78)
    integ.step(20)
    regimes["domain"], when["domain"] = integ.Q.clone(), [1e9] * len(Qd)  # not a quench: never the hot phase
    for name, Q in regimes.items():
        res[name] = score(model, Q, ed_solve(Q, p)["forces"], when[name], fb)
    ed_times = [0.5, 1, 2, 5, 10, 20]
    ed_snaps = quench_snapshots(EDForces(p), p, args.ed_L, [2000], ed_times)
    Qe = torch.cat(ed_snaps)
    res[f"ed_quench_{args.ed_L}"] = score(model, Qe, ed_solve(Qe, p)["forces"], ed_times, fb)
    if args.curve:  # the ML error along the early quench: where it falls below 3% (the until_time)
        ct = [0.5 * k for k in range(1, 13)] + [7.0, 8.0, 10.0, 12.0]
        for t, Q in zip([0.0] + ct, [Q0[::2]] + quench_snapshots(ml, p, args.L, seeds, ct)):
            r = score(model, Q, ed_solve(Q, p)["forces"])
            res.setdefault("ml_curve", []).append([t, r["rmse_over_force_std"]])
    res["default_fallback"] = {"threshold": thr, "until_time": until} if fb else None
    res["seconds"] = time.perf_counter() - t0
    print(res["machine"], args.model, "default fallback:", res["default_fallback"])
    for k, v in res.items():
        if isinstance(v, dict) and "rmse" in v:
            line = (f"{k:14s} RMSE {v['rmse']:.4f} / force std {v['force_std']:.3f} = "
                    f"{100 * v['rmse_over_force_std']:.2f}%  committee std {v['committee_std_rms']:.4f}  "
                    f"({v['sites']} sites)")
            if "default_rmse" in v:
                line += (f" | default (fallback): {100 * v['default_rmse_over_force_std']:.2f}%, "
                         f"{100 * v['fallback_fraction']:.1f}% of sites exact")
            print(line)
    for t, e in res.get("ml_curve", []):
        print(f"  ML alone at t = {t:4.1f}: {100 * e:.2f}% of the force std")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
