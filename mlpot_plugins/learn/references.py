"""Reference calculators of ``mlpot learn`` by name: ``emt`` (ASE EMT), ``xtb`` (GFN2-xTB through tblite,
the labels of ``mlpot data xtb``) or any ASE calculator class as ``module:Class`` with keyword ``options``.

``holstein-ed`` (exact diagonalisation of a Holstein lattice model) labels lattice fields, not atoms: a config
with it runs the lattice loop of ``holstein.learn`` (checked in ``learn.config``), not an ASE calculator.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict

from ..runsafe import RunError

NAMED = ("emt", "xtb")


def _xtb(accuracy=None):
    from ..xtb_data import LABEL_ACCURACY, calculator

    return calculator(accuracy=float(LABEL_ACCURACY if accuracy is None else accuracy))


def _check_options(name: str, factory, options: Dict[str, Any], source: str) -> None:
    """Unknown keyword options are an error (ASE calculators store any keyword silently)."""
    import inspect

    init = factory if inspect.isfunction(factory) else getattr(factory, "__init__", factory)
    try:
        params = inspect.signature(init).parameters.values()
    except (TypeError, ValueError):
        return
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    defaults = getattr(factory, "default_parameters", None)
    if isinstance(defaults, dict):
        named |= set(defaults)
    elif any(p.kind == p.VAR_KEYWORD for p in params):
        return  # takes any keyword and declares none: cannot tell
    unknown = sorted(set(options) - named)
    if unknown:
        raise ValueError(f"{source}: reference.options {unknown} are not options of {name!r}; valid: "
                         f"{sorted(named)}; fix the options")


def _factory(name: str, source: str) -> Callable[..., Any]:
    key = name.lower()
    if key == "emt":
        from ase.calculators.emt import EMT

        return EMT
    if key in ("xtb", "gfn2-xtb", "tblite"):
        return _xtb
    if ":" not in name:
        raise ValueError(f"{source}: reference.calculator={name!r} is not known; use emt, xtb or an ASE calculator "
                         "class written module:Class (e.g. ase.calculators.lj:LennardJones)")
    module, _, cls = name.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"{source}: reference.calculator={name!r}: module {module!r} cannot be imported ({exc}); "
                         "install it or fix the name") from None
    factory = getattr(mod, cls, None)
    if not callable(factory):
        raise ValueError(f"{source}: reference.calculator={name!r}: {module} has no class {cls!r}; fix the name")
    return factory


def check_reference(name: str, options: Dict[str, Any], source: str) -> None:
    """Fail before any work if the reference cannot be built (unknown name, missing package, bad options)."""
    make_reference(name, options, source)


def make_reference(name: str, options: Dict[str, Any], source: str = "config"):
    """A fresh ASE calculator for ``name`` built with ``options``."""
    factory = _factory(name, source)
    _check_options(name, factory, options, source)
    try:
        calc = factory(**dict(options))
    except RunError as exc:  # e.g. tblite not installed
        raise ValueError(f"{source}: reference {name!r} is not available: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: reference.options {options} do not fit {name!r} ({exc}); fix the options")
    if not hasattr(calc, "get_potential_energy") and not hasattr(calc, "calculate"):
        raise ValueError(f"{source}: reference.calculator={name!r} did not build an ASE calculator")
    return calc
