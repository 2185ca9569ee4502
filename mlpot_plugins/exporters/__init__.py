"""Our model files out to other formats: ``mlpot export --to FORMAT MODEL.pt -o OUT`` (one module a format)."""
from __future__ import annotations

import importlib

EXPORTERS = ("metatomic",)


def export_to(fmt: str, model, out, **kwargs):
    """Convert the mlpot model file (or shipped name) ``model`` to format ``fmt`` at ``out``."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown export format {fmt!r}; formats: {list(EXPORTERS)}")
    return importlib.import_module(f"{__name__}.{fmt}").export_model(model, out, **kwargs)
