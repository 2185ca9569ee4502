"""Active learning: ``mlpot learn CONFIG.yaml`` (docs/learn.md).

config (validation) -> loop (state, phases) -> explore (engines) -> select -> references (labels) ->
training.train (retrain from the previous weights) -> training.report (recalibrate, export) -> report.
"""
from __future__ import annotations


def _cmd_learn(args) -> int:
    from .loop import run

    run(args.config, resume=args.resume, progress=not args.no_progress)
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("learn", help="active learning: explore with the committee, label uncertain frames, retrain")
    p.add_argument("config", help="YAML file (see docs/learn.md)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT_DIR/learn_state.pt")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    p.set_defaults(func=_cmd_learn)
