"""The shipped cu-emt committee: contract metadata, accuracy against EMT, uncertainty that rises off-data."""
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpot_plugins import load, pretrained_names, pretrained_path
from mlpot_plugins.ase import MLPotCalculator



def test_shipped_file_is_there():
    """The model ships with the package: its absence is a failure, not a skip."""
    assert "cu-emt" in pretrained_names() and pretrained_path("cu-emt").is_file()


def test_metadata_and_size():
    model = load("cu-emt")
    meta = model.metadata
    assert meta["species"] == ["Cu"] and meta["ensemble_size"] == 4 and meta["dtype"] == "float64"
    assert meta["interaction_range"] == pytest.approx(2 * meta["cutoff"])
    assert meta["uncertainty_scale"] > 0 and meta["uncertainty_scale"] != 1.0  # calibrated
    assert pretrained_path("cu-emt").stat().st_size < 2 * 1024 * 1024


def test_close_to_emt_and_uncertainty_rises_out_of_distribution():
    calc = MLPotCalculator("cu-emt")
    rng = np.random.default_rng(11)
    near = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    near.positions += rng.normal(0, 0.06, near.positions.shape)
    far = bulk("Cu", "fcc", a=3.61 * 0.9, cubic=True).repeat(2)
    far.positions += rng.normal(0, 0.06, far.positions.shape)
    stds = []
    for atoms in (near, far):
        ref = atoms.copy()
        ref.calc = EMT()
        atoms.calc = calc
        if atoms is near:
            assert np.sqrt(np.mean((atoms.get_forces() - ref.get_forces()) ** 2)) < 0.1
            assert abs(atoms.get_potential_energy() - ref.get_potential_energy()) / len(atoms) < 0.03
        else:
            atoms.get_forces()
        stds.append(np.median(calc.get_property("forces_std", atoms)))
    assert stds[1] > 2.0 * stds[0]


@pytest.mark.parametrize("name", ["cu-emt", "ala2-xtb"])
def test_shipped_equivariant_files_carry_the_current_layer_code(tmp_path, name):
    """Re-scripting a shipped file with today's model code changes no output bit: the file runs the code in the
    repository (re-export after a layer change: `build_cu_emt --reexport NAME`)."""
    import shutil

    from mlpot_plugins.pretrained.build_cu_emt import reexport

    copy = tmp_path / f"{name}.pt"
    shutil.copy(pretrained_path(name), copy)
    reexport(copy, tolerance=0.0)


def test_reexport_refuses_a_non_equivariant_file(tmp_path):
    import shutil

    from mlpot_plugins.pretrained.build_cu_emt import reexport

    copy = tmp_path / "morse.pt"
    shutil.copy(pretrained_path("morse-cuau"), copy)
    before = copy.read_bytes()
    with pytest.raises(ValueError, match="not an equivariant model file.*reexport_holstein"):
        reexport(copy)
    assert copy.read_bytes() == before
