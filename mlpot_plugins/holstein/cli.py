"""``mlpot holstein generate|train|run|lammps|analyze|export`` and the demo stage."""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

from ..cli_types import nonneg_float, nonneg_int, positive_float, positive_int, torch_device
from .data import DEFAULT_GENERATE_SAVE_EVERY
from .train import DEFAULT_SAVE_MINUTES
from .langevin import DEFAULT_SAVE_EVERY
from .params import HolsteinParams, check_lattice_size

PARAM_HELP = "Holstein parameters as key=value (t, g, k0, kappa, m, gamma, dt, kT, mu); defaults: " + \
    ", ".join(f"{k}={v:g}" for k, v in HolsteinParams().to_dict().items())


def lattice_size(text: str) -> int:
    """argparse type: the lattice check every engine shares (params.check_lattice_size)."""
    import argparse

    try:
        L = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"L={text!r} is not an integer; pass an even L >= 4") from None
    try:
        return check_lattice_size(L)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _params(pairs) -> HolsteinParams:
    return HolsteinParams.from_dict(_overrides(pairs))


def _overrides(pairs) -> dict:
    d = {}
    for item in pairs or []:
        if "=" not in item:
            raise ValueError(f"--param {item!r} must look like key=value, e.g. --param kT=0.05")
        k, v = item.split("=", 1)
        try:
            d[k] = float(v)
        except ValueError:
            raise ValueError(f"--param {item!r}: {v!r} is not a number") from None
    return d


def _generate(args) -> int:
    from .data import generate

    d = generate(Path(args.out), L=args.L, n_quench=args.quench, n_domain=args.domains,
                 quench_steps=args.steps, domain_steps=args.domain_steps, stride=args.stride,
                 p=_params(args.param), seed=args.seed, device=args.device, resume=args.resume,
                 save_every=args.save_every, n_hot=args.hot)
    print(f"wrote {args.out}: {len(d['Q'])} snapshots of {args.L}x{args.L} with ED electronic forces")
    return 0


def _train(args) -> int:
    from .train import train

    m = train(args.data, args.out, energy_based=args.energy, ensemble_size=args.ensemble,
              channels=args.channels, hidden=args.hidden, radius2=args.radius2, epochs=args.epochs,
              seed=args.seed, name=Path(args.out).stem, arch=args.arch, device=args.device,
              time_budget_s=args.budget, init_state_dict=args.init, batch=args.batch, lr=args.lr,
              state_dict_path=Path(args.out).with_suffix(".sd"),  # the weights, for a later --init
              resume=args.resume, save_minutes=args.save_minutes)
    print(json.dumps(m, indent=1))
    return 0


def _run(args) -> int:
    import torch

    from ..model_file import load as load_model

    torch.set_num_threads(args.threads)
    from .dynamics import make_forces, model_params, run_quench
    from .langevin import LangevinIntegrator

    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if args.restart and checkpoint is None:
        raise ValueError("--restart needs --checkpoint FILE (the checkpoint written by the run to continue)")
    if args.engine in ("ml", "ed", "kpm") and (args.threshold is not None or args.fallback_until is not None):
        raise ValueError(f"--threshold/--fallback-until set the exact-solver fallback, which --engine {args.engine} "
                         "does not use; pass --engine ml+fallback (or auto), or drop them")
    model = load_model(args.model) if args.engine != "ed" and args.engine != "kpm" else None
    seed = args.seed
    if args.restart:  # --param changes the checkpoint's parameters from here on (recorded in param_changes)
        st = LangevinIntegrator.read_checkpoint(checkpoint)
        base = st["params"]
        force_seed = seed if seed is not None else (st.get("run") or {}).get("seed", 0)
    else:
        base = (model_params(model) if model is not None else HolsteinParams()).to_dict()
        force_seed = seed or 0
    p = HolsteinParams.from_dict({**base, **_overrides(args.param)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forces = make_forces(args.engine, p, model, args.threshold, force_seed, args.fallback_until)
    for w in caught:
        print(f"mlpot holstein run: warning: {w.message}", file=sys.stderr)
    defaults = {"L": 64, "batch": 1, "seed": 0}  # on --restart an omitted value is the checkpoint's
    L, batch, seed = (getattr(args, k) if getattr(args, k) is not None or args.restart else v
                      for k, v in defaults.items())
    rec = run_quench(forces, p, L, args.steps, seed=seed, batch=batch, record_every=args.every,
                     out_dir=Path(args.out), snapshots=args.snapshots, checkpoint=checkpoint,
                     restart=args.restart, save_every=args.save_every)
    print(f"{rec.get('engine', args.engine)}: L={rec['L']} batch={rec['batch']}, step {rec['step']} of {args.steps} in "
          f"{rec['wall_seconds']:.1f} s ({rec['site_steps_per_second']:.3g} site-steps/s); final S(pi,pi)/N="
          f"{rec['s_pi_pi'][-1]:.3f}, L(t)={rec['domain_length'][-1]:.2f}; files in {args.out}")
    return 0


def _lammps(args) -> int:
    from ..model_file import load as load_model
    from .dynamics import model_params
    from .lammps_deck import write_lammps_inputs

    if args.no_fallback and (args.fallback is not None or args.fallback_until is not None):
        raise ValueError("--no-fallback contradicts --fallback/--fallback-until; pass one of them")
    base = model_params(load_model(args.model)).to_dict()
    p = HolsteinParams.from_dict({**base, **_overrides(args.param)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_lammps_inputs(args.out, args.model, L=args.L, steps=args.steps, seed=args.seed, params=p,
                                    fallback=None if args.no_fallback else
                                    ("auto" if args.fallback is None else args.fallback),
                                    fallback_until=args.fallback_until, dump_every=args.every, thermo_every=args.every,
                                    restart_every=args.restart_every, device=args.device)
    for w in caught:
        print(f"mlpot holstein lammps: warning: {w.message}", file=sys.stderr)
    print(f"wrote {paths['data']} ({args.L}x{args.L} sites, the t = 0 state of `mlpot holstein run --seed "
          f"{args.seed}`), {paths['deck']} and {paths['info']}; run: cd {args.out} && lmp -in in.holstein "
          f"(then: mlpot holstein analyze {args.out})")
    return 0


def _read_run(path: Path) -> dict:
    """observables.json of `mlpot holstein run` (a run folder or the file)."""
    if path.is_dir():
        path = path / "observables.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with `mlpot holstein run --out DIR`")
    try:
        rec = json.loads(path.read_text())
        rec["t"], rec["domain_length"], rec["s_pi_pi"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an observables.json written by `mlpot holstein run` ({exc}); pass "
                         "the run's --out folder") from None
    return rec


def _is_own_run(path: Path) -> bool:
    return path.name == "observables.json" or (path.is_dir() and (path / "observables.json").is_file())


def _analyze(args) -> int:
    from .observables import growth_exponent, plot_growth, plot_snapshot, plot_spipi, record_frame
    from .dynamics import new_record
    from ..runsafe import atomic_write_text, check_output_dir

    paths = [Path(x) for x in args.inputs]
    if all(_is_own_run(p) for p in paths) and len(paths) == 1:
        rec = _read_run(paths[0])
        out = Path(args.out) if args.out else (paths[0] if paths[0].is_dir() else paths[0].parent)
        last_Q = None
    else:
        if any(_is_own_run(p) for p in paths):
            raise ValueError("analyze one `mlpot holstein run` folder at a time (its seeds are already in it), "
                             "or several LAMMPS dumps / OpenMM trajectories (one per seed)")
        from .trajectories import load_trajectories

        times, Q = load_trajectories(args.inputs, dt=args.dt, frame_dt=args.frame_dt, q_unit_nm=args.q_unit_nm)
        rec = new_record(_source_params(paths[0]), int(Q.shape[-1]), int(Q.shape[1]), None)
        rec["sources"] = [str(p) for p in paths]
        for t, Qf in zip(times, Q):
            record_frame(rec, float(t), Qf)
        out = Path(args.out) if args.out else (paths[0] if paths[0].is_dir() else paths[0].parent)
        out = check_output_dir(out, "--out folder")
        atomic_write_text(out / "analysis.json", json.dumps(rec, indent=1))
        last_Q = Q[-1, 0]
    t, lengths = rec["t"], rec["domain_length"]
    fit = growth_exponent(t, lengths, args.t_min, args.t_max)
    png = plot_growth(t, lengths, out / "domain_growth.png", fit)
    spng = plot_spipi(t, rec["s_pi_pi"], out / "s_pi_pi.png", rec.get("s_pi_pi_per_sample"))
    if last_Q is not None:
        plot_snapshot(last_Q, out / "final_order_field.png", f"order field, L={last_Q.shape[-1]}, t={t[-1]:.1f}")
    print(f"S(pi,pi)/N {rec['s_pi_pi'][0]:.4f} -> {rec['s_pi_pi'][-1]:.4f}, L(t) {lengths[0]:.2f} -> "
          f"{lengths[-1]:.2f} over t = {t[0]:g}..{t[-1]:g} ({rec['batch']} seed(s), {rec['L']}x{rec['L']})")
    print(f"growth exponent n = {fit['exponent']:.3f} ± {fit['exponent_err']:.3f} over {fit['n_points']} "
          f"points (Allen-Cahn: 0.5); plots: {png}, {spng}" + ("" if last_Q is None else
                                                             f"; observables: {out / 'analysis.json'}"))
    return 0


def _export(args) -> int:
    from ..pretrained.reexport_holstein import reexport

    rep = reexport(args.model, args.out, args.fallback_radius, args.fallback_moments, args.no_fallback,
                   args.recommend_threshold, args.recommend_until)
    fb = rep["fallback"]
    print(f"wrote {rep['file']} (weights unchanged; compute_lattice bit-identical); "
          + (f"exact local solver: KPM window radius {fb['radius']}, {fb['n_moments']} moments, block halo "
             f"{rep['fallback_range']} (engines: fallback THRESHOLD)" if fb else "no exact local solver"))
    return 0


def _source_params(path: Path) -> HolsteinParams:
    """The Holstein parameters of a LAMMPS deck folder (holstein-lammps.json), else the defaults."""
    from .lammps_deck import INFO_NAME

    info = (path if path.is_dir() else path.parent) / INFO_NAME
    try:
        return HolsteinParams.from_dict(json.loads(info.read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError):
        return HolsteinParams()


def register_cli(sub) -> None:
    h = sub.add_parser("holstein", help="Holstein-model CDW lattice dynamics (ED/KPM reference, D4 ML force field)")
    hs = h.add_subparsers(dest="holstein_command", required=True)
    g = hs.add_parser("generate", help="ED Langevin quench trajectories as training data")
    g.add_argument("--out", required=True, help="output .pt file")
    g.add_argument("--L", type=lattice_size, default=16, help="lattice size (issue target 40; ED cost ~ L^6)")
    g.add_argument("--quench", type=nonneg_int, default=5, help="hot-random-state quench trajectories")
    g.add_argument("--domains", type=nonneg_int, default=5, help="trajectories from random CDW domain states")
    g.add_argument("--hot", type=nonneg_int, default=0,
                   help="hot random states at t = 0 (the state a quench starts from), ED-labelled, no dynamics")
    g.add_argument("--steps", type=positive_int, default=600, help="steps per quench trajectory")
    g.add_argument("--domain-steps", type=positive_int, default=200, help="steps per domain trajectory")
    g.add_argument("--stride", type=positive_int, default=6, help="keep every stride-th step")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", type=torch_device, default="cpu", help="torch device for ED and the integrator (cpu, cuda)")
    g.add_argument("--param", action="append", metavar="KEY=VALUE", help=PARAM_HELP)
    g.add_argument("--save-every", type=positive_int, default=DEFAULT_GENERATE_SAVE_EVERY,
                   help="write the work so far to OUT.partial every N steps (atomically; also on SIGINT/SIGTERM)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from OUT.partial (same options); the data file is the same "
                        "bit for bit as an uninterrupted run's")
    g.set_defaults(func=_generate)
    t = hs.add_parser("train", help="train and export a D4 committee")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True, help="exported model (.pt)")
    t.add_argument("--energy", action="store_true", help="energy-based (conservative) variant")
    t.add_argument("--ensemble", type=positive_int, default=4)
    t.add_argument("--channels", type=positive_int, default=12)
    t.add_argument("--hidden", type=positive_int, default=32)
    t.add_argument("--radius2", type=positive_int, default=13, help="squared patch radius (13: 45 sites)")
    t.add_argument("--epochs", type=positive_int, default=60)
    t.add_argument("--arch", default="conv", choices=["conv", "irreps"],
                   help="conv: D4 group convolution (default); irreps: D4 irreps features (direct only)")
    t.add_argument("--budget", type=positive_float, default=None,
                   help="stop after this many seconds of training (cosine LR); on --resume the total over all parts")
    t.add_argument("--batch", type=positive_int, default=16, help="snapshots per optimiser step")
    t.add_argument("--lr", type=nonneg_float, default=3e-3)
    t.add_argument("--init", default=None, help="start from weights saved by an earlier training (.sd)")
    t.add_argument("--device", type=torch_device, default="cpu", help="torch device for training (cpu, cuda)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-minutes", type=nonneg_float, default=DEFAULT_SAVE_MINUTES,
                   help="write the training state to OUT.ckpt every M minutes (0: after every epoch; atomically; "
                        "also on SIGINT/SIGTERM)")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from OUT.ckpt (same options and data); without --budget "
                        "on CPU the model equals an uninterrupted run's")
    t.set_defaults(func=_train)
    r = hs.add_parser("run", help="Langevin quench from a hot random state")
    r.add_argument("--model", default="holstein-d4", help="exported lattice model or shipped name")
    r.add_argument("--engine", default="auto", choices=["auto", "ml", "ed", "kpm", "ml+fallback"],
                   help="auto (default): ml+fallback during the model's recommended hot phase (metadata "
                        "extra.fallback_default: exact forces where the committee std exceeds its threshold, "
                        "until t = until_time), ml afterwards; plain ml for a model without a recommendation")
    r.add_argument("--L", type=lattice_size, default=None, help="lattice size (default 64; on --restart the checkpoint's)")
    r.add_argument("--steps", type=nonneg_int, default=2000,
                   help="total length of the run in steps (a --restart continues up to this step)")
    r.add_argument("--batch", type=positive_int, default=None, help="independent seeds run together (default 1)")
    r.add_argument("--every", type=positive_int, default=50, help="record observables every N steps")
    r.add_argument("--snapshots", type=nonneg_int, default=3, help="PNG snapshots of the order field")
    r.add_argument("--threshold", type=positive_float, default=None,
                   help="fallback force-std threshold (default: the model's recommendation with auto, 0.05 with "
                        "ml+fallback)")
    r.add_argument("--fallback-until", type=nonneg_float, default=None, metavar="T",
                   help="fall back only for t < T (default: the model's recommendation with auto, the whole run "
                        "with ml+fallback)")
    r.add_argument("--seed", type=int, default=None, help="default 0")
    r.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="override the model's Holstein parameters (e.g. kT, gamma, dt); " + PARAM_HELP)
    r.add_argument("--out", default="holstein-run")
    r.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads (1 is fastest on a busy 2-core box: no OpenMP oversubscription)")
    r.add_argument("--checkpoint", help="write (or with --restart read) this checkpoint")
    r.add_argument("--restart", action="store_true",
                   help="continue from --checkpoint bit-identically (observables continue the same time series; "
                        "--param values apply from the restart on)")
    r.add_argument("--save-every", type=positive_int, default=DEFAULT_SAVE_EVERY,
                   help="write the checkpoint and observables.json every N steps (atomically; also at the end "
                        "and on SIGINT/SIGTERM)")
    r.set_defaults(func=_run)
    e = hs.add_parser("export", help="re-export a lattice committee (weights unchanged), optionally with its exact "
                                     "local solver for the engines' uncertainty-gated fallback")
    e.add_argument("model", help="lattice model file or shipped name (e.g. holstein-d4)")
    e.add_argument("--out", required=True, help="output model file (.pt)")
    from ..pretrained.reexport_holstein import add_fallback_options

    add_fallback_options(e)
    e.set_defaults(func=_export)
    d = hs.add_parser("lammps", help="write a LAMMPS data file + deck for an L x L quench (pair_style mlpot)")
    d.add_argument("--out", required=True, help="folder for holstein.data, in.holstein, holstein-lammps.json")
    d.add_argument("--model", default="holstein-d4", help="exported lattice model or shipped name")
    d.add_argument("--L", type=lattice_size, default=64, help="lattice size (sites L x L)")
    d.add_argument("--steps", type=positive_int, default=2000, help="Langevin steps (the deck's ${steps})")
    d.add_argument("--seed", type=int, default=0,
                   help="initial state = that of `mlpot holstein run --seed SEED` (default 0)")
    d.add_argument("--every", type=positive_int, default=50, help="dump and thermo every N steps")
    d.add_argument("--restart-every", type=positive_int, default=500, help="write_restart every N steps")
    d.add_argument("--fallback", type=positive_float, default=None, metavar="THRESHOLD",
                   help="exact-solver fallback above this calibrated force std (pair_style mlpot ... fallback); "
                        "default: the model's recommended hot-phase fallback (metadata extra.fallback_default), "
                        "if it has one")
    d.add_argument("--fallback-until", type=nonneg_float, default=None, metavar="T",
                   help="fall back only for t < T (pair_style ... until STEP = T/dt); default: the "
                        "recommendation's, or the whole run with --fallback")
    d.add_argument("--no-fallback", action="store_true", help="ML forces only (no exact-solver fallback)")
    d.add_argument("--device", default=None, choices=["cpu", "cuda"], help="pair_style mlpot device keyword")
    d.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="override the model's parameters for the thermostat (m, gamma, dt, kT); " + PARAM_HELP)
    d.set_defaults(func=_lammps)
    a = hs.add_parser("analyze", help="S(pi,pi,t), L(t), growth exponent and PNGs of a run, LAMMPS dumps or "
                                      "OpenMM trajectories")
    a.add_argument("inputs", nargs="+",
                   help="a `holstein run` folder (or its observables.json); or LAMMPS dumps / deck folders of "
                        "`holstein lammps`, or OpenMM .dcd/.pdb trajectories (several = seeds, averaged)")
    a.add_argument("--t-min", type=float, default=None)
    a.add_argument("--t-max", type=float, default=None)
    a.add_argument("--out", default=None, help="folder for the PNGs and analysis.json (default: the input's)")
    a.add_argument("--dt", type=positive_float, default=None,
                   help="LAMMPS timestep (1/t) when no holstein-lammps.json lies next to the dump")
    a.add_argument("--frame-dt", type=positive_float, default=None,
                   help="OpenMM: time between trajectory frames in 1/t (report interval x dt)")
    a.add_argument("--q-unit-nm", type=positive_float, default=1.0,
                   help="OpenMM: nm per Q unit (Q = z / this; default 1)")
    a.set_defaults(func=_analyze)


def holstein_stage(out_dir: Path, quick: bool) -> None:
    """Short ML Langevin quench with the shipped committee on a small lattice; snapshot PNG."""
    import torch

    from ..model_file import load as load_model
    from .dynamics import make_forces, model_params, run_quench
    from .ed import ed_solve
    from .observables import plot_snapshot

    model = load_model("holstein-d4")
    p = model_params(model)
    L, steps = (24, 200) if quick else (32, 600)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small lattice: one thread avoids OpenMP oversubscription on a busy box
    t0 = time.perf_counter()
    try:
        rec = run_quench(make_forces("ml", p, model), p, L, steps, seed=1, record_every=50, progress=False)
    finally:
        torch.set_num_threads(threads)
    Q = rec["final_Q"]
    png = plot_snapshot(Q, out_dir / "holstein_snapshot.png", f"ML quench L={L}, t={steps * p.dt:g}",
                        amplitude=p.cdw_amplitude())
    out = model.module.compute_lattice(Q, True)
    ref = ed_solve(Q.double(), p)["forces"]  # one exact diagonalisation of the final state (0.2 s at 32x32)
    err = (out["forces"].double() - ref).pow(2).mean().sqrt().item()
    held_out = model.metadata.get("extra", {}).get("training", {}).get("rmse_over_force_std")
    print(f"[holstein] {model.metadata['name']}: {L}x{L} quench, {steps} steps in {time.perf_counter() - t0:.1f} s "
          f"({rec['site_steps_per_second']:.3g} site-steps/s); S(pi,pi)/N {rec['s_pi_pi'][0]:.3f} -> "
          f"{rec['s_pi_pi'][-1]:.3f}, domain length {rec['domain_length'][-1]:.2f}; max force std "
          f"{out['forces_std'].max():.3f}; force RMSE vs ED on the final state {err:.4f} "
          f"({100 * err / ref.std().item():.1f}% of the force std"
          + (f"; held-out in training {100 * held_out:.1f}%" if held_out else "") + f"); snapshot {png}")
