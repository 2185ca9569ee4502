"""Argument checks shared by every command line and the Python functions behind them.

``bounded_int(value, name, minimum)`` is the one check of a count or size (``ValueError`` naming the option
and the allowed range); ``positive_int`` / ``nonneg_int`` / ``positive_float`` / ``nonneg_float`` wrap it
as argparse ``type=`` functions, so a bad value is an argparse error (exit status 2, usage line, no
traceback) before any work starts. Other CLI modules reuse these instead of ``type=int``.
"""
from __future__ import annotations

import argparse
import math


def bounded_int(value, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else ``ValueError`` naming ``name`` and the fix."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={value!r} is not an integer; pass a whole number >= {minimum}") from None
        if not f.is_integer():
            raise ValueError(f"{name}={value!r} is not an integer; pass a whole number >= {minimum}")
        value = int(f)
    if value < minimum:
        what = "positive" if minimum == 1 else ("non-negative" if minimum == 0 else f">= {minimum}")
        raise ValueError(f"{name}={value} must be {what} (>= {minimum})")
    return int(value)


def bounded_float(value, name: str, minimum: float, strict: bool) -> float:
    """``value`` as a finite float > ``minimum`` (``strict``) or >= ``minimum``."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(f) or f < minimum or (strict and f == minimum):
        raise ValueError(f"{name}={value} must be a finite number {'>' if strict else '>='} {minimum:g}")
    return f


def _argtype(check, label: str):
    def parse(text: str):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("value=", "")) from None
    parse.__name__ = label  # argparse names the type in its fallback message
    return parse


positive_int = _argtype(lambda s: bounded_int(s, "value", 1), "positive_int")
nonneg_int = _argtype(lambda s: bounded_int(s, "value", 0), "nonneg_int")
positive_float = _argtype(lambda s: bounded_float(s, "value", 0.0, True), "positive_float")
nonneg_float = _argtype(lambda s: bounded_float(s, "value", 0.0, False), "nonneg_float")


def torch_device(text: str) -> str:
    """argparse type: a torch device this machine can use ('cpu', 'cuda', 'cuda:N'), checked up front by
    model_file.resolve_device (so 'cuda' without a GPU says so before any work)."""
    from .model_file import resolve_device

    try:
        return str(resolve_device(text))
    except (ValueError, RuntimeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
