"""Shared helpers of the LAMMPS tests: systems in LAMMPS' cell convention, decks, runs of the real lmp."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

VENV_BIN = Path(sys.executable).parent
MASSES = {"Cu": 63.546, "Au": 196.96657}


def mass(element: str) -> float:
    """Atomic mass (amu) for a data file: the table above, else ASE's standard atomic weight."""
    from ase.data import atomic_masses, atomic_numbers

    return MASSES.get(element, float(atomic_masses[atomic_numbers[element]]))


def lammps_cell(a, b, c, alpha=90.0, beta=90.0, gamma=90.0) -> np.ndarray:
    """Cell rows in LAMMPS' prism form: a along x, b in the xy plane (so no rotation is needed)."""
    from ase.geometry import cellpar_to_cell

    cell = cellpar_to_cell([a, b, c, alpha, beta, gamma])
    q, r = np.linalg.qr(cell.T)
    cell = (r * np.sign(np.diag(r))[:, None]).T
    cell[np.abs(cell) < 1e-12] = 0.0
    return cell


def cuau(n=(2, 2, 2), a=3.7, seed=0, rattle=0.12, gold_every=3) -> Atoms:
    """A rattled fcc Cu/Au alloy (cubic cell, n repeats)."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(n)
    symbols = atoms.get_chemical_symbols()
    for i in range(0, len(atoms), gold_every):
        symbols[i] = "Au"
    atoms.set_chemical_symbols(symbols)
    atoms.rattle(rattle, seed=seed)
    return atoms


def write_data(path: Path, atoms: Atoms, elements=("Cu", "Au")) -> None:
    """LAMMPS atomic data file; the cell must already be in prism form (lammps_cell)."""
    cell = atoms.cell.array
    assert abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) < 1e-12, "cell not in LAMMPS form"
    lines = ["mlpot test system", "", f"{len(atoms)} atoms", f"{len(elements)} atom types", "",
             f"0 {cell[0, 0]:.17g} xlo xhi", f"0 {cell[1, 1]:.17g} ylo yhi", f"0 {cell[2, 2]:.17g} zlo zhi",
             f"{cell[1, 0]:.17g} {cell[2, 0]:.17g} {cell[2, 1]:.17g} xy xz yz", "", "Masses", ""]
    lines += [f"{t + 1} {mass(e)}" for t, e in enumerate(elements)]
    lines += ["", "Atoms # atomic", ""]
    for i, (s, x) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions)):
        lines.append(f"{i + 1} {elements.index(s) + 1} {x[0]:.17g} {x[1]:.17g} {x[2]:.17g}")
    Path(path).write_text("\n".join(lines) + "\n")


def run_lmp(deck: str, cwd: Path, nprocs: int = 1, timeout: float = 120, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a deck with the venv's real `lmp` (under `mpiexec -n nprocs` if nprocs > 1)."""
    (cwd / "in.deck").write_text(deck)
    cmd = [str(VENV_BIN / "lmp"), "-in", "in.deck", "-log", "log.lammps"]
    if nprocs > 1:
        cmd = [str(VENV_BIN / "mpiexec"), "-n", str(nprocs)] + cmd
    full_env = dict(os.environ, OMP_NUM_THREADS="1")
    full_env.update(env or {})
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=timeout,
                         env=full_env)  # LAMMPS may echo non-UTF-8 bytes of a rewritten input line
    if check and res.returncode != 0:
        raise AssertionError(f"lmp failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def results(stdout: str) -> dict:
    """Values of the deck's `print "RESULT key value ..."` lines (later lines add to and override earlier ones)."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            words = line.split()[1:]
            out.update({k: float(v) for k, v in zip(words[::2], words[1::2])})
    return out


def read_dump(path: Path) -> dict:
    """Last frame of a `dump custom` text file sorted by id: {column: array}."""
    lines = Path(path).read_text().splitlines()
    start = max(i for i, l in enumerate(lines) if l.startswith("ITEM: ATOMS"))
    cols = lines[start].split()[2:]
    data = np.array([[float(v) for v in l.split()] for l in lines[start + 1:]])
    data = data[np.argsort(data[:, cols.index("id")])]
    return {c: data[:, k] for k, c in enumerate(cols)}


def lammps_eval(lmp_factory, atoms: Atoms, model: str, boundary="p p p", units="metal",
                elements=("Cu", "Au"), extra=(), workdir: Path | None = None) -> dict:
    """Energy, forces, per-atom energies, pair virial and per-atom virial from an in-process LAMMPS."""
    import tempfile

    tmp = Path(workdir or tempfile.mkdtemp())
    write_data(tmp / "system.data", atoms, elements)
    lmp = lmp_factory()
    try:
        for cmd in [f"units {units}", "atom_style atomic", f"boundary {boundary}", "atom_modify map array",
                    f"read_data {tmp / 'system.data'}", f"pair_style mlpot {model}",
                    f"pair_coeff * * {' '.join(elements)}", *extra,
                    "compute pe all pe/atom", "compute sv all stress/atom NULL virial",
                    "compute pv all pressure NULL virial", "thermo_style custom step pe c_pv[*]",
                    "run 0"]:
            lmp.command(cmd)
        n = lmp.get_natoms()
        ids = np.ctypeslib.as_array(lmp.gather_atoms("id", 0, 1)).copy()
        order = np.argsort(ids)
        f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)[order]
        pe_atom = np.array(lmp.numpy.extract_compute("pe", 1, 1))[:n]  # local: single rank here
        sv = np.array(lmp.numpy.extract_compute("sv", 1, 2))[:n]
        lids = np.array(lmp.numpy.extract_atom("id"))[:n]
        lorder = np.argsort(lids)
        out = {"energy": lmp.get_thermo("pe"), "forces": f, "energies": pe_atom[lorder],
               "stress_atom": sv[lorder], "pressure": np.array(lmp.numpy.extract_compute("pv", 0, 1)[:6]),
               "volume": lmp.get_thermo("vol"), "nktv2p": lmp.extract_global("nktv2p")}
        return out
    finally:
        lmp.close()


@__import__("pytest").fixture(scope="session")
def plugin() -> Path:
    """The compiled plugin (built once into the cache, reused by every later session)."""
    from mlpot_plugins.lammps import build_plugin

    return build_plugin()


@__import__("pytest").fixture
def lmp_factory(plugin):
    from mlpot_plugins.lammps import lammps_instance

    return lambda: lammps_instance()


def entry_point_env(tmp_path: Path) -> dict:
    """Environment whose Python sees a distribution declaring pyproject.toml's `lammps.plugins` entry
    point, as after `pip install`, so the wheel's `lmp` auto-loads the plugin (no `plugin load`)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]["lammps.plugins"]
    dist = tmp_path / "site" / "mlpot_entry_point_probe-0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlpot-entry-point-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[lammps.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    pythonpath = os.pathsep.join([str(dist.parent), str(root), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": pythonpath, "LAMMPS_PLUGIN_PATH": ""}


def lattice_sites(Q: np.ndarray, a: float = 1.0) -> np.ndarray:
    """[L*L, 3] positions of a lattice deck (issue 13 conventions): site (i, j) = atom i*L + j + 1 at
    x = i*a, y = j*a, z = Q[i, j]."""
    L = Q.shape[-1]
    i, j = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    return np.column_stack([(i * a).ravel(), (j * a).ravel(), np.asarray(Q, dtype=float).ravel()])


def write_lattice_data(path: Path, xyz: np.ndarray, box, mass: float = 5.0, vz: np.ndarray | None = None) -> None:
    """`units lj` atomic data file of lattice sites (one atom type, ids in row order), box = (Lx, Ly, zhalf):
    x in [0, Lx), y in [0, Ly), z in [-zhalf, zhalf]; vz optional z velocities (x, y velocities 0)."""
    lx, ly, zh = box
    lines = ["mlpot lattice test", "", f"{len(xyz)} atoms", "1 atom types", "", f"0 {lx!r} xlo xhi",
             f"0 {ly!r} ylo yhi", f"{-zh!r} {zh!r} zlo zhi", "", "Masses", "", f"1 {mass!r}", "", "Atoms # atomic", ""]
    lines += [f"{k + 1} 1 {x!r} {y!r} {z!r}" for k, (x, y, z) in enumerate(np.asarray(xyz, dtype=float).tolist())]
    if vz is not None:
        lines += ["", "Velocities", ""] + [f"{k + 1} 0 0 {v!r}" for k, v in enumerate(np.asarray(vz, float).ravel().tolist())]
    Path(path).write_text("\n".join(lines) + "\n")
