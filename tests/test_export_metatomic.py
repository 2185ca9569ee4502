"""`mlpot export --to metatomic`: our models as metatomic AtomisticModels agree with our ASE calculator in
metatomic's own ASE calculator (energies, per-atom energies, forces, stress: 1e-10) with its consistency
checks on, and expose committee uncertainty as energy_uncertainty / energy_ensemble."""
import numpy as np
import pytest

pytest.importorskip("metatomic.torch")
pytest.importorskip("metatomic_ase")

import torch  # noqa: E402
from ase.build import bulk  # noqa: E402
from metatensor.torch import Labels  # noqa: E402
from metatomic.torch import ModelOutput  # noqa: E402
from metatomic_ase import MetatomicCalculator  # noqa: E402

from lammps_util import cuau, lammps_cell  # noqa: E402
from mlpot_plugins.ase import MLPotCalculator  # noqa: E402
from mlpot_plugins.cli import main  # noqa: E402

PROPS = ("energy", "energies", "forces", "stress")


def triclinic():
    atoms = cuau((2, 2, 2), seed=5, rattle=0.12)
    atoms.set_cell(lammps_cell(7.3, 7.5, 7.2, 80.0, 100.0, 70.0), scale_atoms=True)
    return atoms


def cu_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.08, seed=6)
    return atoms


def exported(tmp_path, model):
    out = tmp_path / f"{model}-metatomic.pt"
    assert main(["export", "--to", "metatomic", model, "-o", str(out)]) == 0
    return str(out)


@pytest.mark.parametrize("model,system", [("morse-cuau", triclinic), ("morse-cuau-committee", triclinic),
                                          ("cu-emt", cu_cell)])
def test_metatomic_ase_equals_ours(tmp_path, model, system):
    path = exported(tmp_path, model)
    atoms = system()
    ref = atoms.copy()
    ref.calc = MLPotCalculator(model)
    atoms.calc = MetatomicCalculator(path, check_consistency=True, uncertainty_threshold=None)
    for key in PROPS:
        want = ref.calc.get_property(key, ref)
        got = atoms.calc.get_property(key, atoms)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max(), err_msg=key)
    assert np.abs(ref.get_stress()).max() > 1e-3
    cluster = system()
    cluster.pbc = False  # no cell: the virial needs no cell term
    cluster.calc = MetatomicCalculator(path, check_consistency=True, uncertainty_threshold=None)
    ref = cluster.copy()
    ref.calc = MLPotCalculator(model)
    np.testing.assert_allclose(cluster.get_forces(), ref.get_forces(), rtol=0, atol=1e-10 * np.abs(ref.get_forces()).max())
    assert cluster.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-12)


def test_committee_uncertainty_outputs(tmp_path):
    path = exported(tmp_path, "morse-cuau-committee")
    atoms = triclinic()
    calc = MetatomicCalculator(path, check_consistency=True)
    ours = MLPotCalculator("morse-cuau-committee").evaluate(atoms)
    out = calc.run_model(atoms, {"energy_uncertainty": ModelOutput(unit="eV", sample_kind="atom"),
                                 "energy_ensemble": ModelOutput(unit="eV", sample_kind="system")})
    np.testing.assert_allclose(out["energy_uncertainty"].block().values.detach().numpy().ravel(),
                               ours["energies_std"].numpy(), rtol=1e-12)
    assert ours["energies_std"].min() > 1e-4
    np.testing.assert_allclose(out["energy_ensemble"].block().values.detach().numpy().ravel(),
                               ours["member_energy"].numpy(), rtol=1e-12)
    total = calc.run_model(atoms, {"energy_uncertainty": ModelOutput(unit="eV", sample_kind="system")})
    assert float(total["energy_uncertainty"].block().values) == pytest.approx(float(ours["energy_std"]), rel=1e-12)
    # selected atoms: per-atom energies of a subset (the others act as our ghost atoms)
    subset = torch.tensor([[0, 3], [0, 7], [0, 11]], dtype=torch.int32)
    sel = calc.run_model(atoms, {"energy": ModelOutput(unit="eV", sample_kind="atom")},
                         selected_atoms=Labels(["system", "atom"], subset))
    np.testing.assert_allclose(sel["energy"].block().values.detach().numpy().ravel(),
                               ours["energies"].numpy()[[3, 7, 11]], rtol=1e-12)
