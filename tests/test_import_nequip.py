"""`mlpot import nequip`: a tiny randomly initialised NequIP GNN (built and compiled with
`nequip-compile --mode torchscript`'s own saver in a side environment, no download) wrapped in the main env,
then checked against NequIP's own ASE calculator and through our ASE, OpenMM (python) and LAMMPS (1, 2 ranks)."""
import subprocess

import pytest

from import_checks import (DEFAULT_DTYPES, HERE, assert_ase_equals, assert_lammps_equals_ase,
                           assert_needs_only_torch, assert_openmm_equals_ase, cluster, foreign_reference, periodic,
                           side_python_or_skip)
from lammps_util import plugin  # noqa: F401
from mlpot_plugins.importers import nequip as nequip_import
from mlpot_plugins.model_file import load


@pytest.fixture(scope="session")
def nequip_python():
    return side_python_or_skip(nequip_import.side_env(), "nequip", nequip_import.NEQUIP_VERSION)


@pytest.fixture(scope="session")
def nequip_model(nequip_python, tmp_path_factory):
    path = tmp_path_factory.mktemp("nequip") / "tiny.nequip.pth"
    res = subprocess.run([str(nequip_python), str(HERE / "nequip_side.py"), "build", str(path)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return path


@pytest.fixture(scope="session")
def imported(nequip_model):
    from mlpot_plugins.cli import main

    out = nequip_model.with_name("tiny-imported.pt")
    assert main(["import", "nequip", str(nequip_model), "-o", str(out)]) == 0
    return out


def test_metadata_comes_from_the_nequip_model(imported):
    meta = load(imported).metadata
    assert meta["species"] == ["Cu", "Au"]  # NequIP's type_names, in type order
    assert meta["cutoff"] == 4.0 and meta["interaction_range"] == 8.0  # r_max, 2 layers x r_max
    assert (meta["dtype"], meta["length_unit"], meta["energy_unit"]) == ("float64", "angstrom", "eV")
    assert meta["extra"] == {"source": "nequip", "num_layers": 2}


@pytest.mark.parametrize("process_dtype", DEFAULT_DTYPES)
def test_ase_equals_nequip_calculator(nequip_python, nequip_model, imported, tmp_path, process_dtype):
    """Per-atom energies include NequIP's per-type shifts, as its calculator's "energies"; cell + cluster; the
    same whatever torch's default dtype in the running process."""
    structures = [periodic(), cluster()]
    refs = foreign_reference(nequip_python, "nequip_side.py", nequip_model, structures, tmp_path)
    assert_ase_equals(imported, structures, refs, process_dtype=process_dtype)


def test_file_needs_nothing_but_torch(imported):
    assert_needs_only_torch(imported, "nequip")


def test_openmm_python_backend_equals_ase(imported):
    assert_openmm_equals_ase(imported)


@pytest.mark.parametrize("nprocs", [1, 2])
def test_lammps_equals_ase(tmp_path, plugin, imported, nprocs):
    assert_lammps_equals_ase(tmp_path, plugin, imported, nprocs)
