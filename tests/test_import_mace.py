"""`mlpot import mace`: a tiny randomly initialised MACE model (built in the side environment, no download)
imported into one TorchScript file, then checked against MACE's own ASE calculator (run in the side env) and
through our ASE calculator, OpenMM (python backend) and LAMMPS on 1 and 2 ranks, all in fp64 to 1e-10."""
import subprocess

import pytest

from import_checks import (DEFAULT_DTYPES, HERE, assert_ase_equals, assert_lammps_equals_ase,
                           assert_needs_only_torch, assert_openmm_equals_ase, cluster, foreign_reference, periodic,
                           side_python_or_skip)
from lammps_util import plugin  # noqa: F401
from mlpot_plugins.importers import mace as mace_import
from mlpot_plugins.model_file import load


@pytest.fixture(scope="session")
def mace_python():
    return side_python_or_skip(mace_import.side_env(), "mace-torch", mace_import.MACE_VERSION)


@pytest.fixture(scope="session")
def mace_model(mace_python, tmp_path_factory):
    path = tmp_path_factory.mktemp("mace") / "tiny.model"
    subprocess.run([str(mace_python), str(HERE / "mace_side.py"), "build", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def imported(mace_model):
    """The fp64 import, through the command line."""
    from mlpot_plugins.cli import main

    out = mace_model.with_name("tiny-imported.pt")
    assert main(["import", "mace", str(mace_model), "-o", str(out)]) == 0
    return out


def test_metadata_comes_from_the_mace_model(imported):
    meta = load(imported).metadata
    assert meta["species"] == ["Cu", "Au"]  # the model's atomic numbers [29, 79], in type order
    assert meta["cutoff"] == 4.5 and meta["interaction_range"] == 9.0  # r_max, 2 interactions x r_max
    assert (meta["dtype"], meta["length_unit"], meta["energy_unit"]) == ("float64", "angstrom", "eV")
    assert meta["extra"]["source"] == "mace" and meta["extra"]["num_interactions"] == 2


@pytest.mark.parametrize("process_dtype", DEFAULT_DTYPES)
def test_ase_equals_mace_calculator(mace_python, mace_model, imported, tmp_path, process_dtype):
    """Per-atom energies include MACE's E0s, as MACE's calculator's "energies"; periodic cell + cluster. The same
    to 1e-10 whatever torch's default dtype in the running process (MACE's ZBL multiplies integer atomic numbers
    by a float, which torch does in the default dtype: the importer casts them to the model's dtype)."""
    structures = [periodic(), cluster()]
    refs = foreign_reference(mace_python, "mace_side.py", mace_model, structures, tmp_path)
    assert_ase_equals(imported, structures, refs, process_dtype=process_dtype)


def test_file_needs_nothing_but_torch(imported):
    assert_needs_only_torch(imported, "mace")


def test_openmm_python_backend_equals_ase(imported):
    assert_openmm_equals_ase(imported)


@pytest.mark.parametrize("nprocs", [1, 2])
def test_lammps_equals_ase(tmp_path, plugin, imported, nprocs):
    assert_lammps_equals_ase(tmp_path, plugin, imported, nprocs)


def test_float32_import_is_close_to_mace_float32(mace_python, mace_model, tmp_path):
    out = mace_import.import_mace(mace_model, tmp_path / "tiny32.pt", dtype="float32")
    meta = load(out).metadata
    assert meta["dtype"] == "float32" and meta["extra"]["source_dtype"] == "float64"
    atoms = periodic()
    ref = foreign_reference(mace_python, "mace_side.py", mace_model, [atoms], tmp_path, "--float32")[0]
    assert_ase_equals(out, [atoms], [ref], tol=1e-4)


def test_side_env_shadows_our_e3nn_and_reuses_our_torch(mace_python):
    import torch

    code = "import e3nn, torch; print(e3nn.__version__); print(torch.__file__)"
    out = subprocess.run([str(mace_python), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "0.4.4"  # the side env's own site-packages come before the main env's (e3nn 0.6)
    assert out[1] == torch.__file__  # torch is the main env's, not downloaded again


def test_side_env_is_created_once_by_concurrent_runs(tmp_path):
    """Two processes ask for the same new side env at once: one creates it, the other waits and reuses it."""
    import sys

    code = ("from mlpot_plugins.importers.side_env import SideEnv; "
            "print(SideEnv('probe', ['ase'], 'import ase').python())")
    env = dict(__import__("os").environ, MLPOT_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].strip().endswith("side-envs/probe/bin/python")
    logs = outs[0][1] + outs[1][1]
    assert logs.count("creating the side environment") == 1 and "waiting for another process" in logs
    assert "installing 0 package(s)" in logs  # ase comes from the main env through the .pth file
