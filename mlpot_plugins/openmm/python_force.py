"""``backend="python"``: the model behind an ``openmm.PythonForce`` (no openmm-torch needed).

OpenMM calls the computation with a State holding only the ML-region particles (``setParticles``);
it runs the same translating module as the TorchForce backend (:class:`OpenMMModelWrapper`: units,
vesin-torch neighbour list, the model's ``compute``), so the two backends differ only in who calls it.

Serialization (``XmlSerializer``, ``copy.deepcopy``, ``CustomCVForce``, openmm-ml interpolation) pickles
the model's path (or shipped name) and the SHA-256 of its content; unpickling reloads it. OpenMM
crashes if unpickling raises, so ``__setstate__`` never raises: a model that cannot be found again
(moved, deleted, changed) leaves a computation that raises, at its first evaluation, an exception
naming the file, the expected content hash and the fix. ``MLPOT_MODEL_DIR`` (a folder, or several
separated by ``os.pathsep``) is searched for a file of the same name and content when the recorded path
is gone, so serialized Systems can move between machines with their models.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..model_file import LoadedModel, torchscript_error
from ..native_build import file_hash
from .model_loading import load_for_openmm
from .torch_module import OpenMMModelWrapper

MODEL_DIR_ENV = "MLPOT_MODEL_DIR"


def file_sha256(path) -> str:
    return file_hash(path, "sha256")


class ModelNotFoundError(FileNotFoundError):
    """A deserialized mlpot force cannot find its model file again."""


class PythonForceComputation:
    """``f(state) -> (energy kJ/mol, forces kJ/mol/nm)`` for the particles of ``openmm.PythonForce``."""

    def __init__(self, model: LoadedModel, types: np.ndarray, periodic: bool, box_known_default: bool = False,
                 sha256: Optional[str] = None):
        self.model = model
        self.types_np = np.asarray(types, dtype=np.int64)
        self.periodic = bool(periodic)
        self.box_known_default = bool(box_known_default)
        # None: the file is already gone (a LoadedModel kept in memory); deserializing then reports it
        self.sha256 = sha256 or (file_sha256(model.path) if Path(model.path).is_file() else None)
        self.error: Optional[str] = None
        wrapper = OpenMMModelWrapper(model.module, torch.as_tensor(self.types_np), None, model.cutoff,
                                     self.periodic, model.dtype, self.box_known_default)
        self.module = torch.jit.script(wrapper).to(model.device)

    def __call__(self, state):
        if self.error is not None:
            raise ModelNotFoundError(self.error)
        dev = self.model.device
        # State._getVectorAsNumpy-free path: positions in nm as a plain float64 array
        pos = torch.as_tensor(np.asarray(state.getPositions(asNumpy=True)._value), device=dev)
        if pos.shape[0] == 0:
            return 0.0, np.zeros((0, 3))
        box = None
        if self.periodic:
            box = torch.as_tensor(np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value), device=dev)
        try:
            energy, forces = self.module(pos, box)
        except Exception as exc:  # the model's own message first, not "failed in the TorchScript interpreter"
            err = torchscript_error(exc)
            if err is exc:
                raise
            raise err from None
        return float(energy), forces.detach().cpu().numpy()

    def __getstate__(self):
        if self.error is not None:
            return dict(self._state, error=self.error)
        return {"path": str(self.model.path), "sha256": self.sha256, "device": str(self.model.device),
                "types": self.types_np, "periodic": self.periodic, "dtype": self.model.metadata["dtype"],
                "box_known_default": self.box_known_default}

    def __setstate__(self, st):
        # never raise here: OpenMM's PythonForce deserializer segfaults on an exception from unpickling
        self._state, self.error = st, st.get("error")
        self.types_np, self.periodic = np.asarray(st["types"], dtype=np.int64), bool(st["periodic"])
        self.box_known_default = bool(st.get("box_known_default", False))
        if self.error is not None:
            return
        try:
            path = find_model(st["path"], st.get("sha256"))
            self.__init__(load_for_openmm(path, st["device"], st["dtype"]), st["types"], st["periodic"],
                          self.box_known_default, st.get("sha256"))
        except Exception as exc:  # noqa: BLE001 (reported at the first evaluation, see the module docstring)
            self.error = (f"mlpot: this deserialized force cannot load its model: {exc}. Put the model file back "
                          f"at {st['path']!r}, or set {MODEL_DIR_ENV} to a folder holding a copy of it, or "
                          "re-create the force with mlpot_plugins.openmm.create_force(...)")


def find_model(path: str, sha256: Optional[str]) -> Path:
    """The recorded model file if it is still there with the same content, else a copy of the same name
    and content in ``$MLPOT_MODEL_DIR``; ModelNotFoundError naming path and hash otherwise."""
    from ..pretrained import pretrained_dir

    candidates = [Path(path)] + [Path(d) / Path(path).name
                                 for d in os.environ.get(MODEL_DIR_ENV, "").split(os.pathsep) if d]
    try:  # a shipped model found by name in this installation
        candidates.append(pretrained_dir() / Path(path).name)
    except FileNotFoundError:
        pass
    changed = []
    for cand in candidates:
        if cand.is_file():
            if sha256 is None or file_sha256(cand) == sha256:
                return cand
            changed.append(str(cand))
    if changed:
        raise ModelNotFoundError(f"model file(s) {changed} changed since the force was serialized (its content "
                                 f"SHA-256 was {sha256})")
    raise ModelNotFoundError(f"model file {path!r} no longer exists (content SHA-256 {sha256}; also looked in "
                             f"${MODEL_DIR_ENV}={os.environ.get(MODEL_DIR_ENV, '')!r})")
