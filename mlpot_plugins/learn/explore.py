"""Exploration: dynamics driven by the current committee, with the per-atom force std of every checked frame.

``explore(model_path, starts, settings, seed)`` runs ``walkers`` Langevin trajectories of ``steps`` steps
(walker w starts from structure ``w mod len(starts)`` at temperature ``temperatures[w mod len]``, optionally
repeated, strained and rattled) in the configured engine and returns one candidate per ``check_every``
steps: the frame (positions as extxyz writes them) with its per-atom calibrated force std in
``arrays["forces_std"]`` and ``info`` = walker, step, check (index in the walker), temperature, sigma_max. A walker whose max std exceeds
``max_sigma``, or with two atoms closer than ``min_distance`` (Å), stops there (its later frames would be
unphysical; the frame is not a candidate). With ``stop_after`` = N > 0 a walker also ends, normally, once N of
its checked frames are over ``threshold`` (the selection's): the rest of its run would only add candidates the
iteration has no labels for, so early iterations of an uncertain model spend little time in MD.

Engines, each through its own adapter and its own uncertainty output:
* ``ase``: ``MLPotCalculator`` + ASE Langevin (``forces_std`` property);
* ``lammps``: ``pair_style mlpot`` + ``fix langevin`` in the LAMMPS Python module, per-atom std from
  ``compute mlpot/atom`` (periodic cells, ``units metal``);
* ``openmm``: ``create_force`` + ``LangevinMiddleIntegrator``, per-atom std from ``UncertaintyReporter``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
from ase import Atoms

from ..refdata import round_to_written
from ..runsafe import check_finite


class LeftDomain(Exception):
    """Internal: a walker crossed ``max_sigma``."""


class Enough(Exception):
    """Internal: a walker found ``stop_after`` frames over the threshold."""


@dataclass
class Exploration:
    candidates: List[Atoms] = field(default_factory=list)
    steps: int = 0  # MD steps run, all walkers
    max_sigma: float = 0.0
    aborted_walkers: int = 0
    stopped_early: int = 0  # walkers that ended at explore.stop_after frames over the threshold


def prepare_start(atoms: Atoms, settings: Dict, rng: np.random.Generator) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = None
    if settings["supercell"] > 1 and atoms.pbc.all():
        atoms = atoms.repeat(int(settings["supercell"]))
    if settings["strain"] > 0 and atoms.pbc.all():
        eps = rng.uniform(-settings["strain"], settings["strain"], (3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    if settings["rattle"] > 0:
        atoms.positions += rng.normal(0.0, settings["rattle"], atoms.positions.shape)
    return atoms


def candidate(atoms: Atoms, sigma: np.ndarray, walker: int, step: int, temperature: float) -> Atoms:
    frame = round_to_written(atoms.copy())
    frame.calc = None
    frame.set_constraint()
    frame.arrays["forces_std"] = np.asarray(sigma, dtype=np.float64).copy()
    frame.info.update(walker=int(walker), step=int(step), temperature=float(temperature),
                      sigma_max=float(np.max(sigma)))
    return frame


def min_pair_distance(atoms: Atoms) -> float:
    if len(atoms) < 2:
        return np.inf
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    return float(d[np.triu_indices(len(atoms), 1)].min())


def explore(model_path, starts: List[Atoms], settings: Dict, seed: int, max_sigma: float = 0.0,
            on_steps: Optional[Callable[[int], None]] = None, threshold: float = 0.0) -> Exploration:
    run_walker = {"ase": _ase_walker, "lammps": _lammps_walker, "openmm": _openmm_walker}[settings["engine"]]
    rng = np.random.default_rng(seed)
    result = Exploration()
    cache: Dict = {}  # the engine's loaded model, shared by the walkers (one TorchScript warm-up)
    temps = settings["temperatures"]
    min_distance = float(settings.get("min_distance", 0.0))
    stop_after = int(settings.get("stop_after", 0))
    for w in range(int(settings["walkers"])):
        start = prepare_start(starts[w % len(starts)], settings, rng)
        t = float(temps[w % len(temps)])
        frames: List[Atoms] = []

        def record(atoms: Atoms, sigma: np.ndarray, step: int) -> None:
            if min_distance and min_pair_distance(atoms) < min_distance:
                raise LeftDomain  # collapsed atoms: the walker left physics, not just the model's domain
            s_max = check_finite(np.max(sigma), f"the committee force std in walker {w} at step {step}",
                                 "the exploration blew up: lower explore.temperatures or explore.timestep_fs")
            frames.append(candidate(atoms, sigma, w, step, t))
            frames[-1].info["check"] = len(frames) - 1
            result.max_sigma = max(result.max_sigma, s_max)
            if max_sigma and s_max > max_sigma:
                raise LeftDomain
            if stop_after and sum(f.info["sigma_max"] > threshold for f in frames) >= stop_after:
                raise Enough

        try:
            run_walker(model_path, start, t, settings, rng, record, on_steps, cache)
        except LeftDomain:
            result.aborted_walkers += 1
        except Enough:
            result.stopped_early += 1
        result.candidates += frames
        result.steps += int(frames[-1].info["step"]) if frames else 0
    return result


def _ase_walker(model_path, atoms, temperature, settings, rng, record, on_steps, cache) -> None:
    from ..ase import MLPotCalculator
    from ..refdata import langevin_frames

    calc = cache.get("ase") or cache.setdefault("ase", MLPotCalculator(str(model_path)))
    calc.reset()
    every = int(settings["check_every"])

    def check(snapshot: Atoms, step: int) -> Atoms:
        snapshot.calc = calc  # same geometry as the driving step: the committee result is reused
        record(snapshot, calc.get_property("forces_std", snapshot), step)
        return snapshot

    langevin_frames(atoms, calc, temperature, int(settings["steps"]) // every, every, rng, check,
                    timestep_fs=float(settings["timestep_fs"]), friction=float(settings["friction"]), warmup=0,
                    molecule=not atoms.pbc.any(), on_steps=on_steps)


def _lammps_walker(model_path, atoms, temperature, settings, rng, record, on_steps, cache) -> None:
    from .engines import lammps_walker

    lammps_walker(model_path, atoms, temperature, settings, rng, record, on_steps, cache)


def _openmm_walker(model_path, atoms, temperature, settings, rng, record, on_steps, cache) -> None:
    from .engines import openmm_walker

    openmm_walker(model_path, atoms, temperature, settings, rng, record, on_steps, cache)
