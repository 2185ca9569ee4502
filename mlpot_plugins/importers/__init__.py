"""Foreign models into the mlpot contract: ``mlpot import <format> ...`` writes one exported file.

Each format lives in its own module of this package (``IMPORTERS``) with ``add_parser(subparsers)``,
which adds ``mlpot import <format>``; a module that is not there yet is skipped.
"""
from __future__ import annotations

import importlib

IMPORTERS = ("mace", "nequip", "metatomic")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("import", help="convert a MACE / NequIP / metatomic model into an mlpot model file")
    sub = p.add_subparsers(dest="format", required=True)
    for name in IMPORTERS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.add_parser(sub)
