"""The ``mlpot`` command line. Feature modules add their sub-commands through ``register_cli``."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import List, Optional

# Modules with a ``register_cli(subparsers)`` function; each adds its own sub-commands.
FEATURE_MODULES: List[str] = ["mlpot_plugins.lammps", "mlpot_plugins.training.cli", "mlpot_plugins.holstein.cli",
                              "mlpot_plugins.importers", "mlpot_plugins.committee",
                              "mlpot_plugins.learn", "mlpot_plugins.llpr"]


def _cmd_models(args) -> int:
    from .pretrained import pretrained_descriptions

    for name, desc in pretrained_descriptions().items():
        print(f"{name:28s} {desc}")
    return 0


def _cmd_info(args) -> int:
    from .model_file import load

    model = load(args.model)
    meta = model.metadata
    if args.json:
        print(json.dumps(meta, indent=1, sort_keys=True))
        return 0
    print(f"model       : {meta.get('name') or model.path.name}  ({model.path})")
    print(f"valid       : yes (format version {meta['format_version']})")
    print(f"kind        : {meta['kind']}")
    print(f"species     : {' '.join(meta['species'])}")
    print(f"cutoff      : {meta['cutoff']} {meta['length_unit']}  (interaction range "
          f"{meta['interaction_range']} {meta['length_unit']})")
    print(f"units       : length {meta['length_unit']}, energy {meta['energy_unit']}; dtype {meta['dtype']}")
    print(f"outputs     : {', '.join(meta['outputs'])}")
    print(f"ensemble    : {meta['ensemble_size']} member(s), uncertainty scale {meta['uncertainty_scale']}")
    print(f"description : {meta['description']}")
    for ref in meta["references"]:
        print(f"reference   : {ref}")
    for key, value in meta.get("extra", {}).items():
        print(f"extra       : {key} = {value}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, quick=args.quick, only=args.stage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlpot", description="Machine-learned force fields for ASE, OpenMM and LAMMPS, with per-atom uncertainty.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="list the models shipped in the package")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("info", help="print a model's metadata and validate the file")
    p.add_argument("model", help="path to an exported .pt file or a shipped model name")
    p.add_argument("--json", action="store_true", help="print the raw metadata JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="end-to-end demo on the shipped models")
    p.add_argument("--out", default="demo-output", help="folder for the demo's files")
    p.add_argument("--quick", action="store_true", help="shorter runs")
    p.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    p.set_defaults(func=_cmd_demo)
    for name in FEATURE_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .contract import ModelFormatError
    from .runsafe import RunError, RunInterrupted

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RunInterrupted as exc:  # SIGINT/SIGTERM: the state was saved; exit status 128 + signal
        print(f"mlpot {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ModelFormatError, OSError, KeyError, ValueError, RunError) as exc:
        print(f"mlpot {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
