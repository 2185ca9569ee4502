"""Active vs random selection at equal label budget, same exploration and training settings (issue 15 target).

Both arms run the same `mlpot learn` loop (same initial data, exploration, model and training options);
only ``select.mode`` differs: ``topk`` (the frames with the largest committee force std) or ``random``
(uniform draws from the same explored frames). After every iteration (``--per-iteration`` labels) the model
is measured on held-out out-of-distribution sets, so one run of each arm gives the whole curve
error vs labels; the budgets compared are the label counts both arms reached.

Systems:
* ``cu``: Cu/EMT. Initial data: 32-atom Cu at 300 K (narrow on purpose); exploration from the perfect, a
  vacancy and a strained cell at 600-2000 K; OOD: ``mlpot data emt`` ood-hot (2400 K), ood-compressed (10 %)
  and vacancy MD at 1500 K.
* ``ala2``: alanine dipeptide / GFN2-xTB (tblite). Initial data: ``--n-init`` frames spread evenly over an
  ``mlpot data xtb`` train set (300-600 K, C7eq basin); 4 walkers, three (``--known-walkers``) from the C7eq
  minimum at 300/450/600 K and one from the built phi/psi = +80/-60 start of ``mlpot data xtb --set ood`` (the start
  structure only, no OOD frame) at 1000 K, so most explored frames revisit the known basin and a minority
  is new (the situation active learning is for); walkers stop above ``--max-sigma`` (exploded geometries
  are not labelled); OOD: the ood set (1000 K, phi > 0) and, when XTB_DIR has ala2-ood-torsion.extxyz, the
  unseen torsion at a training temperature (phi > 0 at 450 K). Needs the sets of benchmarks/make_xtb_sets.sh or build_ala2_xtb (``--xtb-dir``).
* ``holstein``: Holstein lattice model (12 x 12) with exact diagonalisation as the reference (the lattice
  loop of ``mlpot learn``, ``reference: holstein-ed``). Initial data: 2 short quenches and 2 short
  domain trajectories of ED Langevin dynamics; exploration: 4 walkers of the committee (hot-quench and
  checkerboard-domain starts, bath kT 0.1 and 0.2); OOD: long domain-coarsening trajectories (ood-domains)
  and hot random states (ood-hot), both ED-labelled. Forces in units of t per unit Q.

Usage (one thread; minutes):
  OMP_NUM_THREADS=1 python benchmarks/active_vs_random.py --system cu --out out/avr-cu
  python benchmarks/active_vs_random.py --system ala2 --xtb-dir out/xtb --out out/avr-ala2
  OMP_NUM_THREADS=1 python benchmarks/active_vs_random.py --system holstein --out out/avr-holstein
Writes OUT/curves.json, OUT/active_vs_random.png and prints the table (OOD force RMSE per budget).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

CU_MODEL = dict(species=["Cu"], cutoff=4.0, lmax=1, n_layers=1, channels=6, n_basis=6, radial_hidden=8,
                readout_hidden=6, ensemble_size=3, dtype="float64")
ALA2_MODEL = dict(species=["H", "C", "N", "O"], cutoff=4.0, lmax=1, n_layers=2, channels=8, n_basis=6,
                  radial_hidden=8, readout_hidden=8, ensemble_size=3, dtype="float32")


def cu_sets(out: Path, seed: int) -> dict:
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from mlpot_plugins.emt_data import generate
    from mlpot_plugins.refdata import label, langevin_frames, write

    rng = np.random.default_rng(seed)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    init = langevin_frames(cell, EMT(), 300.0, 16, 10, rng, lambda a, s: label(a, EMT(), config_type="md300"))
    write(out / "init.extxyz", init)
    vac = cell.copy()
    del vac[[0]]
    strained = cell.copy()
    strained.set_cell(cell.cell.array * 0.96, scale_atoms=True)
    write(out / "start.extxyz", [cell, vac, strained])
    write(out / "ood-hot.extxyz", generate("Cu", "ood-hot", seed=seed + 100))
    write(out / "ood-compressed.extxyz", generate("Cu", "ood-compressed", seed=seed + 100))
    write(out / "ood-vacancy.extxyz", langevin_frames(vac, EMT(), 1500.0, 20, 10, np.random.default_rng(seed + 200),
                                                      lambda a, s: label(a, EMT(), config_type="vac1500")))
    return {"init": "init.extxyz", "start": "start.extxyz",
            "ood": {"ood-hot": "ood-hot.extxyz", "ood-compressed": "ood-compressed.extxyz",
                    "ood-vacancy": "ood-vacancy.extxyz"}}


def ala2_sets(out: Path, xtb_dir: Path, n_init: int, known_walkers: int = 3) -> dict:
    import ase.io

    from mlpot_plugins.refdata import write
    from mlpot_plugins.xtb_data import start_structure

    train = ase.io.read(xtb_dir / "ala2-train.extxyz", index=":")
    write(out / "init.extxyz", [train[int(i)] for i in np.linspace(0, len(train) - 1, n_init).round()])
    known, new = start_structure("ala2", "train"), start_structure("ala2", "ood")
    write(out / "start.extxyz", [known] * known_walkers + [new])
    ood = {"ood": str((xtb_dir / "ala2-ood.extxyz").resolve())}
    torsion = xtb_dir / "ala2-ood-torsion.extxyz"  # phi > 0 at 450 K: the unseen torsion without the heat
    if torsion.is_file():
        ood["ood-torsion"] = str(torsion.resolve())
    return {"init": "init.extxyz", "start": "start.extxyz", "ood": ood,
            "test": str((xtb_dir / "ala2-test.extxyz").resolve())}


HOLSTEIN_MODEL = dict(arch="conv", radius2=5, channels=8, hidden=16, ensemble_size=4)
HOLSTEIN_L = 12


def holstein_sets(out: Path, seed: int) -> dict:
    from mlpot_plugins.holstein.data import generate

    common = dict(L=HOLSTEIN_L, stride=8, progress=False)
    generate(out / "init.pt", n_quench=2, n_domain=2, quench_steps=120, domain_steps=80, seed=seed, **common)
    generate(out / "ood-domains.pt", n_quench=0, n_domain=3, quench_steps=0, domain_steps=320, seed=seed + 100,
             **common)
    generate(out / "ood-hot.pt", n_quench=0, n_domain=0, quench_steps=0, domain_steps=0, n_hot=24, seed=seed + 200,
             **common)
    return {"init": "init.pt", "ood": {"ood-domains": "ood-domains.pt", "ood-hot": "ood-hot.pt"}}


def holstein_config(sets: dict, mode: str, args, seed: int) -> dict:
    """The lattice loop's config: same selection and stopping as the atomistic arms, its own model/training."""
    return {"reference": {"calculator": "holstein-ed"}, "data": {"train": sets["init"], "ood": sets["ood"]},
            "model": dict(HOLSTEIN_MODEL, seed=seed), "training": dict(epochs=args.epochs, batch=8, lr=args.lr),
            "explore": dict(walkers=4, steps=args.steps, check_every=10, temperatures=[0.1, 0.2], seed=seed),
            "select": dict(mode=mode, threshold=1e-4, per_iteration=args.per_iteration, min_separation=2,
                           balance=args.balance if mode == "topk" else "none"),
            "stop": dict(label_budget=max(args.budgets), max_iterations=100),
            "output": dict(dir=arm_dir(mode, args, seed), name=f"holstein-{mode}")}


def config(system: str, sets: dict, mode: str, args, seed: int) -> dict:
    if system == "holstein":
        return holstein_config(sets, mode, args, seed)
    if system == "cu":
        explore = dict(engine="ase", walkers=4, steps=args.steps, check_every=10, temperatures=[600, 1200, 1800],
                       timestep_fs=2.0, strain=0.04, seed=seed, min_distance=1.7)
        model, reference = CU_MODEL, {"calculator": "emt"}
        if args.channels:
            model = dict(model, channels=args.channels, readout_hidden=args.channels)
        max_sigma = 0.0
    else:
        known = [(300, 450, 600)[w % 3] for w in range(args.known_walkers)]  # then the one walker in the new basin
        explore = dict(engine="ase", walkers=args.known_walkers + 1, steps=args.steps, check_every=10,
                       temperatures=known + [1000], timestep_fs=0.5, seed=seed, min_distance=0.7)
        model, reference = ALA2_MODEL, {"calculator": "xtb"}
        max_sigma = args.max_sigma
    if args.init_from:  # continue a trained committee: its architecture, its weights (both arms alike)
        from mlpot_plugins.training.train import architecture_options

        model = architecture_options(args.init_from)
        model["dtype"] = "float32"
    data = {"train": sets["init"], "ood": sets["ood"]}
    if sets.get("test"):
        data["test"] = sets["test"]
    return {"reference": reference, "data": data, "model": dict(model, seed=seed),
            "training": training(args, seed),
            "explore": dict(explore, start=sets["start"]),
            "select": dict(mode=mode, threshold=1e-4, max_sigma=max_sigma, per_iteration=args.per_iteration,
                           min_separation=2, balance=args.balance if mode == "topk" else "none"),
            "stop": dict(label_budget=max(args.budgets), max_iterations=100),
            "output": dict(dir=arm_dir(mode, args, seed), name=f"{system}-{mode}")}


def arm_dir(mode: str, args, seed: int) -> str:
    """Each arm's run folder; the random arm does not depend on --balance, so its runs are shared (for one
    model width)."""
    width = f"-c{args.channels}" if args.channels else ""
    walkers = f"-k{args.known_walkers}" if args.system == "ala2" and args.known_walkers != 3 else ""
    return f"{mode}{'-bal' if mode == 'topk' and args.balance == 'walkers' else ''}{width}{walkers}-seed{seed}"


def training(args, seed: int) -> dict:
    """Retraining options, the same for both arms: a cosine decay from ``--lr`` over every retraining (the
    default), or the plateau schedule of the first Cu runs (``--schedule plateau``: lr 5e-3, patience 4, early
    stop after 8 epochs without improvement)."""
    common = dict(epochs=args.epochs, batch_size=4, val_fraction=0.2, seed=seed, threads=1)
    if args.init_from:
        common["init_from"] = str(Path(args.init_from).resolve())
    if args.schedule == "plateau":
        return dict(common, lr=5e-3, lr_patience=4, early_stopping_patience=8)
    return dict(common, lr=args.lr, min_lr=1e-5, lr_schedule="cosine", early_stopping_patience=args.epochs)


def curve(report: dict) -> dict:
    out = {}
    for row in report["iterations"]:
        if "metrics" in row:
            out[row["n_labels"]] = {s: m["force_rmse"] for s, m in row["metrics"].items()}
    return out


def plot(curves: dict, path: Path, unit: str = "eV/Å") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({s for arm in curves.values() for c in arm.values() for pts in c.values() for s in pts
                   if s.startswith("ood")})
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    for ax, s in zip(axes[0], sets):
        for mode, style in (("topk", "o-"), ("random", "s--")):
            for seed, c in curves.get(mode, {}).items():
                pts = {int(k): v[s] for k, v in c.items() if s in v}  # a set added later lacks early points
                n = sorted(pts)
                ax.plot(n, [pts[k] for k in n], style, alpha=0.8,
                        label=f"{'active' if mode == 'topk' else 'random'} seed {seed}")
        ax.set_title(s)
        ax.set_xlabel("labels added")
        ax.set_ylabel(f"force RMSE [{unit}]")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(curves: dict, budgets) -> list:
    rows = []
    seeds = sorted(set(curves.get("topk", {})) & set(curves.get("random", {})))
    for b in budgets:
        ok = [s for s in seeds if b in curves["topk"][s] and b in curves["random"][s]]
        if not ok:
            continue
        sets = sorted(k for k in curves["topk"][ok[0]][b] if k.startswith("ood"))
        act = {k: float(np.mean([curves["topk"][s][b][k] for s in ok])) for k in sets}
        rnd = {k: float(np.mean([curves["random"][s][b][k] for s in ok])) for k in sets}
        a_all = float(np.sqrt(np.mean([v ** 2 for v in act.values()])))
        r_all = float(np.sqrt(np.mean([v ** 2 for v in rnd.values()])))
        per_seed = []  # each seed's own reduction (RMS over the OOD sets): how often and how much active wins
        for s in ok:
            a_s = np.sqrt(np.mean([curves["topk"][s][b][k] ** 2 for k in sets]))
            r_s = np.sqrt(np.mean([curves["random"][s][b][k] ** 2 for k in sets]))
            per_seed.append(float(1.0 - a_s / r_s))
        rows.append({"budget": b, "seeds": ok, "active": act, "random": rnd, "active_ood_rms": a_all,
                     "random_ood_rms": r_all, "reduction": 1.0 - a_all / r_all, "reduction_per_seed": per_seed,
                     "median_reduction": float(np.median(per_seed)),
                     "active_wins": int(sum(r > 0 for r in per_seed))})
    return rows


def merge(paths) -> dict:
    """The curves of several runs of this script (e.g. seeds run in separate invocations), one dict."""
    curves = {"topk": {}, "random": {}}
    for path in paths:
        for mode, by_seed in json.loads(Path(path).read_text())["curves"].items():
            for seed, c in by_seed.items():
                curves[mode][int(seed)] = {int(n): v for n, v in c.items()}
    return curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=["cu", "ala2", "holstein"], default="cu")
    ap.add_argument("--out", default="out/active-vs-random")
    ap.add_argument("--xtb-dir", default="out/xtb", help="ala2 sets of benchmarks/make_xtb_sets.sh")
    ap.add_argument("--budgets", default="8,16,24,32", help="label budgets compared (multiples of --per-iteration)")
    ap.add_argument("--per-iteration", type=int, default=4)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (exploration, split, initialisation)")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per retraining (same for both arms)")
    ap.add_argument("--steps", type=int, default=200, help="MD steps per walker per exploration")
    ap.add_argument("--n-init", type=int, default=24, help="ala2: initial frames from the train set")
    ap.add_argument("--init-from", default="", help="ala2: start every arm from this exported committee or "
                    "checkpoint (training.init_from; the model options become its architecture)")
    ap.add_argument("--lr", type=float, default=5e-3, help="initial learning rate (cosine decay per retraining)")
    ap.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine",
                    help="learning-rate schedule of every retraining (plateau: the first Cu runs' settings)")
    ap.add_argument("--max-sigma", type=float, default=3.0,
                    help="ala2: a walker stops above this calibrated force std (eV/Å): exploded frames are not labelled")
    ap.add_argument("--known-walkers", type=int, default=3,
                    help="ala2: walkers in the known basin (300/450/600 K in turn) beside the one in the new basin at "
                         "1000 K; more of them make novel frames rarer in the pool both arms draw from")
    ap.add_argument("--channels", type=int, default=0,
                    help="cu: committee width (channels = readout_hidden; default the 6 of CU_MODEL)")
    ap.add_argument("--balance", choices=["none", "walkers"], default="none",
                    help="select.balance of the active arm (walkers: round-robin over the walkers); random stays uniform")
    ap.add_argument("--merge", nargs="+", metavar="CURVES_JSON",
                    help="no runs: merge the curves.json of earlier runs (other seeds) into OUT and print the table")
    args = ap.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",")]
    if args.known_walkers < 1:
        ap.error(f"--known-walkers must be >= 1 (walkers in the known basin), got {args.known_walkers}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        curves = merge(args.merge)
        (out / "curves.json").write_text(json.dumps({"curves": curves, "summary": summarize(curves, args.budgets),
                                                      "merged": args.merge}, indent=1))
        return table(curves, args.budgets, out, "t/Q" if args.system == "holstein" else "eV/Å")
    from mlpot_plugins.learn.loop import run

    curves = {"topk": {}, "random": {}}
    timing = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        folder = out / f"seed{seed}"
        folder.mkdir(exist_ok=True)
        sets = (cu_sets(folder, seed) if args.system == "cu" else holstein_sets(folder, seed)
                if args.system == "holstein" else ala2_sets(folder, Path(args.xtb_dir), args.n_init, args.known_walkers))
        for mode in ("topk", "random"):
            cfg = folder / f"{arm_dir(mode, args, seed).rsplit('-seed', 1)[0]}.yaml"
            cfg.write_text(yaml.safe_dump(config(args.system, sets, mode, args, seed)))
            t0 = time.time()
            state = folder / arm_dir(mode, args, seed) / "learn_state.pt"
            report = run(cfg, resume=state.exists(), progress=False, log=lambda *a: None)
            timing[f"{mode}-seed{seed}"] = {"wall_s": time.time() - t0,
                                            "overhead_mean": report["overhead_fraction_mean"],
                                            "overhead_max": report["overhead_fraction_max"]}
            curves[mode][seed] = curve(report)
            print(f"{mode} seed {seed}: {time.time() - t0:.0f} s, " + "; ".join(
                f"{n}: " + ", ".join(f"{s}={v:.4f}" for s, v in c.items()) for n, c in curves[mode][seed].items()),
                flush=True)
            summary = summarize(curves, args.budgets)
            (out / "curves.json").write_text(json.dumps({"curves": curves, "summary": summary, "timing": timing,
                                                          "args": vars(args)}, indent=1))
    table(curves, args.budgets, out, "t/Q" if args.system == "holstein" else "eV/Å")


def table(curves: dict, budgets, out: Path, unit: str = "eV/Å") -> None:
    plot(curves, out / "active_vs_random.png", unit)
    print(f"budget  active OOD RMSE  random OOD RMSE  reduction  median/seed  wins   ({unit}, RMS over the OOD sets, "
          "mean over seeds)")
    for r in summarize(curves, budgets):
        print(f"{r['budget']:6d}  {r['active_ood_rms']:15.4f}  {r['random_ood_rms']:15.4f}  {100 * r['reduction']:7.1f} %  "
              f"{100 * r['median_reduction']:9.1f} %  {r['active_wins']}/{len(r['seeds'])}  "
              + " ".join(f"{k}: {r['active'][k]:.4f}/{r['random'][k]:.4f}" for k in r["active"]))


if __name__ == "__main__":
    main()
