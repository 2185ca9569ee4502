"""Deterministic molecular reference datasets labelled by GFN2-xTB through tblite (``mlpot data xtb``).

Every frame is a function of (system, set, seed, frames, temperature) only: seeded Langevin MD driven by
xTB (0.5 fs steps, friction 0.02/fs, 100 warm-up steps, one frame every 10 steps), each stored frame
labelled by a fresh, tightly converged xTB calculation (SAD guess, accuracy 0.01) on its positions as
written (8 decimals), with OpenMP pinned to one thread (bit-for-bit reproducible, and the fastest for
molecules this small). Systems: ``ala2`` (alanine
dipeptide, Ace-Ala-Nme, 22 atoms, started from the C7eq minimum) and small closed-shell H/C/N/O molecules
(``MOLECULES``, from ``ase.build.molecule``), or any molecule read from an .xyz/.extxyz/.pdb file. Sets:

* ``train`` / ``val`` / ``test``: trajectories at 300, 400, 500 and 600 K (independent random streams per
  set, so the same seed gives three different sets).
* ``ood``: 1000 K; for ala2 started from φ/ψ = +80°/−60° (C7ax side, φ > 0), a region the 300–600 K runs
  from C7eq never reach.

Energies in eV, forces in eV/Å. ``info`` per frame: config_type ("md<T>K"), system, set, seed,
temperature (K), traj, md_step, frame, source ("GFN2-xTB via tblite <version>"), xtb_accuracy and, for ala2, phi/psi (degrees).
"""
from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from ase import Atoms, units

from .cli_types import bounded_float, bounded_int
from .refdata import label, langevin_frames, round_to_written, write  # noqa: F401  (write: used by the CLI)
from .runsafe import RunError, check_finite

SETS = ("train", "val", "test", "ood")
TEMPERATURES = (300.0, 400.0, 500.0, 600.0)
OOD_TEMPERATURE = 1000.0
DEFAULT_FRAMES = {"train": 200, "val": 50, "test": 50, "ood": 50}
TIMESTEP_FS, FRICTION_PER_FS, EVERY, WARMUP = 0.5, 0.02, 10, 100
LABEL_ACCURACY = 0.01  # tblite accuracy of the stored labels (SCF 100x tighter than the default 1.0 used for
# the MD steps: force error ~3e-5 instead of ~2e-4 eV/Å against a converged finite difference)
BOND_FACTOR = 1.5  # fragments: ala2 at 1000 K stretches to 1.19 x the covalent radii, at 6000 K it breaks
MIN_DISTANCE = 0.5  # Å: closer atoms make xTB return garbage (1e3 eV) or refuse

# closed-shell molecules of ase.build.molecule (name -> G2 formula)
MOLECULES: Dict[str, str] = {"water": "H2O", "methane": "CH4", "ammonia": "NH3", "methanol": "CH3OH",
                             "methylamine": "H3CNH2", "formic-acid": "HCOOH", "ethanol": "CH3CH2OH",
                             "acetic-acid": "CH3COOH", "acetamide": "CH3CONH2"}
SYSTEMS = ("ala2",) + tuple(MOLECULES)

# Ace-Ala-Nme (L-alanine), GFN2-xTB minimum near C7eq (phi -81 deg, psi 74 deg), built from standard internal
# coordinates and relaxed with tblite 0.8.0 (BFGS, fmax 0.005 eV/Å). Amber atom order: ACE H1 CH3 H2 H3 C O,
# ALA N H CA HA CB HB1 HB2 HB3 C O, NME N H CH3 HH31 HH32 HH33.
ALA2 = (
    ("H", -3.44386, -0.07082, -1.56661), ("C", -3.05767, -0.65262, -0.73280),
    ("H", -3.44715, -1.66460, -0.78879), ("H", -3.38687, -0.19320, 0.19693),
    ("C", -1.54762, -0.69631, -0.77960), ("O", -0.90633, -1.73102, -0.84058),
    ("N", -0.95928, 0.51597, -0.75614), ("H", -1.51467, 1.34353, -0.60723),
    ("C", 0.48296, 0.69899, -0.81109), ("H", 0.87966, -0.07876, -1.47429),
    ("C", 0.81271, 2.08543, -1.33794), ("H", 0.49412, 2.83714, -0.61932),
    ("H", 1.88682, 2.18084, -1.46681), ("H", 0.32327, 2.25927, -2.29330),
    ("C", 1.07696, 0.48825, 0.60102), ("O", 1.45972, 1.40548, 1.29736),
    ("N", 1.10417, -0.80573, 0.95701), ("H", 0.66762, -1.48685, 0.34404),
    ("C", 1.54221, -1.24338, 2.25962), ("H", 0.71268, -1.67524, 2.82343),
    ("H", 2.33130, -1.99015, 2.16100), ("H", 1.92750, -0.37482, 2.79164),
)
ALA2_BONDS = ((0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6), (6, 7), (6, 8), (8, 9), (8, 10), (10, 11),
              (10, 12), (10, 13), (8, 14), (14, 15), (14, 16), (16, 17), (16, 18), (18, 19), (18, 20), (18, 21))
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)  # C(ACE)-N-CA-C, N-CA-C-N(NME)
OOD_PHI_PSI = (80.0, -60.0)  # C7ax side; a rigid rotation to (60, -60) puts O(ACE) 1.4 Å from H(NME)


class XtbError(RunError):
    """xTB could not label a geometry (the message names the frame and the fix)."""


def tblite_version() -> str:
    from importlib.metadata import version

    return version("tblite")


def ala2() -> Atoms:
    return Atoms([a[0] for a in ALA2], positions=[a[1:] for a in ALA2])


def phi_psi(atoms: Atoms):
    """Backbone dihedrals of alanine dipeptide in degrees, in (-180, 180]."""
    return tuple(float((atoms.get_dihedral(*ix) + 180.0) % 360.0 - 180.0) for ix in (PHI, PSI))


def _rotate_backbone(atoms: Atoms, phi: float, psi: float) -> Atoms:
    """Set φ (rotating the CA side about N-CA) and ψ (the NME side about CA-C)."""
    atoms = atoms.copy()
    ca_side = [i for i in range(len(atoms)) if i >= 8]
    atoms.set_dihedral(*PHI, phi, mask=[i in ca_side and i != 8 for i in range(len(atoms))])
    atoms.set_dihedral(*PSI, psi, mask=[i >= 15 for i in range(len(atoms))])
    return atoms


def _is_file(system: str) -> bool:
    return system not in SYSTEMS and (Path(system).suffix.lower() in (".xyz", ".extxyz", ".pdb")
                                      or Path(system).exists())


def start_structure(system: str, which: str) -> Atoms:
    """The MD start: ala2, a named molecule, or the first structure of a file (an isolated molecule)."""
    if system == "ala2":
        atoms = ala2()
        return _rotate_backbone(atoms, *OOD_PHI_PSI) if which == "ood" else atoms
    if system in MOLECULES:
        from ase.build import molecule

        return molecule(MOLECULES[system])
    import ase.io

    path = Path(system)
    if not path.is_file():
        raise ValueError(f"structure file {path} does not exist; give an existing .xyz/.extxyz/.pdb file or "
                         f"one of {list(SYSTEMS)}")
    try:
        atoms = ase.io.read(path, index=0)
    except Exception as exc:  # ase.io raises many types for unreadable files
        raise ValueError(f"cannot read a structure from {path} ({type(exc).__name__}: {exc}); give an "
                         "xyz/extxyz/pdb file with one molecule") from None
    if atoms.pbc.any():
        raise ValueError(f"{path} is periodic (pbc={atoms.pbc.tolist()}); mlpot data xtb labels isolated "
                         "molecules: write the file with pbc=F and no cell")
    atoms.calc = None
    atoms.info = {}
    return Atoms(atoms.numbers, positions=atoms.positions)


def check_geometry(atoms: Atoms, what: str, fix: str = "fix the structure") -> None:
    """``XtbError`` if two atoms are closer than ``MIN_DISTANCE``."""
    if len(atoms) < 2:
        return
    d = atoms.get_all_distances()
    d[np.diag_indices_from(d)] = np.inf
    i, j = np.unravel_index(np.argmin(d), d.shape)
    if d[i, j] < MIN_DISTANCE:
        raise XtbError(f"{what}: atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) are {d[i, j]:.3f} Å "
                       f"apart (< {MIN_DISTANCE} Å), a broken geometry xTB cannot describe; {fix}")


def fragments(atoms: Atoms) -> int:
    """Number of connected pieces, atoms joined when closer than ``BOND_FACTOR`` x their covalent radii."""
    from ase.data import covalent_radii
    from scipy.sparse.csgraph import connected_components

    r = covalent_radii[atoms.numbers]
    return int(connected_components(atoms.get_all_distances() < BOND_FACTOR * (r[:, None] + r[None, :]),
                                    directed=False)[0])


def check_intact(atoms: Atoms, start_fragments: int, what: str) -> None:
    """``XtbError`` if the MD broke the molecule into more pieces than it started with."""
    n = fragments(atoms)
    if n > start_fragments:
        raise XtbError(f"{what}: the molecule came apart ({n} fragments, started as {start_fragments}; no atom "
                       f"within {BOND_FACTOR} x the covalent radii of the rest), not the molecule the set "
                       "promises; lower --temperature")


@contextlib.contextmanager
def one_omp_thread():
    """Pin every loaded libgomp to one thread (restored on exit): tblite's OpenMP on 22 atoms is 20x slower
    on a loaded 2-core machine with more threads, and one thread makes the sums reproducible bit for bit."""
    libs = []
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({ln.split()[-1] for ln in fh if "libgomp" in ln and ln.split()[-1].startswith("/")})
    except OSError:
        paths = []
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
            libs.append((lib, lib.omp_get_max_threads()))
            lib.omp_set_num_threads(1)
        except (OSError, AttributeError):
            pass
    try:
        yield
    finally:
        for lib, n in libs:
            lib.omp_set_num_threads(n)


def calculator(accuracy: float = 1.0):
    """tblite's GFN2-xTB ASE calculator, silent (``accuracy=LABEL_ACCURACY`` for labels)."""
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise RunError(f"mlpot data xtb needs tblite ({exc}); install it: pip install tblite") from None
    return TBLite(method="GFN2-xTB", verbosity=0, accuracy=accuracy)


def _xtb_guard(what: str, fn, fix: str = "lower --temperature (the MD tore the molecule apart)"):
    from ase.calculators.calculator import CalculationFailed, InputError

    try:
        return fn()
    except (CalculationFailed, InputError) as exc:
        raise XtbError(f"GFN2-xTB failed on {what}: {str(exc).rstrip('.')}; {fix}") from None


def generate(system: str = "ala2", which: str = "train", seed: int = 0, frames: Optional[int] = None,
             temperature: Optional[float] = None, progress: bool = False) -> List[Atoms]:
    """Labelled frames of one set; identical for identical arguments."""
    if system not in SYSTEMS and not _is_file(system):
        raise ValueError(f"unknown xTB system {system!r}; choose one of {list(SYSTEMS)} or give an "
                         ".xyz/.extxyz/.pdb file of one molecule")
    if which not in SETS:
        raise ValueError(f"unknown xTB set {which!r}; choose one of {list(SETS)}")
    seed = bounded_int(seed, "seed", 0)
    frames = DEFAULT_FRAMES[which] if frames is None else bounded_int(frames, "frames", 1)
    if temperature is not None:
        temps = (bounded_float(temperature, "temperature", 0.0, True),)
    else:
        temps = (OOD_TEMPERATURE,) if which == "ood" else TEMPERATURES
    counts = [frames // len(temps) + (k < frames % len(temps)) for k in range(len(temps))]
    start = start_structure(system, which)
    check_geometry(start, f"the {system} start structure")
    start_fragments = fragments(start)
    calculator()  # tblite (and its OpenMP runtime) loaded before one_omp_thread pins it
    rng = np.random.default_rng([seed, SETS.index(which)])
    source = f"GFN2-xTB via tblite {tblite_version()}"
    from tqdm import tqdm

    out: List[Atoms] = []
    bar = tqdm(total=sum(WARMUP + n * EVERY for n in counts if n), desc=f"xTB MD {system} {which}", unit="step",
               disable=not progress)
    with one_omp_thread(), bar:
        _xtb_guard(f"the {system} start structure", lambda: label(start, calculator()),
                   "fix the structure (overlapping or far-apart atoms; GFN2-xTB covers elements H to Rn)")
        for traj, (t, n) in enumerate(zip(temps, counts)):
            if not n:
                continue

            def label_frame(atoms, step, t=t, traj=traj):
                what = f"{system} {which} frame {len(out)} (trajectory {traj}, {t:g} K, MD step {step})"
                atoms = round_to_written(atoms.copy())
                check_geometry(atoms, what, "lower --temperature")
                check_intact(atoms, start_fragments, what)
                info = dict(config_type=f"md{t:g}K", system=system, set=which, seed=seed, temperature=t,
                            traj=traj, md_step=step, frame=len(out), source=source,
                            xtb_accuracy=LABEL_ACCURACY)
                if system == "ala2":
                    info["phi"], info["psi"] = phi_psi(atoms)
                frame = _xtb_guard(what, lambda: label(atoms, calculator(LABEL_ACCURACY), **info))
                check_finite(frame.get_potential_energy(), f"xTB energy of {what}", "lower --temperature")
                out.append(frame)
                return frame

            _xtb_guard(f"{system} {which} MD at {t:g} K", lambda: langevin_frames(
                start, calculator(), t, n, EVERY, rng, label_frame, timestep_fs=TIMESTEP_FS,
                friction=FRICTION_PER_FS / units.fs, warmup=WARMUP, molecule=True, on_steps=bar.update))
    return out
