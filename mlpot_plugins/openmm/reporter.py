"""``UncertaintyReporter``: a committee model's per-atom force std during an OpenMM Simulation.

Every ``reportInterval`` steps it evaluates the committee on the current positions (the ASE
calculator's path: vesin neighbour list + the model's ``compute``, so its numbers are the
calculator's ``forces_std``) and writes

* ``file`` (text): step, max and mean per-atom force std [eV/A], the worst atoms' system indices;
* ``npy`` (binary): per report one ``np.save`` of the step (int64) then the per-atom std array
  (float64 [n_ml], eV/A); read it back with :func:`read_uncertainty`;
* ``pdb`` (optional): a MODEL per report with the per-atom std as B-factor, in meV/A (capped at 999.99).

With ``threshold`` [eV/A], a report whose max std exceeds it warns (``action="warn"``) or raises
:class:`UncertaintyExceeded` naming the atoms (``action="stop"``), after the report has been written.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO, Iterable, List, Optional, Tuple, Union

import numpy as np

from .. import units
from .ml_region import resolve_region
from .model_loading import load_for_openmm

ACTIONS = ("warn", "stop")
PDB_BFACTOR_SCALE = 1000.0  # eV/A -> meV/A in the B-factor column


class UncertaintyWarning(UserWarning):
    """The committee's per-atom force std exceeded the reporter's threshold."""


class UncertaintyExceeded(RuntimeError):
    """Raised by ``UncertaintyReporter(action="stop")``; ``atoms`` are system indices, ``std`` eV/A."""

    def __init__(self, message: str, step: int, atoms: List[int], std: List[float]):
        super().__init__(message)
        self.step, self.atoms, self.std = step, atoms, std


class UncertaintyReporter:
    """OpenMM reporter of per-atom committee force uncertainty (see the module docstring)."""

    def __init__(self, model, file: Union[str, os.PathLike, IO[str]], reportInterval: int,
                 threshold: Optional[float] = None, action: str = "warn",
                 pdb: Union[None, str, os.PathLike] = None, npy: Union[None, str, os.PathLike] = None,
                 atoms: Optional[Iterable[int]] = None, worst: int = 5, device: str = "cpu"):
        if int(reportInterval) < 1:
            raise ValueError(f"reportInterval must be a positive number of steps, got {reportInterval!r}")
        if action not in ACTIONS:
            raise ValueError(f"action {action!r} is not one of {list(ACTIONS)}")
        if threshold is not None and not float(threshold) > 0:
            raise ValueError(f"threshold must be a positive force std in eV/A, got {threshold!r}")
        self.model = load_for_openmm(model, device)
        if not self.model.has_uncertainty:
            raise ValueError(f"{self.model.path}: ensemble_size is {self.model.ensemble_size}; the "
                             "uncertainty reporter needs a committee model (ensemble_size > 1)")
        self.reportInterval = int(reportInterval)
        self.threshold = None if threshold is None else float(threshold)
        self.action = action
        self.worst = int(worst)
        self._atoms = None if atoms is None else list(atoms)
        self._region = None
        if isinstance(file, (str, os.PathLike)):
            self._text: IO[str] = open(file, "w")
            self._own_text = True
            default_npy = Path(file).with_suffix(".npy")
        else:
            self._text, self._own_text, default_npy = file, False, None
        npy = npy if npy is not None else default_npy
        self._npy = open(npy, "wb") if npy is not None else None
        self._pdb = open(pdb, "w") if pdb is not None else None
        self._pdb_models = 0
        self._text.write("# step max_force_std_eV/A mean_force_std_eV/A worst_atoms(index:std)\n")
        self._text.flush()
        self.last_std: Optional[np.ndarray] = None  # per-atom std of the latest report, eV/A
        self.max_seen = 0.0

    # -- OpenMM reporter protocol ------------------------------------------------------------------
    def describeNextReport(self, simulation):
        steps = self.reportInterval - simulation.currentStep % self.reportInterval
        return {"steps": steps, "periodic": None, "include": ["positions"]}

    def report(self, simulation, state) -> None:
        region = self._region_for(simulation)
        pos_A = np.asarray(state.getPositions(asNumpy=True)._value) * units.OPENMM_LENGTH_TO_MODEL
        if region.indices is not None:
            pos_A = pos_A[region.indices]
        cell_A = np.zeros((3, 3))
        if region.periodic:
            cell_A = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value) * units.OPENMM_LENGTH_TO_MODEL
        std = self.evaluate(pos_A, cell_A, region)
        self._write(simulation.currentStep, std, region, simulation.topology, state)

    # -- pieces usable without a Simulation ----------------------------------------------------------
    def evaluate(self, positions_A: np.ndarray, cell_A: np.ndarray, region) -> np.ndarray:
        """Per-atom force std [eV/A] of the ML region at these positions."""
        if region.n_ml == 0:
            return np.zeros(0)
        out = self.model.compute_on(positions_A, cell_A, region.periodic, region.types, need_virial=False,
                                    need_uncertainty=True)
        return out["forces_std"].detach().cpu().numpy().astype(np.float64)

    def _region_for(self, simulation):
        if self._region is None:
            self._region = resolve_region(self.model.species, simulation.topology, self._atoms,
                                          periodic=simulation.system.usesPeriodicBoundaryConditions())
        return self._region

    def _write(self, step: int, std: np.ndarray, region, topology, state) -> None:
        self.last_std = std
        order = np.argsort(-std)[: self.worst]
        worst_idx = region.system_index(order)
        vmax = float(std.max()) if std.size else 0.0
        vmean = float(std.mean()) if std.size else 0.0
        self.max_seen = max(self.max_seen, vmax)
        worst_txt = " ".join(f"{int(i)}:{std[k]:.5f}" for i, k in zip(worst_idx, order))
        self._text.write(f"{step} {vmax:.6f} {vmean:.6f} {worst_txt}\n")
        self._text.flush()
        if self._npy is not None:
            np.save(self._npy, np.int64(step))
            np.save(self._npy, std)
            self._npy.flush()
        if self._pdb is not None:
            self._write_pdb(std, region, topology, state)
        if self.threshold is not None and vmax > self.threshold:
            self._alarm(step, std, region)

    def _alarm(self, step: int, std: np.ndarray, region) -> None:
        over = np.nonzero(std > self.threshold)[0]
        over = over[np.argsort(-std[over])]
        idx = [int(i) for i in region.system_index(over)]
        vals = [float(std[k]) for k in over]
        shown = ", ".join(f"{i} ({v:.4f})" for i, v in list(zip(idx, vals))[:20])
        more = f" and {len(idx) - 20} more" if len(idx) > 20 else ""
        msg = (f"step {step}: per-atom force std exceeds the threshold {self.threshold} eV/A on "
               f"{len(idx)} atom(s): {shown}{more} (system indices, std in eV/A). The model is "
               "extrapolating there; stop, inspect those atoms, or add such configurations to training")
        if self.action == "stop":
            raise UncertaintyExceeded(msg, step, idx, vals)
        warnings.warn(msg, UncertaintyWarning, stacklevel=2)

    def _write_pdb(self, std: np.ndarray, region, topology, state) -> None:
        from openmm.app import PDBFile

        full = np.zeros(region.n_particles)
        full[region.system_index(np.arange(region.n_ml))] = std
        buf = io.StringIO()
        self._pdb_models += 1
        PDBFile.writeModel(topology, state.getPositions(), buf, modelIndex=self._pdb_models)
        k = 0
        for line in buf.getvalue().splitlines():
            if line.startswith(("ATOM", "HETATM")):
                b = min(full[k] * PDB_BFACTOR_SCALE, 999.99)
                line = f"{line[:60].ljust(60)}{b:6.2f}{line[66:]}"
                k += 1
            self._pdb.write(line + "\n")
        self._pdb.flush()

    def close(self) -> None:
        if self._own_text:
            self._text.close()
        for f in (self._npy, self._pdb):
            if f is not None:
                f.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def read_uncertainty(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Read the reporter's binary file: (steps [R], per-atom std arrays, one per report)."""
    steps, stds = [], []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while f.tell() < size:
            steps.append(int(np.load(f)))
            stds.append(np.load(f))
    return np.array(steps, dtype=np.int64), stds
