"""Models that ship inside the package, found by name.

Each ``NAME.pt`` here is produced by ``python -m mlpot_plugins.pretrained.build`` (reference models) or
by the scripts named in its metadata description; ``pretrained_path(NAME)`` gives its location.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent


def pretrained_names() -> List[str]:
    """Names of the models shipped in the package."""
    return sorted(p.stem for p in HERE.glob("*.pt"))


def pretrained_path(name: str) -> Path:
    path = HERE / f"{name}.pt"
    if not path.is_file():
        raise KeyError(f"no shipped model named {name!r}; shipped models: {pretrained_names()}")
    return path


def pretrained_descriptions() -> Dict[str, str]:
    from ..model_file import load

    return {n: load(n).metadata["description"].splitlines()[0] for n in pretrained_names()}
