"""openmm-ml registration: ``MLPotential("mlpot", modelPath="model.pt")``.

Registered through the ``openmmml.potentials`` entry point (pyproject.toml), so after installing
mlpot_plugins

>>> from openmmml import MLPotential
>>> potential = MLPotential("mlpot", modelPath="model.pt")
>>> system = potential.createSystem(topology)                      # all atoms ML
>>> mixed = potential.createMixedSystem(topology, mm_system, ml_atoms, interpolate=True)

Extra keyword arguments of createSystem/createMixedSystem reach :func:`create_force`:
``backend`` ("auto" (default: native > torch > python) / "native" / "torch" / "python"; the force added
says which in ``force.mlpot_backend``, and it is logged), ``device``, ``dtype``, ``cuda_graphs`` and openmm-ml's
``precision="single"|"double"`` (the model is converted to float32/float64; default: its own dtype). openmm-ml's generic
embeddings (mechanical) do the ML/MM bookkeeping; this module only adds the model's Force.
This module imports nothing heavy at import time, since openmm-ml loads every entry point on import.
"""
from __future__ import annotations

try:
    from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory
except ImportError:  # openmm-ml not installed: the classes still import, createImpl is never called
    MLPotentialImpl = MLPotentialImplFactory = object

FORCE_ARGS = ("backend", "device", "dtype", "cuda_graphs", "precision", "threads")
PRECISIONS = {"single": "float32", "double": "float64"}  # openmm-ml's precision= names


def force_args_for(args: dict) -> dict:
    """create_force keyword arguments from openmm-ml's: ``precision="single"|"double"`` (as openmm-ml's
    other potentials take it; None: the model's own) becomes ``dtype``."""
    out = dict(args)
    precision = out.pop("precision", None)
    if precision is None:
        return out
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; use 'single', 'double' or None (the model's own)")
    dtype = out.get("dtype")
    if dtype is not None and str(dtype).replace("torch.", "") != PRECISIONS[precision]:
        raise ValueError(f"precision={precision!r} contradicts dtype={dtype!r}; give only one of them")
    out["dtype"] = PRECISIONS[precision]
    return out


class MLPotPotentialImplFactory(MLPotentialImplFactory):
    """Creates :class:`MLPotPotentialImpl` for ``MLPotential("mlpot", modelPath=...)``."""

    def createImpl(self, name: str, modelPath=None, **args) -> "MLPotPotentialImpl":
        if modelPath is None:
            raise ValueError(f"MLPotential({name!r}) needs modelPath=: the path of an exported mlpot model "
                             "(.pt) or a shipped model name (see `mlpot models`)")
        unknown = sorted(set(args) - set(FORCE_ARGS))
        if unknown:
            raise TypeError(f"MLPotential({name!r}) got unknown argument(s) {unknown}; "
                            f"it accepts modelPath and {list(FORCE_ARGS)}")
        return MLPotPotentialImpl(modelPath, **args)


class MLPotPotentialImpl(MLPotentialImpl):
    """Adds the model's Force (from :func:`create_force`) for the requested atoms."""

    def __init__(self, modelPath, **force_args):
        from .model_loading import load_for_openmm

        # load once now: a missing or invalid file fails at MLPotential(...), not deep in createSystem
        force_args_for(force_args)  # a bad precision= fails here too
        self.model = load_for_openmm(modelPath, "cpu", kinds=("atomistic",))  # lattice models: create_force
        self.force_args = force_args

    def addForces(self, topology, system, atoms, forceGroup: int, **args) -> None:
        from .force import create_force

        force_args = dict(self.force_args)
        force_args.update({k: v for k, v in args.items() if k in FORCE_ARGS})
        force = create_force(self.model, topology, atoms=atoms, **force_args_for(force_args))
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def getSupportedEmbeddings(self) -> list:
        # we take over "mechanical" only to choose the backend for interpolation, then hand the work
        # back to openmm-ml's own MechanicalEmbedding
        return ["mechanical"]

    def createMixedSystem(self, topology, system, atoms, forceGroup: int, interpolate: bool, embedding: str,
                          returnInfo: bool = False, **args):
        from openmmml.embeddings.mechanicalembedding import MechanicalEmbedding

        if interpolate:
            from .backends import SERIALIZABLE, check_choice, choose_backend

            backend = check_choice(args.get("backend", self.force_args.get("backend")))
            if backend not in ("auto",) + SERIALIZABLE:
                raise ValueError(
                    "interpolate=True wraps the ML force in a CustomCVForce, which copies it through XML "
                    "serialization, and openmmtorch 1.5's TorchForce deserializer crashes against OpenMM "
                    f"8.6.1; use backend='python' or 'native' (or 'auto': the best of those) instead of {backend!r}")
            args["backend"] = choose_backend(backend, self.model, allowed=SERIALIZABLE)[0]
        return MechanicalEmbedding().createMixedSystem(self, topology, system, atoms, forceGroup, interpolate,
                                                       returnInfo=returnInfo, **args)

    def getMLLongRange(self) -> bool:
        """mlpot models are local (finite cutoff): no long-range ML interactions between images."""
        return False
