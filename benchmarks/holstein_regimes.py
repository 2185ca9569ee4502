"""Holstein ML force error per regime of the quench tools, against exact diagonalisation (ED) labels.

Regimes (each: force RMSE / std of the ED forces of that regime, committee std, fallback fraction):
  t0     the hot random state a quench starts from (``dynamics.quench_initial_state``), t = 0
  early  ML Langevin quench snapshots at t = 0.5, 1, 2, 5 (new seeds), ED labels
  late   the same quenches at t = 10, 20, 40
  ed     an ED Langevin quench (ED dynamics, ``--ed-L``) at t = 0.5 ... 20: the regime of the training data
  domain random CDW domain states (``data.domain_state``, sizes 2-10) after 20 ML steps

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
        out.append(integ.Q.clone())
    return out


def score(model, Q, F_ref):
    out = model.module.compute_lattice(Q, True)
    err = out["forces"].double() - F_ref
    rmse = err.pow(2).mean().sqrt().item()
    return {"rmse": rmse, "force_std": F_ref.std().item(), "rmse_over_force_std": rmse / F_ref.std().item(),
            "committee_std_rms": out["forces_std"].double().pow(2).mean().sqrt().item(), "sites": err.numel()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein-d4")
    ap.add_argument("--L", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=2, help="quench seeds per regime (t0 uses 2x)")
    ap.add_argument("--ed-L", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load(args.model)
    p = model_params(model)
    ml = MLForces(model.module)
    res = {"model": str(model.path), "L": args.L,
           "machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"}
    t0 = time.perf_counter()
    seeds = [1000 + 7 * k for k in range(args.seeds)]
    regimes = {}
    Q0 = torch.cat([quench_initial_state(args.L, p, seed=s, batch=2)[0] for s in seeds])
    regimes["t0"] = Q0
    snaps = quench_snapshots(ml, p, args.L, seeds, [0.5, 1, 2, 5, 10, 20, 40])
    regimes["early"] = torch.cat(snaps[:4])
    regimes["late"] = torch.cat(snaps[4:])
    gen = torch.Generator().manual_seed(77)
    Qd = torch.cat([domain_state(args.L, 1, p, c, gen)[0] for c in (2.0, 5.0, 10.0)])
    integ = LangevinIntegrator(ml, p, Qd, seed=78)
    integ.step(20)
    regimes["domain"] = integ.Q.clone()
    for name, Q in regimes.items():
        res[name] = score(model, Q, ed_solve(Q, p)["forces"])
    ed_snaps = quench_snapshots(EDForces(p), p, args.ed_L, [2000], [0.5, 1, 2, 5, 10, 20])
    Qe = torch.stack(ed_snaps)
    res[f"ed_quench_{args.ed_L}"] = score(model, Qe, ed_solve(Qe, p)["forces"])
    res["seconds"] = time.perf_counter() - t0
    print(res["machine"], args.model)
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"{k:14s} RMSE {v['rmse']:.4f} / force std {v['force_std']:.3f} = "
                  f"{100 * v['rmse_over_force_std']:.2f}%  committee std {v['committee_std_rms']:.4f}  "
                  f"({v['sites']} sites)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
