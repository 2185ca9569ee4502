"""Sub-commands ``mlpot train``, ``mlpot export`` and ``mlpot data emt|xtb`` (registered in cli.FEATURE_MODULES)."""
from __future__ import annotations


def _cmd_train(args) -> int:
    from .train import run

    run(args.config, resume=args.resume, progress=not args.no_progress)
    return 0


def _cmd_export(args) -> int:
    from ..runsafe import check_output
    from .report import export_checkpoint

    out = args.out or args.output
    if not out:
        raise ValueError("no output file given; pass OUT or -o OUT")
    check_output(out, "model")
    if args.to:
        from ..exporters import export_to

        print(f"wrote {export_to(args.to, args.checkpoint, out, name=args.name)}")
        return 0
    from ..model_file import is_model_file, load, save_loaded

    if is_model_file(args.checkpoint):  # an exported model file: re-export it in another dtype
        if args.dtype is None or args.name:
            raise ValueError(f"{args.checkpoint} is already a model file; to convert it pass --dtype float32 or "
                             "--dtype float64 (and no --name), or give a `mlpot train` checkpoint")
        print(f"wrote {save_loaded(load(args.checkpoint, dtype=args.dtype), out)} ({args.dtype})")
        return 0
    path = export_checkpoint(args.checkpoint, out, dtype=args.dtype or "float64", name=args.name)
    print(f"wrote {path}")
    return 0


def _cmd_data_emt(args) -> int:
    from ..emt_data import generate, write
    from ..runsafe import check_output

    check_output(args.out, "dataset")
    frames = generate(args.system, args.set, seed=args.seed, scale=args.scale)
    write(args.out, frames)
    print(f"wrote {len(frames)} {args.system} structures ({sum(len(a) for a in frames)} atoms, set "
          f"{args.set}, seed {args.seed}) to {args.out}")
    return 0


def _cmd_data_xtb(args) -> int:
    from ..runsafe import check_output
    from ..xtb_data import generate, write

    check_output(args.out, "dataset")
    frames = generate(args.system, args.set, seed=args.seed, frames=args.frames, temperature=args.temperature,
                      progress=not args.no_progress)
    write(args.out, frames)
    temps = sorted({a.info["temperature"] for a in frames})
    print(f"wrote {len(frames)} {args.system} frames (set {args.set}, seed {args.seed}, "
          f"{'/'.join(f'{t:g}' for t in temps)} K, {frames[0].info['source']}) to {args.out}")
    return 0


def register_cli(sub) -> None:
    from ..cli_types import nonneg_int, positive_float, positive_int
    from ..emt_data import BUILDERS, SYSTEMS
    from .. import xtb_data

    p = sub.add_parser("train", help="train an equivariant potential from a YAML config")
    p.add_argument("config", help="YAML file with data/model/training/output sections (see docs/equivariant.md)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument("--no-progress", action="store_true", help="log one JSON line per epoch instead of a bar")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("export", help="export a `mlpot train` checkpoint as a TorchScript model file")
    p.add_argument("checkpoint", help="best.pt or last.pt written by `mlpot train` (with --to or --dtype: an mlpot model "
                                         "file)")
    p.add_argument("out", nargs="?", help="output .pt file")
    p.add_argument("-o", "--output", help="output file (same as OUT)")
    p.add_argument("--to", choices=["metatomic"], help="convert an mlpot model file to this format instead")
    p.add_argument("--dtype", choices=["float32", "float64"],
                   help="dtype of the file written (checkpoints: default float64); with an mlpot model file as "
                        "input: convert it, e.g. a float32 copy of a float64 model (docs/equivariant.md, Speed)")
    p.add_argument("--name", default="", help="model name stored in the metadata")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("data", help="generate reference datasets")
    dsub = p.add_subparsers(dest="generator", required=True)
    q = dsub.add_parser("emt", help="deterministic ASE EMT dataset (extxyz)")
    q.add_argument("--system", default="Cu", choices=list(SYSTEMS))
    q.add_argument("--set", default="train", choices=list(BUILDERS))
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--scale", type=positive_int, default=1, help="multiply the number of structures")
    q.add_argument("--out", required=True, help="output .extxyz file")
    q.set_defaults(func=_cmd_data_emt)
    q = dsub.add_parser("xtb", help="deterministic GFN2-xTB (tblite) molecular dataset from Langevin MD (extxyz)")
    q.add_argument("--system", default="ala2", help=f"one of {', '.join(xtb_data.SYSTEMS)}, or an .xyz/.extxyz/"
                   ".pdb file of one molecule (default ala2, alanine dipeptide)")
    q.add_argument("--set", default="train", choices=list(xtb_data.SETS),
                   help="train/val/test: 300-600 K; ood: 1000 K (ala2: phi/psi started at +80/-60 deg)")
    q.add_argument("--seed", type=nonneg_int, default=0)
    q.add_argument("--frames", type=positive_int, default=None,
                   help=f"number of frames (default {xtb_data.DEFAULT_FRAMES})")
    q.add_argument("--temperature", type=positive_float, default=None,
                   help="one MD temperature in K instead of the set's (300/400/500/600 K; ood 1000 K)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--out", required=True, help="output .extxyz file")
    q.set_defaults(func=_cmd_data_xtb)
