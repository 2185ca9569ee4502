"""Shared checks of imported foreign models (MACE, NequIP): the foreign package's own ASE calculator (run in its
side environment) vs our ASE calculator, OpenMM (python backend) and LAMMPS on 1 and 2 ranks, fp64 to 1e-10."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from lammps_util import cuau, lammps_cell, read_dump, run_lmp, write_data
from mlpot_plugins import units
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.importers.side_env import SideEnvError

TOL = 1e-10
HERE = Path(__file__).parent


def registry_reachable(dist: str, version: str) -> bool:
    res = subprocess.run([sys.executable, "-m", "pip", "index", "versions", dist], capture_output=True, text=True,
                         timeout=300)
    return res.returncode == 0 and version in res.stdout


def side_python_or_skip(env, dist: str, version: str):
    """The side env's interpreter (created once in the cache, creation time printed); skip only when the package
    registry is unreachable."""
    t0 = time.perf_counter()
    was_ready = env.is_ready()
    try:
        py = env.python()
    except SideEnvError:
        if not registry_reachable(dist, version):
            pytest.skip(f"the package registry is unreachable: cannot create the {dist} side environment")
        raise
    print(f"\n{env.name} side environment {'reused' if was_ready else 'created'} in {time.perf_counter() - t0:.1f} s")
    return py


def periodic():
    atoms = cuau((2, 2, 2), a=3.7, seed=3, rattle=0.15)
    atoms.set_cell(lammps_cell(7.5, 7.3, 7.4, 88.0, 93.0, 80.0), scale_atoms=True)
    return atoms


def cluster():
    atoms = cuau((2, 2, 2), a=3.7, seed=4, rattle=0.15)[:14]
    atoms.pbc = False
    atoms.cell = None
    return atoms


def foreign_reference(side_python, script: str, model, structures, tmp_path: Path, *flags: str):
    """The foreign package's own ASE calculator on ``structures`` (run by ``script reference`` in its side env)."""
    data = {}
    for k, at in enumerate(structures):
        data.update({f"positions_{k}": at.positions, f"numbers_{k}": at.numbers, f"cell_{k}": at.cell.array,
                     f"pbc_{k}": at.pbc})
    np.savez(tmp_path / "in.npz", **data)
    cmd = [str(side_python), str(HERE / script), "reference", str(model), str(tmp_path / "in.npz"),
           str(tmp_path / "ref.npz"), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    ref = np.load(tmp_path / "ref.npz")
    return [{key: ref[f"{key}_{k}"] for key in ("energy", "energies", "forces", "stress") if f"{key}_{k}" in ref}
            for k in range(len(structures))]


DEFAULT_DTYPES = ["float32", "float64"]


@contextmanager
def default_dtype(name: str):
    """torch's default dtype set to ``name`` inside, restored after (the file's numbers must not depend on it)."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, name))
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def assert_ase_equals(imported, structures, refs, tol=TOL, process_dtype=None):
    """Energy, per-atom energies (with the reference energies), forces and stress of our ASE calculator, run with
    torch's default dtype ``process_dtype`` (None: as it is)."""
    if process_dtype is not None:
        with default_dtype(process_dtype):
            return assert_ase_equals(imported, structures, refs, tol)
    calc = MLPotCalculator(str(imported))
    for atoms, ref in zip(structures, refs):
        atoms.calc = calc
        assert np.abs(ref["forces"]).max() > 0.05  # random weights give real forces
        assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"]), abs=tol)
        np.testing.assert_allclose(calc.results["energies"], ref["energies"], rtol=0, atol=tol)
        np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=0, atol=tol)
        if atoms.pbc.all():
            assert np.abs(ref["stress"]).max() > 1e-4
            np.testing.assert_allclose(atoms.get_stress(), ref["stress"], rtol=0, atol=tol)


def assert_needs_only_torch(imported, foreign_module: str):
    """A fresh interpreter of the main env, where the foreign package is not installed, runs it with torch alone."""
    code = f"""
import importlib.util, sys, torch
assert importlib.util.find_spec({foreign_module!r}) is None, "{foreign_module} must not be in the main env"
m = torch.jit.load({str(imported)!r})
pos = torch.tensor([[0.0, 0.0, 0.0], [2.5, 0.1, 0.0], [0.2, 2.4, 0.3]], dtype=torch.float64)
ei = torch.tensor([[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]])
out = m.compute(pos, torch.tensor([0, 1, 0]), ei, torch.zeros(6, 3, dtype=torch.float64), 3, True, False)
loaded = [k for k in sys.modules if k.split('.')[0] in ("mace", "nequip", "e3nn", "mlpot_plugins")]
assert not loaded, loaded
print(float(out["energy"]))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert np.isfinite(float(res.stdout.split()[-1]))


def assert_openmm_equals_ase(imported):
    from mlpot_plugins.openmm import create_force
    from openmm_systems import context_for, empty_system, energy_forces, topology_of

    for atoms in (periodic(), cluster()):
        system = empty_system(atoms)
        system.addForce(create_force(str(imported), topology_of(atoms), backend="python"))
        e, f = energy_forces(context_for(system, atoms))
        atoms.calc = MLPotCalculator(str(imported))
        e_ref = atoms.get_potential_energy() * units.OPENMM_ENERGY_FROM_MODEL
        f_ref = atoms.get_forces() * units.OPENMM_FORCE_FROM_MODEL
        assert e == pytest.approx(e_ref, abs=TOL * units.OPENMM_ENERGY_FROM_MODEL)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=TOL * units.OPENMM_FORCE_FROM_MODEL)


SNAPSHOT = """units metal
atom_style atomic
boundary p p p
atom_modify map array
plugin load {plugin}
read_data system.data
pair_style mlpot {model}
pair_coeff * * Cu Au
compute pe all pe/atom
dump d all custom 1 dump.atoms id fx fy fz c_pe
dump_modify d format float %.17g
run 0
print "RESULT pe $(pe:%.17g) pxx $(pxx:%.17g) pyy $(pyy:%.17g) pzz $(pzz:%.17g) pyz $(pyz:%.17g) pxz $(pxz:%.17g) pxy $(pxy:%.17g)"
"""
NKTV2P_METAL = 1.6021765e6  # LAMMPS metal units: eV/A^3 -> bar


def assert_lammps_equals_ase(tmp_path, plugin, imported, nprocs):
    """Message passing through LAMMPS ghosts (interaction range = layers x cutoff) on ``nprocs`` ranks."""
    atoms = periodic()
    write_data(tmp_path / "system.data", atoms)
    res = run_lmp(SNAPSHOT.format(plugin=plugin, model=imported), tmp_path, nprocs, timeout=300)
    words = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")][-1].split()[1:]
    r = {k: float(v) for k, v in zip(words[::2], words[1::2])}
    dump = read_dump(tmp_path / "dump.atoms")
    atoms.calc = MLPotCalculator(str(imported))
    assert r["pe"] == pytest.approx(atoms.get_potential_energy(), abs=TOL)
    f = np.stack([dump["fx"], dump["fy"], dump["fz"]], 1)
    np.testing.assert_allclose(f, atoms.get_forces(), rtol=0, atol=TOL)
    np.testing.assert_allclose(dump["c_pe"], atoms.get_potential_energies(), rtol=0, atol=TOL)
    pressure = np.array([r[k] for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")])  # virial only at T = 0
    np.testing.assert_allclose(pressure, -atoms.get_stress() * NKTV2P_METAL, rtol=0, atol=TOL * NKTV2P_METAL)
