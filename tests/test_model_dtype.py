"""Run a float64 model in float32 (issue 12, speed): `mlpot export MODEL --dtype float32`, dtype chosen at load in
ASE, OpenMM and LAMMPS; float32 forces stay close to float64, to EMT and equivariant. The process settings of
mlpot_plugins.engine_setup (allocator, threads) leave every output bit-identical."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from scipy.spatial.transform import Rotation

from lammps_util import plugin, read_dump, run_lmp, write_data  # noqa: F401
from mlpot_plugins import load, pretrained_path
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.cli import main as mlpot

CU_EMT = str(pretrained_path("cu-emt"))


def rattled(repeat=2, seed=0, a=3.61, sigma=0.08):
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
    atoms.positions += np.random.default_rng(seed).normal(0, sigma, atoms.positions.shape)
    return atoms


def forces(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_forces(), atoms.get_potential_energy()


@pytest.fixture(scope="module")
def calcs():
    return MLPotCalculator(CU_EMT), MLPotCalculator(CU_EMT, dtype="float32")


def test_float32_at_load_close_to_float64_and_to_emt(calcs):
    c64, c32 = calcs
    assert c64.model.dtype.itemsize == 8 and c32.model.dtype.itemsize == 4
    assert c32.model.metadata["dtype"] == "float32"
    err = {64: [], 32: []}
    for seed in range(3):  # held-out: rattled cells the model was not trained on, EMT labels
        atoms = rattled(seed=100 + seed)
        f_ref, _ = forces(atoms, EMT())
        f64, e64 = forces(atoms, c64)
        f32, e32 = forces(atoms, c32)
        assert np.abs(f32 - f64).max() < 1e-4 * np.abs(f64).max()
        assert abs(e32 - e64) < 1e-5 * abs(e64)
        err[64].append(f64 - f_ref)
        err[32].append(f32 - f_ref)
    rmse = {k: np.sqrt(np.mean(np.square(v))) for k, v in err.items()}
    assert rmse[64] > 0 and abs(rmse[32] - rmse[64]) <= 0.1 * rmse[64], rmse


def test_float32_is_equivariant(calcs):
    _, c32 = calcs
    atoms = rattled(seed=7)
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    f, e = forces(atoms, c32)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    turned.positions = atoms.positions @ rot.T
    f_rot, e_rot = forces(turned, c32)
    assert np.abs(f_rot - f @ rot.T).max() < 2e-5 * np.abs(f).max()
    assert abs(e_rot - e) < 1e-5 * abs(e)


def test_export_model_file_as_float32(tmp_path, calcs):
    out = tmp_path / "cu32.pt"
    assert mlpot(["export", "cu-emt", "--dtype", "float32", "-o", str(out)]) == 0
    m = load(out)
    assert m.metadata["dtype"] == "float32" and m.module.embedding.dtype.itemsize == 4
    atoms = rattled(seed=3)
    f_file, e_file = forces(atoms, MLPotCalculator(m))
    f_load, e_load = forces(atoms, calcs[1])
    # the same float32 weights (float32 sums may differ in the last bits between TorchScript specialisations)
    np.testing.assert_allclose(f_file, f_load, rtol=0, atol=1e-5 * np.abs(f_load).max())
    assert e_file == pytest.approx(e_load, rel=1e-6)
    # and back: a float64 copy of the float32 file gives float64 numbers of the float32 weights
    assert load(out, dtype="float64").metadata["dtype"] == "float64"


def test_openmm_float32_choice():
    from mlpot_plugins import units
    from mlpot_plugins.openmm import create_force
    from openmm_systems import context_for, empty_system, energy_forces, topology_of

    atoms = rattled(seed=5)
    f32, e32 = forces(atoms, MLPotCalculator(CU_EMT, dtype="float32"))
    system = empty_system(atoms)
    system.addForce(create_force(CU_EMT, topology_of(atoms), dtype="float32", threads=1))
    e, f = energy_forces(context_for(system, atoms.positions))
    assert e == pytest.approx(e32 * units.OPENMM_ENERGY_FROM_MODEL, rel=1e-5)
    np.testing.assert_allclose(f, f32 * units.OPENMM_FORCE_FROM_MODEL, rtol=0,
                               atol=1e-4 * np.abs(f32).max() * units.OPENMM_FORCE_FROM_MODEL)


def test_lammps_dtype_option(plugin, tmp_path):
    atoms = rattled(seed=9)
    write_data(tmp_path / "system.data", atoms, ("Cu",))
    dumps = {}
    for dtype in ("float64", "float32"):
        deck = (f"units metal\natom_style atomic\nboundary p p p\nread_data system.data\n"
                f"pair_style mlpot {CU_EMT} dtype {dtype} threads 1\npair_coeff * * Cu\n"
                f"dump d all custom 1 {dtype}.dump id fx fy fz\ndump_modify d format float %.17g\nrun 0\n")
        run_lmp(deck, tmp_path)
        dumps[dtype] = np.stack([read_dump(tmp_path / f"{dtype}.dump")[c] for c in ("fx", "fy", "fz")], 1)
    f64, _ = forces(atoms, MLPotCalculator(CU_EMT))
    f32, _ = forces(atoms, MLPotCalculator(CU_EMT, dtype="float32"))
    scale = np.abs(f64).max()
    np.testing.assert_allclose(dumps["float64"], f64, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(dumps["float32"], f32, rtol=0, atol=1e-5 * scale)
    assert np.abs(dumps["float32"] - f64).max() > 1e-9 * scale  # it really ran in float32


PROBE = """
import ctypes, json, sys, numpy as np, torch
from ase.build import bulk
from mlpot_plugins.ase import MLPotCalculator
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
atoms.positions += np.random.default_rng(1).normal(0, 0.08, atoms.positions.shape)
atoms.calc = MLPotCalculator(sys.argv[1])
f = atoms.get_forces()
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
big = torch.ones(40_000_000, dtype=torch.float64)  # 320 MB: above any mmap threshold
mmapped = libc.mallinfo2().hblkhd - before
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
del big
kept = rss()
from mlpot_plugins.engine_setup import release_memory
released = release_memory()
print(json.dumps({"forces": f.tolist(), "mmapped": mmapped, "threads": torch.get_num_threads(),
                  "kept": kept, "after_release": rss(), "released": released}))
"""


def probe(env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "MLPOT_", "OMP_NUM"))}
    res = subprocess.run([sys.executable, "-c", PROBE, CU_EMT], capture_output=True, text=True, timeout=300,
                         env=dict(full, **env))
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_engine_setup_tunes_malloc_and_threads_without_changing_outputs():
    tuned = probe({})
    system = probe({"MLPOT_MALLOC": "system", "MLPOT_THREADS": "2"})
    assert tuned["mmapped"] == 0 and system["mmapped"] >= 320_000_000  # big tensors stay in the heap
    assert tuned["threads"] == 1 and system["threads"] == 2
    assert tuned["forces"] == system["forces"]  # bit for bit
    # the tuned heap keeps the freed 320 MB until release_memory() gives it back
    assert tuned["kept"] - tuned["after_release"] > 250_000_000 and tuned["released"]
