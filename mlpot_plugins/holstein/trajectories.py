"""Readers of lattice trajectories written by the engines, for ``mlpot holstein analyze``.

Each reader returns ``(times, Q)`` with Q [frames, L, L] (site (i, j) = Q[:, i, j]) and times in the
Holstein time unit 1/t; the observables are computed by ``observables.record_frame`` (one implementation
for every source).

* LAMMPS text dumps (``dump custom ... id x y z ...``, e.g. the deck of ``mlpot holstein lammps``): a site
  is placed by its x, y (site (i, j) at x = xlo + i a, y = ylo + j a, a = box width / L, L = sqrt(atoms)),
  or by its id (id = i L + j + 1) when the dump has no x, y; Q = z. Time = timestep x dt (dt from the
  ``holstein-lammps.json`` written next to the deck, or ``--dt``). A timestep written twice (a restarted run
  appends to the dump) keeps the later frame.
* OpenMM trajectories, DCD (as written by ``openmm.app.DCDReporter``, Angstrom) or multi-model PDB (nm):
  particle k is site k in row-major order (k = i L + j), Q = z / ``q_unit_nm`` (default: 1 Q unit = 1 nm,
  the mapping of the OpenMM lattice force); the time between frames is not in a PDB and its unit mapping
  is the deck's, so it is given as ``frame_dt`` (1/t).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

OTHER_FORMATS = (".xtc", ".trr", ".nc", ".netcdf", ".h5", ".xyz", ".gro", ".bin", ".npy", ".npz")
LATTICE_TOL = 1e-4  # a site farther than this (in units of a) from its lattice point is an error


def _side(n: int, path) -> int:
    L = int(round(math.sqrt(n)))
    if L * L != n or L < 4 or L % 2:
        raise ValueError(f"{path}: {n} sites are not an even square L x L lattice (L >= 4); the file must hold "
                         "every site of one square lattice (write the dump/trajectory for group all)")
    return L


def _not_a_dump(path, what: str) -> str:
    return (f"{path} is not an observables.json of `mlpot holstein run` (pass the run's --out folder) nor a LAMMPS "
            f"text dump ({what}); write dumps with `dump ID all custom N FILE id x y z` (not atom/xyz/binary styles)")


def read_lammps_dump(path, extra: Sequence[str] = ()):
    """(timesteps, Q [frames, L, L]) from a LAMMPS text dump with columns id and z (x, y used when present);
    with ``extra`` column names (e.g. "vz", "c_u[1]") a third item {name: [frames, L, L]} in the same site order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LAMMPS dump {path} does not exist; run the deck (lmp -in in.holstein) first")
    frames = {}
    with open(path, errors="replace") as fh:  # a binary file shows as a first line that is no dump header
        while True:
            line = fh.readline()
            if not line:
                break
            if not line.startswith("ITEM: TIMESTEP"):
                if line.strip():
                    raise ValueError(_not_a_dump(path, f"line {line.strip()[:60]!r}"))
                continue
            try:
                step = int(fh.readline())
                assert fh.readline().startswith("ITEM: NUMBER OF ATOMS")
                n = int(fh.readline())
                assert fh.readline().startswith("ITEM: BOX BOUNDS")
                bounds = [tuple(float(v) for v in fh.readline().split()[:2]) for _ in range(3)]
                cols = fh.readline().split()
                assert cols[:2] == ["ITEM:", "ATOMS"]
                cols = cols[2:]
                rows = [fh.readline() for _ in range(n)]
                data = np.loadtxt(rows, ndmin=2) if n else np.zeros((0, len(cols)))
            except (AssertionError, ValueError, IndexError):
                raise ValueError(f"{path}: the frame after timestep line {line.strip()!r} is truncated or not a "
                                 "LAMMPS text dump frame; rerun or cut the file at the last whole frame") from None
            if data.shape != (n, len(cols)):
                raise ValueError(f"{path}: timestep {step} holds {data.shape[0]} of {n} atom lines (truncated "
                                 "file?); rerun or cut the file at the last whole frame")
            frames[step] = _dump_frame(path, step, cols, data, bounds, ("z",) + tuple(extra))
    if not frames:
        raise ValueError(f"{path} holds no dump frames; run the deck longer than one dump interval")
    steps = sorted(frames)
    shapes = {frames[s]["z"].shape for s in steps}
    if len(shapes) > 1:
        raise ValueError(f"{path}: frames of different lattice sizes {sorted(shapes)}; one dump per run")
    fields = {c: torch.stack([frames[s][c] for s in steps]) for c in ("z",) + tuple(extra)}
    Q = fields.pop("z")
    return (np.asarray(steps, float), Q, fields) if extra else (np.asarray(steps, float), Q)


def _dump_frame(path, step, cols, data, bounds, want) -> dict:
    col = {c: k for k, c in enumerate(cols)}
    if "z" not in col:
        raise ValueError(f"{path}: the dump has no z column (columns {cols}); Q is the z coordinate: dump "
                         "`id x y z` (unscaled z, not zs/zu)")
    missing = [c for c in want if c not in col]
    if missing:
        raise ValueError(f"{path}: the dump has no column(s) {missing} (columns {cols}); add them to the dump")
    L = _side(len(data), path)
    if "x" in col and "y" in col:
        (xlo, xhi), (ylo, yhi) = bounds[0], bounds[1]
        a = (xhi - xlo) / L
        if abs((yhi - ylo) - (xhi - xlo)) > LATTICE_TOL * a:
            raise ValueError(f"{path}: timestep {step}: the box is {xhi - xlo:g} x {yhi - ylo:g}, not square; a "
                             "Holstein lattice is L x L sites at spacing a")
        fi = (data[:, col["x"]] - xlo) / a
        fj = (data[:, col["y"]] - ylo) / a
        i, j = np.rint(fi), np.rint(fj)
        off = np.maximum(np.abs(fi - i), np.abs(fj - j)).max()
        if off > LATTICE_TOL:
            raise ValueError(f"{path}: timestep {step}: a site is {off:.3g} a off its lattice point (x, y must "
                             "stay at xlo + i a, ylo + j a); keep x, y fixed (fix setforce 0.0 0.0 NULL after fix "
                             "langevin, as the deck of `mlpot holstein lammps` does)")
        k = (i.astype(np.int64) % L) * L + (j.astype(np.int64) % L)
    elif "id" in col:
        k = data[:, col["id"]].astype(np.int64) - 1
    else:
        raise ValueError(f"{path}: the dump has neither x, y nor id columns; dump `id x y z`")
    if k.min() < 0 or k.max() >= L * L or len(np.unique(k)) != L * L:
        raise ValueError(f"{path}: timestep {step}: sites are missing or doubled ({len(np.unique(k))} distinct "
                         f"of {L * L}); dump every site once (group all)")
    out = {}
    for c in want:
        v = np.empty(L * L)
        v[k] = data[:, col[c]]
        out[c] = torch.from_numpy(v.reshape(L, L))
    return out


def read_dcd(path) -> Tuple[np.ndarray, float]:
    """z coordinates [frames, atoms] in nm and the header's time between frames in ps (0 if absent)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        n1, tag = struct.unpack_from("<i4s", raw, 0)
        if n1 != 84 or tag != b"CORD":
            raise ValueError
        icntrl = struct.unpack_from("<20i", raw, 8)
        delta = struct.unpack_from("<f", raw, 8 + 9 * 4)[0]
        cell = icntrl[10] != 0
        off = 4 + 84 + 4
        n2 = struct.unpack_from("<i", raw, off)[0]
        off += 4 + n2 + 4
        natoms = struct.unpack_from("<i", raw, off + 4)[0]
        off += 12
    except (struct.error, ValueError):
        raise ValueError(f"{path} is not a DCD trajectory (no CORD header); write it with openmm.app.DCDReporter") \
            from None
    rec = 4 * natoms + 8
    frame = (56 if cell else 0) + 3 * rec
    nf = (len(raw) - off) // frame
    if nf == 0:
        raise ValueError(f"{path} holds no whole frame; run the simulation longer than one report interval")
    z = np.empty((nf, natoms))
    for f in range(nf):
        start = off + f * frame + (56 if cell else 0) + 2 * rec + 4
        z[f] = np.frombuffer(raw, "<f4", natoms, start)
    ps_per_akma = 0.04888821
    return z / 10.0, delta * icntrl[2] * ps_per_akma  # Angstrom -> nm


def read_openmm(path, frame_dt: Optional[float], q_unit_nm: float = 1.0) -> Tuple[np.ndarray, torch.Tensor]:
    """(times, Q [frames, L, L]) from an OpenMM DCD or PDB trajectory (z of particle k = site k, row-major)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OpenMM trajectory {path} does not exist")
    if frame_dt is None or not frame_dt > 0:
        raise ValueError(f"{path}: give --frame-dt (the time between frames in 1/t, e.g. report interval x dt): "
                         "an OpenMM trajectory does not hold it in the Holstein time unit")
    if path.suffix.lower() == ".dcd":
        z, _ = read_dcd(path)
    elif path.suffix.lower() == ".pdb":
        from openmm.app import PDBFile
        from openmm.unit import nanometer

        try:
            pdb = PDBFile(str(path))
        except Exception as exc:
            raise ValueError(f"{path} is not a readable PDB trajectory ({type(exc).__name__}: {exc})") from None
        z = np.stack([np.asarray(pdb.getPositions(asNumpy=True, frame=k).value_in_unit(nanometer))[:, 2]
                      for k in range(pdb.getNumFrames())])
    else:
        raise ValueError(f"{path}: unknown trajectory type {path.suffix!r}; analyze reads a run folder or "
                         "observables.json, LAMMPS dumps (.dump, .lammpstrj) and OpenMM .dcd/.pdb")
    L = _side(z.shape[1], path)
    Q = torch.from_numpy(z / q_unit_nm).reshape(-1, L, L)
    return np.arange(len(Q)) * frame_dt, Q


def lammps_dt(path, dt: Optional[float]) -> float:
    """dt of a LAMMPS dump: --dt, else the holstein-lammps.json next to it (written with the deck)."""
    from .lammps_deck import INFO_NAME

    if dt is not None:
        if not dt > 0:
            raise ValueError(f"--dt {dt}: the time step must be > 0")
        return float(dt)
    info = Path(path).parent / INFO_NAME
    try:
        return float(json.loads(info.read_text())["params"]["dt"])
    except FileNotFoundError:
        raise ValueError(f"{path}: no {INFO_NAME} next to the dump to read the time step from; pass --dt (the "
                         "LAMMPS timestep, 1/t)") from None
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{info} is not the parameter file of `mlpot holstein lammps`; pass --dt") from None


def load_trajectories(paths: List[str], dt: Optional[float] = None, frame_dt: Optional[float] = None,
                      q_unit_nm: float = 1.0) -> Tuple[np.ndarray, torch.Tensor]:
    """Read one or more trajectories (seeds) -> (times, Q [frames, seeds, L, L]); all must share the times.
    A folder with holstein-lammps.json reads its dump."""
    from .lammps_deck import INFO_NAME

    runs = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and (p / INFO_NAME).is_file():
            p = p / json.loads((p / INFO_NAME).read_text()).get("dump", "holstein.dump")
        if p.suffix.lower() in OTHER_FORMATS:
            raise ValueError(f"{p}: unknown trajectory type {p.suffix!r}; analyze reads a run folder or "
                             "observables.json, LAMMPS text dumps (any other name) and OpenMM .dcd/.pdb (convert "
                             "it, e.g. with mdtraj, or write a DCDReporter)")
        if p.suffix.lower() in (".dcd", ".pdb"):
            runs.append((p, *read_openmm(p, frame_dt, q_unit_nm)))
        else:
            steps, Q = read_lammps_dump(p)
            runs.append((p, steps * lammps_dt(p, dt), Q))
    t0 = runs[0][1]
    for p, t, Q in runs[1:]:
        if len(t) != len(t0) or not np.allclose(t, t0) or Q.shape[1:] != runs[0][2].shape[1:]:
            raise ValueError(f"{p} has {len(t)} frames of {tuple(Q.shape[1:])} at other times than {runs[0][0]} "
                             f"({len(t0)} frames of {tuple(runs[0][2].shape[1:])}); seeds analysed together need the "
                             "same lattice and output times")
    return t0, torch.stack([r[2] for r in runs], 1)
