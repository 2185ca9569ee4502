"""Sub-commands ``mlpot train``, ``mlpot export`` and ``mlpot data emt`` (registered in cli.FEATURE_MODULES)."""
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
    path = export_checkpoint(args.checkpoint, out, dtype=args.dtype, name=args.name)
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


def register_cli(sub) -> None:
    from ..cli_types import positive_int
    from ..emt_data import BUILDERS, SYSTEMS

    p = sub.add_parser("train", help="train an equivariant potential from a YAML config")
    p.add_argument("config", help="YAML file with data/model/training/output sections (see docs/equivariant.md)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument("--no-progress", action="store_true", help="log one JSON line per epoch instead of a bar")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("export", help="export a `mlpot train` checkpoint as a TorchScript model file")
    p.add_argument("checkpoint", help="best.pt or last.pt written by `mlpot train` (with --to: an mlpot model file)")
    p.add_argument("out", nargs="?", help="output .pt file")
    p.add_argument("-o", "--output", help="output file (same as OUT)")
    p.add_argument("--to", choices=["metatomic"], help="convert an mlpot model file to this format instead")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
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
