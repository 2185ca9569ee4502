"""``UncertaintyReporter``: a committee model's per-atom uncertainty during an OpenMM Simulation.

Every ``reportInterval`` steps it records the committee's statistics at the current positions. When
the System is driven by the same committee (same file content, dtype and ML region) through the python backend
(``create_force(..., backend="python")``) or the native plugin (``backend="native"``, the default when it
builds), they come from the driving force's own model call at that step (no second evaluation; ``same_call``
is True: the report step's State evaluation computes them and the integrator's next step reuses it, same
positions); otherwise (the torch backend, another model or region) the reporter evaluates the committee itself
(the ASE calculator's path: vesin neighbour list + the model's ``compute``, so its numbers are the
calculator's). It records the contract's uncertainty outputs under their contract names:
``forces_std`` (per atom, eV/A), ``energies_std`` (per atom, eV) and ``energy_std`` (total, eV).

* ``file`` (text): step, max and mean per-atom force std [eV/A], max per-atom energy std and total
  energy std [eV], the worst atoms' system indices (by force std);
* ``npy`` (binary): a header, then per report one ``np.save`` each of the step (int64), ``forces_std``
  [n_ml], ``energies_std`` [n_ml] and ``energy_std`` (float64); read it back with
  :func:`read_uncertainty`;
* ``pdb`` (optional): a MODEL per report with the per-atom force std as B-factor, in meV/A (capped at 999.99).

A lattice model (``create_force`` with ``lattice_topology(L)``) reports the per-site calibrated force std of
``compute_lattice`` in its own units (t per Q unit, = kJ/mol/nm in the OpenMM mapping) where the text says
eV/A; its ``energies_std`` and ``energy_std`` are NaN (the lattice contract has no energy std).

Files are checked before the run (their folder must exist; a path must not be a folder). An existing
file is continued: a new reporter on the same files (a restarted run) appends its records after the
earlier ones (a record cut short by a killed run is dropped first); ``append=False`` starts the files
afresh. Every record is flushed when written. With ``threshold`` [eV/A], a report whose max force std
exceeds it warns (``action="warn"``) or raises :class:`UncertaintyExceeded` naming the atoms
(``action="stop"``), after the report has been written.
"""
from __future__ import annotations

import dataclasses
import io
import os
import warnings
from pathlib import Path
from typing import IO, Dict, Iterable, List, Optional, Union

import numpy as np
import torch

from .. import units
from .ml_region import resolve_region
from .model_loading import load_for_openmm
from .torch_module import check_box

ACTIONS = ("warn", "stop")
PDB_BFACTOR_SCALE = 1000.0  # eV/A -> meV/A in the B-factor column
TEXT_HEADER = ("# step max_forces_std_eV/A mean_forces_std_eV/A max_energies_std_eV energy_std_eV "
               "worst_atoms(index:forces_std)\n")
NPY_HEADER = "mlpot-uncertainty-2 step forces_std energies_std energy_std"
NPY_FIELDS = ("step", "forces_std", "energies_std", "energy_std")


class UncertaintyWarning(UserWarning):
    """The committee's per-atom force std exceeded the reporter's threshold."""


class UncertaintyExceeded(RuntimeError):
    """Raised by ``UncertaintyReporter(action="stop")``; ``atoms`` are system indices, ``std`` eV/A."""

    def __init__(self, message: str, step: int, atoms: List[int], std: List[float]):
        super().__init__(message)
        self.step, self.atoms, self.std = step, atoms, std


def check_output_path(path: Union[str, os.PathLike], what: str) -> Path:
    """An output file path whose folder exists and which is not itself a folder (checked before a run)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is a directory; give a file name inside it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r}: its folder {str(path.parent)!r} does not exist; create it "
                                f"first (mkdir -p {path.parent}) or choose another path")
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK):
        raise PermissionError(f"{what} {str(path)!r} is not writable; choose a path you can write to")
    return path


class UncertaintyReporter:
    """OpenMM reporter of per-atom committee uncertainty (see the module docstring)."""

    def __init__(self, model, file: Union[str, os.PathLike, IO[str]], reportInterval: int,
                 threshold: Optional[float] = None, action: str = "warn",
                 pdb: Union[None, str, os.PathLike] = None, npy: Union[None, str, os.PathLike] = None,
                 atoms: Optional[Iterable[int]] = None, worst: int = 5, device: str = "cpu",
                 append: bool = True):
        if int(reportInterval) < 1:
            raise ValueError(f"reportInterval must be a positive number of steps, got {reportInterval!r}")
        if action not in ACTIONS:
            raise ValueError(f"action {action!r} is not one of {list(ACTIONS)}")
        if threshold is not None and not float(threshold) > 0:
            raise ValueError(f"threshold must be a positive force std in eV/A, got {threshold!r}")
        own_text = isinstance(file, (str, os.PathLike))
        paths = {"file": check_output_path(file, "reporter file") if own_text else None,
                 "npy": None if npy is None else check_output_path(npy, "npy file"),
                 "pdb": None if pdb is None else check_output_path(pdb, "pdb file")}
        if paths["npy"] is None and own_text:
            paths["npy"] = check_output_path(Path(file).with_suffix(".npy"), "npy file")
        named = [q for q in paths.values() if q is not None]
        if len({q.resolve() for q in named}) != len(named):
            raise ValueError(f"the reporter's files {[str(q) for q in named]} must be different files")
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
        self._driving = None  # (computations, force name) of a python-backend force running this committee
        self._native = None  # the tag of a native MLPotForce running this committee on this region ("" if none)
        self.same_call = False  # whether the latest report came from the driving force's own model call
        self.separate_evaluations = 0  # reports for which the reporter evaluated the committee itself
        if own_text:
            self._text: IO[str] = _open_text(paths["file"], append)
        else:
            self._text = file
            self._text.write(TEXT_HEADER)
            self._text.flush()
        self._own_text = own_text
        self._npy = _open_npy(paths["npy"], append) if paths["npy"] is not None else None
        self._pdb, self._pdb_models = _open_pdb(paths["pdb"], append) if paths["pdb"] is not None else (None, 0)
        self.last_std: Optional[np.ndarray] = None  # per-atom force std of the latest report, eV/A
        self.last: Dict[str, np.ndarray] = {}  # the latest report's forces_std, energies_std, energy_std
        self.max_seen = 0.0

    # -- OpenMM reporter protocol ------------------------------------------------------------------
    def describeNextReport(self, simulation):
        steps = self.reportInterval - simulation.currentStep % self.reportInterval
        driving = self._driving_for(simulation)
        native_tag = self._native_for(simulation) if not driving else ""
        if not driving and not native_tag:
            return {"steps": steps, "periodic": None, "include": ["positions"]}
        if native_tag:
            from .native import request_uncertainty_at

            request_uncertainty_at(native_tag, simulation.context, simulation.context.getStepCount() + steps)
        for comp in driving[0] if driving else ():
            comp.arm(simulation.currentStep + steps)
        # the energy makes OpenMM evaluate the forces at the report step, with the statistics; the
        # integrator's next step reuses that evaluation (same positions)
        return {"steps": steps, "periodic": None, "include": ["positions", "energy"]}

    def report(self, simulation, state) -> None:
        region = self._region_for(simulation)
        if self.model.kind == "lattice":  # per-site std of a lattice model (mlpot_plugins/openmm/lattice.py)
            from .lattice import site_uncertainty

            out = site_uncertainty(self.model, state.getPositions(asNumpy=True)._value)
            return self._write(simulation.currentStep, out, region, simulation.topology, state)
        driving = self._driving_for(simulation)
        for comp in driving[0] if driving else ():
            if comp.stats_step == simulation.currentStep and comp.stats:
                self.same_call = True
                self._write(simulation.currentStep, dict(comp.stats), region, simulation.topology, state)
                return
        native_tag = self._native_for(simulation) if not driving else ""
        if native_tag:
            from .native import read_uncertainty

            got = read_uncertainty(native_tag, simulation.context, region.n_ml)
            if got is not None and got["step"] == simulation.context.getStepCount():
                self.same_call = True
                self._write(simulation.currentStep, {k: got[k] for k in NPY_FIELDS[1:]}, region,
                            simulation.topology, state)
                return
        self.same_call = False
        self.separate_evaluations += 1
        pos_A = np.asarray(state.getPositions(asNumpy=True)._value) * units.OPENMM_LENGTH_TO_MODEL
        if region.indices is not None:
            pos_A = pos_A[region.indices]
        cell_A = np.zeros((3, 3))
        if region.periodic:
            box_nm = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value, dtype=np.float64)
            check_box(torch.from_numpy(box_nm), region.box_known_default)
            cell_A = box_nm * units.OPENMM_LENGTH_TO_MODEL
        out = self.evaluate_all(pos_A, cell_A, region)
        self._write(simulation.currentStep, out, region, simulation.topology, state)

    # -- pieces usable without a Simulation ----------------------------------------------------------
    def evaluate_all(self, positions_A: np.ndarray, cell_A: np.ndarray, region) -> Dict[str, np.ndarray]:
        """``forces_std`` [n_ml] (eV/A), ``energies_std`` [n_ml] (eV) and ``energy_std`` (eV) of the ML region."""
        if region.n_ml == 0:
            return {"forces_std": np.zeros(0), "energies_std": np.zeros(0), "energy_std": np.float64(0.0)}
        out = self.model.compute_on(positions_A, cell_A, region.periodic, region.types, need_virial=False,
                                    need_uncertainty=True)
        return {k: out[k].detach().cpu().numpy().astype(np.float64) for k in NPY_FIELDS[1:]}

    def evaluate(self, positions_A: np.ndarray, cell_A: np.ndarray, region) -> np.ndarray:
        """Per-atom force std [eV/A] of the ML region at these positions."""
        return self.evaluate_all(positions_A, cell_A, region)["forces_std"]

    def _driving_for(self, simulation):
        """The python-backend force in ``simulation`` that runs this very committee on this ML region, if any."""
        if self._driving is None:
            from .python_force import computations_of, file_sha256

            self._driving = ()
            path = Path(self.model.path)
            sha = file_sha256(path) if path.is_file() else None
            groups = simulation.context.getIntegrator().getIntegrationForceGroups()
            system = simulation.system
            for i in range(system.getNumForces()):
                force = system.getForce(i)
                comps = [c for c in computations_of(force) if c.error is None and sha is not None
                         and c.sha256 == sha and c.model.dtype == self.model.dtype]
                particles = list(force.getParticles()) if comps else []
                same_region = (particles == self._atoms if self._atoms is not None
                               else not particles or particles == list(range(system.getNumParticles())))
                if comps and same_region and groups & (1 << force.getForceGroup()):
                    self._driving = (comps, force.getName())
                    break
        return self._driving

    def _native_for(self, simulation) -> str:
        """The tag of a native MLPotForce in ``simulation`` running this very committee (same file content and
        precision) on this ML region in an integrated force group, else ""."""
        if self._native is None:
            self._native = ""
            path = Path(self.model.path)
            if self.model.kind != "atomistic" or not path.is_file():
                return self._native
            try:
                from .native import model_sha1, native_force_info
            except ImportError:
                return self._native
            sha = model_sha1(path)
            groups = simulation.context.getIntegrator().getIntegrationForceGroups()
            system = simulation.system
            everyone = list(range(system.getNumParticles()))
            for i in range(system.getNumForces()):
                force = system.getForce(i)
                info = native_force_info(force)
                if (info and info.get("modelSha1") == sha and info.get("precision") == self.model.metadata["dtype"]
                        and info["particles"] == (self._atoms if self._atoms is not None else everyone)
                        and groups & (1 << force.getForceGroup())):
                    self._native = info["tag"]
                    break
        return self._native

    def _region_for(self, simulation):
        if self._region is None and self.model.kind == "lattice":
            from .lattice import lattice_region

            self._region = lattice_region(self.model, simulation.topology, self._atoms)
        if self._region is None:
            # the System decides periodicity; a periodic System without a real box is caught by check_box
            region = resolve_region(self.model.species, simulation.topology, self._atoms, periodic=False)
            self._region = dataclasses.replace(region, periodic=simulation.system.usesPeriodicBoundaryConditions())
        return self._region

    def _write(self, step: int, out: Dict[str, np.ndarray], region, topology, state) -> None:
        std = out["forces_std"]
        self.last_std, self.last = std, out
        order = np.argsort(-std)[: self.worst]
        worst_idx = region.system_index(order)
        vmax = float(std.max()) if std.size else 0.0
        vmean = float(std.mean()) if std.size else 0.0
        emax = float(out["energies_std"].max()) if std.size else 0.0
        self.max_seen = max(self.max_seen, vmax)
        worst_txt = " ".join(f"{int(i)}:{std[k]:.5f}" for i, k in zip(worst_idx, order))
        self._text.write(f"{step} {vmax:.6f} {vmean:.6f} {emax:.6f} {float(out['energy_std']):.6f} {worst_txt}\n")
        self._text.flush()
        if self._npy is not None:
            np.save(self._npy, np.int64(step))
            for key in NPY_FIELDS[1:]:
                np.save(self._npy, np.asarray(out[key], dtype=np.float64))
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


def read_uncertainty(path: Union[str, os.PathLike]) -> Dict[str, object]:
    """Read the reporter's binary file: ``{"step": int64 [R], "forces_std": [R arrays], "energies_std":
    [R arrays], "energy_std": float64 [R]}`` (files of the first format hold step and forces_std only)."""
    records, _ = _read_npy_records(Path(path))
    out: Dict[str, object] = {"step": np.array([r[0] for r in records], dtype=np.int64)}
    for n, key in enumerate(NPY_FIELDS[1:], start=1):
        values = [r[n] for r in records if len(r) > n]
        out[key] = np.array(values, dtype=np.float64) if key == "energy_std" else values
    return out


def _read_npy_records(path: Path):
    """(complete records, byte offset after the last complete one); a truncated tail is ignored."""
    records, end = [], 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            first = np.load(f)
        except Exception:
            return records, 0
        n_fields = len(NPY_FIELDS)
        if first.dtype.kind in "US":
            if str(first) != NPY_HEADER:
                raise ValueError(f"{path}: not an mlpot uncertainty file of this version (header {str(first)!r})")
        else:  # first format: step, forces_std
            n_fields = 2
            f.seek(0)
        end = f.tell()
        while f.tell() < size:
            try:
                record = [np.load(f) for _ in range(n_fields)]
            except Exception:  # cut short by a killed run
                break
            records.append([int(record[0])] + record[1:])
            end = f.tell()
    return records, end


def _open_text(path: Path, append: bool) -> IO[str]:
    if append and path.exists() and path.stat().st_size > 0:
        text = path.read_text()
        if not text.startswith(TEXT_HEADER):
            raise ValueError(f"reporter file {str(path)!r} exists but was not written by this UncertaintyReporter "
                             "version; choose another file name, or pass append=False to start it afresh")
        _truncate(path, len(text[: text.rfind("\n") + 1].encode()))  # a line cut short by a killed run
        return open(path, "a")
    f = open(path, "w")
    f.write(TEXT_HEADER)
    f.flush()
    return f


def _open_npy(path: Path, append: bool):
    if append and path.exists() and path.stat().st_size > 0:
        try:
            records, end = _read_npy_records(path)
        except ValueError as exc:
            raise ValueError(f"{exc}; choose another npy= file, or pass append=False to start it afresh") from None
        if records and len(records[0]) != len(NPY_FIELDS):
            raise ValueError(f"npy file {str(path)!r} has the first (forces_std only) format and cannot be continued; "
                             "choose another npy= file, or pass append=False to start it afresh")
        _truncate(path, end)
        if end > 0:
            return open(path, "ab")
    f = open(path, "wb")
    np.save(f, np.array(NPY_HEADER))
    f.flush()
    return f


def _open_pdb(path: Path, append: bool):
    if append and path.exists() and path.stat().st_size > 0:
        text = path.read_text()
        end = text.rfind("ENDMDL")
        keep = 0 if end < 0 else text.index("\n", end) + 1 if "\n" in text[end:] else len(text)
        _truncate(path, len(text[:keep].encode()))  # a MODEL cut short by a killed run
        return open(path, "a"), text[:keep].count("\nMODEL") + text[:keep].startswith("MODEL")
    return open(path, "w"), 0


def _truncate(path: Path, size: int) -> None:
    if path.stat().st_size != size:
        with open(path, "r+b") as f:
            f.truncate(size)
