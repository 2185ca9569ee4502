"""Alanine dipeptide in vacuum: phi/psi distribution of an ML-driven run (with committee credible intervals by
reweighting to each member) vs an xTB-driven run of equal length; Jensen-Shannon divergence.

    python benchmarks/ala2_ramachandran.py run --driver ml  --seed 0 --ps 3 --out out/rama/ml-s0.npz
    python benchmarks/ala2_ramachandran.py run --driver xtb --seed 0 --ps 3 --out out/rama/xtb-s0.npz
    python benchmarks/ala2_ramachandran.py analyse --ml out/rama/ml-s*.npz --xtb out/rama/xtb-s*.npz \
        --png docs/img/ala2-ramachandran.png

``run``: seeded Langevin MD (the ``mlpot data xtb`` driver: 0.5 fs, friction 0.02/fs, centre of mass fixed,
100 warm-up steps) at ``--temperature`` (300 K) from the C7eq minimum, one frame every 10 steps (5 fs),
driven by the committee mean (``--model``, default the shipped ``ala2-xtb``; each frame also stores every
member's energy) or by GFN2-xTB (tblite, 1 thread). ``analyse``: 36x36 phi/psi histograms (10 degree bins),
the reweighted histogram per member and run, credible intervals (mean +- 1.96 std over members), the Kish
effective sample size per member, and JSD between the pooled ML and pooled xTB histograms, per seed pair and
between the xTB seeds (the sampling-noise floor). Writes a JSON summary next to the PNG.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np


def run(args) -> None:
    from mlpot_plugins.refdata import langevin_frames
    from mlpot_plugins.xtb_data import FRICTION_PER_FS, TIMESTEP_FS, WARMUP, ala2, one_omp_thread
    from ase import units

    every = 10
    n_frames = int(round(args.ps * 1000.0 / (TIMESTEP_FS * every)))
    rng = np.random.default_rng([args.seed, 1515])
    positions, members, sigma = [], [], []
    if args.driver == "ml":
        import torch

        from mlpot_plugins.ase import MLPotCalculator

        torch.set_num_threads(1)
        calc = MLPotCalculator(args.model)

        def record(atoms, step):
            out = calc.evaluate(atoms, need_uncertainty=True, need_virial=False)
            members.append(out["member_energy"].detach().double().numpy())
            sigma.append(float(out["forces_std"].max()))
            positions.append(atoms.positions.copy())
            return atoms
    else:
        from mlpot_plugins.xtb_data import calculator

        calc = calculator()

        def record(atoms, step):
            positions.append(atoms.positions.copy())
            return atoms
    t0 = time.time()
    with one_omp_thread():
        langevin_frames(ala2(), calc, args.temperature, n_frames, every, rng, record, timestep_fs=TIMESTEP_FS,
                        friction=FRICTION_PER_FS / units.fs, warmup=WARMUP, molecule=True)
    wall = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, positions=np.array(positions), member_energy=np.array(members), max_forces_std=np.array(sigma),
             driver=args.driver, seed=args.seed, temperature=args.temperature, ps=args.ps,
             timestep_fs=TIMESTEP_FS, every=every, wall_s=wall, model=str(args.model if args.driver == "ml" else ""))
    print(f"{args.driver} seed {args.seed}: {args.ps:g} ps ({n_frames * every + WARMUP} steps) at "
          f"{args.temperature:g} K in {wall:.0f} s -> {args.out}")


def analyse(args) -> None:
    from mlpot_plugins import observables as obs

    def load(path):
        d = np.load(path)
        phi, psi = obs.ala2_phi_psi(d["positions"])
        return d, phi, psi

    ml = [load(p) for p in args.ml]
    xtb = [load(p) for p in args.xtb]
    for path, (d, _, _) in zip(args.ml, ml):
        if str(d["driver"]) != "ml":
            raise SystemExit(f"{path} is a {d['driver']}-driven run without member energies; pass ML-driven runs "
                             "(run --driver ml) to --ml and the others to --xtb")
    bins = args.bins
    member_hists, ess, summary = [], [], {"bins": bins, "runs": {}}
    for path, (d, phi, psi) in zip(args.ml, ml):
        w = obs.member_weights(d["member_energy"], float(d["temperature"]))
        member_hists.append(obs.histogram2d(phi, psi, w, bins))
        ess.append(obs.effective_sample_size(w))
    for path, (d, phi, psi) in zip(args.ml + args.xtb, ml + xtb):
        summary["runs"][Path(path).name] = {
            "driver": str(d["driver"]), "seed": int(d["seed"]), "ps": float(d["ps"]), "frames": int(len(phi)),
            "temperature": float(d["temperature"]), "wall_s": round(float(d["wall_s"]), 1),
            "phi_mean": round(float(phi.mean()), 2), "psi_mean": round(float(psi.mean()), 2),
            "phi_range": [round(float(phi.min()), 1), round(float(phi.max()), 1)],
            "psi_range": [round(float(psi.min()), 1), round(float(psi.max()), 1)]}
        if str(d["driver"]) == "ml":
            summary["runs"][Path(path).name]["max_forces_std_eV_A"] = round(float(d["max_forces_std"].max()), 4)
    h_ml = [obs.histogram2d(phi, psi, bins=bins) for _, phi, psi in ml]
    h_xtb = [obs.histogram2d(phi, psi, bins=bins) for _, phi, psi in xtb]
    pooled_ml, pooled_xtb = np.mean(h_ml, axis=0), np.mean(h_xtb, axis=0)
    members = np.mean(member_hists, axis=0)  # [K, bins, bins]: each member, pooled over the ML runs
    summary["jsd_bits"] = {
        "ml_pooled_vs_xtb_pooled": obs.jensen_shannon(pooled_ml, pooled_xtb),
        "ml_vs_xtb_per_seed": {f"ml{i}-xtb{j}": obs.jensen_shannon(a, b) for i, a in enumerate(h_ml)
                               for j, b in enumerate(h_xtb)},
        "xtb_vs_xtb": {f"xtb{i}-xtb{j}": obs.jensen_shannon(h_xtb[i], h_xtb[j]) for i in range(len(h_xtb))
                       for j in range(i + 1, len(h_xtb))},
        "ml_vs_ml": {f"ml{i}-ml{j}": obs.jensen_shannon(h_ml[i], h_ml[j]) for i in range(len(h_ml))
                     for j in range(i + 1, len(h_ml))},
        "member_vs_xtb_pooled": [obs.jensen_shannon(m, pooled_xtb) for m in members]}
    summary["kish_ess_per_member"] = [[round(float(x), 1) for x in e] for e in ess]
    ci = obs.credible_interval(members)
    top = np.argsort(-ci["mean"].ravel())[:3]
    edges = np.linspace(-180, 180, bins + 1)
    summary["top_bins"] = [{"phi": [float(edges[i // bins]), float(edges[i // bins + 1])],
                            "psi": [float(edges[i % bins]), float(edges[i % bins + 1])],
                            "p_mean": round(float(ci["mean"].ravel()[i]), 4),
                            "p_95": [round(float(ci["lower"].ravel()[i]), 4), round(float(ci["upper"].ravel()[i]), 4)],
                            "p_xtb": round(float(pooled_xtb.ravel()[i]), 4)} for i in top]
    phi_all = np.concatenate([phi for _, phi, _ in ml])
    psi_all = np.concatenate([psi for _, _, psi in ml])
    ref = (np.concatenate([phi for _, phi, _ in xtb]), np.concatenate([psi for _, _, psi in xtb]))
    if args.png:
        obs.plot_ramachandran(phi_all, psi_all, members, args.png, reference=ref,
                              title=f"alanine dipeptide, vacuum, {float(ml[0][0]['temperature']):g} K: ML "
                                    f"committee ({len(ml)} runs) vs GFN2-xTB ({len(xtb)} runs); "
                                    f"JSD {summary['jsd_bits']['ml_pooled_vs_xtb_pooled']:.3f} bits")
        Path(args.png).with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def main():
    from mlpot_plugins.cli_types import nonneg_int, positive_float, positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--driver", choices=["ml", "xtb"], required=True)
    r.add_argument("--model", default="ala2-xtb")
    r.add_argument("--seed", type=nonneg_int, default=0)
    r.add_argument("--ps", type=positive_float, default=3.0)
    r.add_argument("--temperature", type=positive_float, default=300.0)
    r.add_argument("--out", required=True)
    a = sub.add_parser("analyse")
    a.add_argument("--ml", nargs="+", required=True)
    a.add_argument("--xtb", nargs="+", required=True)
    a.add_argument("--bins", type=positive_int, default=36)
    a.add_argument("--png")
    args = parser.parse_args()
    run(args) if args.cmd == "run" else analyse(args)


if __name__ == "__main__":
    main()
