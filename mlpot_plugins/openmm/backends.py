"""Which OpenMM backend runs a model: ``native`` > ``torch`` > ``python``, each with the reason it is or is not usable.

* ``native``: the C++ OpenMM plugin (``mlpot_plugins.openmm.native``: ``native_available() -> (bool, reason)``,
  ``create_native_force(loaded, region, device)``), compiled against the installed OpenMM and torch;
* ``torch``: openmm-torch's ``TorchForce`` (the optional extra ``mlpot_plugins[openmm-torch]``; its binary is
  built for one torch version, so it may be missing or fail to load next to another torch);
* ``python``: ``openmm.PythonForce`` (always there: any torch, serializable, same-call uncertainty).

``backend="auto"`` takes the first usable one and the returned force says which (``force.mlpot_backend``,
``force.mlpot_backend_reason``; also logged at INFO on the ``mlpot_plugins.openmm`` logger).
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Optional, Tuple

BACKENDS = ("native", "torch", "python")  # in order of preference
CHOICES = ("auto",) + BACKENDS
SERIALIZABLE = ("native", "python")  # survive XmlSerializer / deepcopy / CustomCVForce (TorchForce 1.5 crashes)
EXTRA = "pip install 'mlpot_plugins[openmm-torch]' (an openmmtorch build for this torch)"

log = logging.getLogger("mlpot_plugins.openmm")
_cache: Dict[str, Tuple[bool, str]] = {}


def backend_available(name: str) -> Tuple[bool, str]:
    """(usable, reason) for one backend; never raises for a missing or broken optional part."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not one of {list(CHOICES)}")
    if name not in _cache:
        _cache[name] = _probe(name)
    return _cache[name]


def _probe(name: str) -> Tuple[bool, str]:
    import torch

    if name == "python":
        import openmm

        if not hasattr(openmm, "PythonForce"):
            return False, f"openmm {openmm.__version__} has no PythonForce (needs openmm >= 8.2)"
        return True, f"openmm.PythonForce (openmm {openmm.__version__}, torch {torch.__version__})"
    if name == "torch":
        try:
            import openmmtorch  # noqa: F401

            from .torch_plugins import ensure_torch_plugins

            ensure_torch_plugins()
        except Exception as exc:  # ImportError, OSError (undefined symbol: a build for another torch), ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return False, (f"openmm-torch cannot be imported next to torch {torch.__version__} ({first}); "
                           f"{EXTRA}, or use backend='python'")
        return True, f"openmmtorch.TorchForce (openmmtorch {_version('openmmtorch')}, torch {torch.__version__})"
    try:
        from . import native
    except ImportError as exc:
        return False, f"the native OpenMM plugin is not part of this installation ({exc})"
    try:
        ok, reason = native.native_available()
    except Exception as exc:  # a failed build or load is a reason, not a crash
        return False, f"the native OpenMM plugin is unusable: {type(exc).__name__}: {exc}"
    return bool(ok), str(reason)


def check_choice(requested: Optional[str]) -> str:
    """``requested`` (None means "auto") if it names a backend choice, else ValueError listing them."""
    requested = "auto" if requested is None else requested
    if requested not in CHOICES:
        raise ValueError(f"backend {requested!r} is not one of {list(CHOICES)}")
    return requested


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def choose_backend(requested: Optional[str], loaded=None, allowed: Iterable[str] = BACKENDS) -> Tuple[str, str]:
    """(backend, reason). ``requested`` None/"auto": the first usable backend in ``allowed``; a named one is
    checked and refused with the reason and the fix when it cannot run ``loaded``."""
    requested = check_choice(requested)
    candidates = [b for b in BACKENDS if b in allowed] if requested == "auto" else [requested]
    skipped: List[str] = []
    for name in candidates:
        ok, reason = backend_available(name)
        if ok:
            fits, why = _can_run(name, loaded)
            if not fits and requested != "auto":
                raise ValueError(why)
            ok, reason = fits, reason if fits else why
        if ok:
            reason = f"{name} ({reason})"
            if requested == "auto":
                reason = f"auto: {reason}" + (f"; skipped {'; '.join(skipped)}" if skipped else "")
            log.info("mlpot OpenMM backend: %s", reason)
            return name, reason
        if requested != "auto":
            raise RuntimeError(f"backend={name!r} is unavailable: {reason}; use backend='auto' to take the best "
                               "available one")
        skipped.append(f"{name}: {reason}")
    raise RuntimeError("no OpenMM backend can run this model: " + "; ".join(skipped))


def _can_run(name: str, loaded) -> Tuple[bool, str]:
    if name == "native" and loaded is not None and loaded.kind == "lattice":
        return False, (f"{loaded.path}: the native plugin runs atomistic models; a lattice model runs on "
                       "backend='torch' or 'python' (or 'auto')")
    if name == "torch" and loaded is not None and loaded.metadata.get("torch_libraries"):
        mods = ", ".join(e["python_module"] for e in loaded.metadata["torch_libraries"])
        return False, (f"{loaded.path}: the model holds TorchScript extension objects ({mods}) that "
                       "openmm-torch's TorchForce cannot freeze; use backend='python'")
    return True, ""


def tag(force, backend: str, reason: str):
    """Record the backend on the returned Python object (``mlpot_backend``, ``mlpot_backend_reason``)."""
    force.mlpot_backend = backend
    force.mlpot_backend_reason = reason
    return force


def available_backends() -> List[str]:
    """The usable backends here, in order of preference (what the tests run every check with)."""
    return [b for b in BACKENDS if backend_available(b)[0]]
