"""Models that ship inside the package, found by name.

Each ``NAME.pt`` here is produced by ``python -m mlpot_plugins.pretrained.build`` (reference models) or
by the scripts named in its metadata description; ``pretrained_path(NAME)`` gives its location.
``$MLPOT_PRETRAINED_DIR``, when set, replaces this folder (for Python and the LAMMPS plugin alike).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
ENV = "MLPOT_PRETRAINED_DIR"


def pretrained_dir() -> Path:
    """Where shipped models are looked up: ``$MLPOT_PRETRAINED_DIR`` if set, else the package folder."""
    env = os.environ.get(ENV)
    if env is None or env == "":
        return HERE
    path = Path(env)
    if not path.is_dir():
        raise FileNotFoundError(f"${ENV}={env!r} is not a directory, so shipped models cannot be found by "
                                f"name. Point {ENV} at a folder of .pt models, or unset it to use {HERE}")
    return path


def pretrained_names() -> List[str]:
    """Names of the models shipped in the package."""
    return sorted(p.stem for p in pretrained_dir().glob("*.pt"))


def pretrained_path(name: str) -> Path:
    path = pretrained_dir() / f"{name}.pt"
    if not path.is_file():
        raise KeyError(f"no shipped model named {name!r} in {pretrained_dir()}; shipped models: {pretrained_names()}")
    return path


def pretrained_descriptions() -> Dict[str, str]:
    from ..model_file import load

    return {n: load(n).metadata["description"].splitlines()[0] for n in pretrained_names()}
