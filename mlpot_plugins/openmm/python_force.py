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

Same-call uncertainty: a committee's statistics are computed by the very model call that gives the
driving forces. :meth:`PythonForceComputation.arm` marks a step; the evaluation OpenMM makes at that step
(the report's ``getState(getEnergy=True)``) asks the model for ``forces_std``/``energies_std``/``energy_std``
too and keeps them for the :class:`~mlpot_plugins.openmm.UncertaintyReporter`. The integrator's next
evaluation, at the same positions, reuses that result (an exact-positions cache), so a report step
costs one model evaluation. Computations are found from a System's ``PythonForce`` through a token
kept in the pickled function (clones made by XML, deepcopy or ``CustomCVForce`` share it).
"""
from __future__ import annotations

import os
import re
import time
import uuid
import weakref
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..model_file import LoadedModel, torchscript_error
from ..native_build import file_hash
from .model_loading import load_for_openmm
from .torch_module import OpenMMModelWrapper

MODEL_DIR_ENV = "MLPOT_MODEL_DIR"
TOKEN_PREFIX = "mlpot-call-"
# the token as it appears in the XML of a PythonForce: the pickled function, hex-encoded
_TOKEN_RE = re.compile(TOKEN_PREFIX.encode().hex() + "((?:3[0-9]|6[1-6]){32})")
_LIVE: Dict[str, "weakref.WeakSet"] = {}  # token -> the live computations carrying it (original and clones)


def file_sha256(path) -> str:
    return file_hash(path, "sha256")


class ModelNotFoundError(FileNotFoundError):
    """A deserialized mlpot force cannot find its model file again."""


class PythonForceComputation:
    """``f(state) -> (energy kJ/mol, forces kJ/mol/nm)`` for the particles of ``openmm.PythonForce``."""

    def __init__(self, model: LoadedModel, types: np.ndarray, periodic: bool, box_known_default: bool = False,
                 sha256: Optional[str] = None, token: Optional[str] = None):
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
        self._register(token)

    def _register(self, token: Optional[str]) -> None:
        self.token = token or uuid.uuid4().hex
        _LIVE.setdefault(self.token, weakref.WeakSet()).add(self)
        self.armed_step: Optional[int] = None  # the step whose evaluation also computes the committee stats
        self.stats: Optional[Dict[str, np.ndarray]] = None  # those stats (eV/A, eV), ML-region order
        self.stats_step: Optional[int] = None
        self._cache = None  # (positions nm, box nm, energy, forces) of the latest evaluation
        self.evaluations = 0  # model calls (cache hits excluded)
        self.seconds = {"host_to_device": 0.0, "model": 0.0, "device_to_host": 0.0}

    def arm(self, step: int) -> None:
        """Compute the committee statistics in the evaluation OpenMM makes at ``step``."""
        self.armed_step = int(step)

    def __call__(self, state):
        if self.error is not None:
            raise ModelNotFoundError(self.error)
        dev = self.model.device
        pos_np = np.asarray(state.getPositions(asNumpy=True)._value, dtype=np.float64)
        if pos_np.shape[0] == 0:
            return 0.0, np.zeros((0, 3))
        box_np = None
        if self.periodic:
            box_np = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value, dtype=np.float64)
        want = self.armed_step is not None and state.getStepCount() == self.armed_step
        cache = self._cache
        if (cache is not None and not (want and self.stats_step != self.armed_step)
                and np.array_equal(cache[0], pos_np) and (box_np is None or np.array_equal(cache[1], box_np))):
            return cache[2], cache[3]  # same positions as the last call (e.g. getState, then the next step)
        t0 = time.perf_counter()
        pos = torch.as_tensor(pos_np, device=dev)
        box = None if box_np is None else torch.as_tensor(box_np, device=dev)
        t1 = time.perf_counter()
        try:
            energy, forces, stats = self.module(pos, box, want)
        except Exception as exc:  # the model's own message first, not "failed in the TorchScript interpreter"
            err = torchscript_error(exc)
            if err is exc:
                raise
            raise err from None
        if dev.type == "cuda":  # so that "model" holds the GPU's work and "device_to_host" the copies only
            torch.cuda.synchronize(dev)
        t2 = time.perf_counter()
        energy, forces = float(energy), forces.detach().cpu().numpy()  # (syncs a GPU)
        if want:
            self.stats = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in stats.items()}
            self.stats_step, self.armed_step = self.armed_step, None
        t3 = time.perf_counter()
        self.seconds["host_to_device"] += t1 - t0
        self.seconds["model"] += t2 - t1
        self.seconds["device_to_host"] += t3 - t2
        self.evaluations += 1
        self._cache = (pos_np.copy(), box_np, energy, forces)
        return energy, forces

    def __getstate__(self):
        if self.error is not None:
            return dict(self._state, error=self.error)
        return {"path": str(self.model.path), "sha256": self.sha256, "device": str(self.model.device),
                "types": self.types_np, "periodic": self.periodic, "dtype": self.model.metadata["dtype"],
                "box_known_default": self.box_known_default, "token": TOKEN_PREFIX + self.token}

    def __setstate__(self, st):
        # never raise here: OpenMM's PythonForce deserializer segfaults on an exception from unpickling
        self._state, self.error = st, st.get("error")
        self.types_np, self.periodic = np.asarray(st["types"], dtype=np.int64), bool(st["periodic"])
        self.box_known_default = bool(st.get("box_known_default", False))
        token = str(st.get("token", ""))[len(TOKEN_PREFIX):] or None
        self._register(token)
        if self.error is not None:
            return
        try:
            path = find_model(st["path"], st.get("sha256"))
            self.__init__(load_for_openmm(path, st["device"], st["dtype"]), st["types"], st["periodic"],
                          self.box_known_default, st.get("sha256"), token)
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


def computations_of(force) -> List[PythonForceComputation]:
    """The live computations (original and clones) behind an mlpot ``openmm.PythonForce``; [] for other forces."""
    import openmm

    if not isinstance(force, openmm.PythonForce):
        return []
    match = _TOKEN_RE.search(openmm.XmlSerializer.serialize(force))
    return list(_LIVE.get(bytes.fromhex(match.group(1)).decode(), ())) if match else []
