"""pair_style mlpot in an in-process LAMMPS equals the ASE calculator: energy, forces, per-atom energies,
global and per-atom virial, on periodic orthogonal/triclinic boxes (cutoff > half the box), open and
mixed boundaries, in metal and real units, with NULL types under hybrid/overlay."""
import numpy as np
import pytest
from ase import Atoms

from lammps_util import cuau, lammps_cell, lammps_eval, lmp_factory, plugin  # noqa: F401
from mlpot_plugins import pretrained_path, units
from mlpot_plugins.ase import MLPotCalculator

MODEL = str(pretrained_path("morse-cuau"))
COMMITTEE = str(pretrained_path("morse-cuau-committee"))


def assert_matches_ase(out, atoms, model, energy_factor=1.0, periodic=True):
    calc = MLPotCalculator(model)
    atoms.calc = calc
    ref = calc.evaluate(atoms)
    scale = np.abs(atoms.get_forces()).max()
    assert scale > 0.5  # a configuration with real forces, so the comparison means something
    assert out["energy"] == pytest.approx(atoms.get_potential_energy() * energy_factor, rel=1e-12)
    np.testing.assert_allclose(out["forces"], atoms.get_forces() * energy_factor, rtol=0,
                               atol=1e-11 * scale * energy_factor)
    np.testing.assert_allclose(out["energies"], atoms.get_potential_energies() * energy_factor, rtol=0,
                               atol=1e-11 * energy_factor)
    # per-atom virial: stress/atom ... virial = -W_i * nktv2p (xx yy zz xy xz yz)
    w_atom = ref["atom_virial"].numpy().reshape(-1, 9)[:, [0, 4, 8, 1, 2, 5]] * energy_factor
    np.testing.assert_allclose(-out["stress_atom"] / out["nktv2p"], w_atom, rtol=0,
                               atol=1e-10 * np.abs(w_atom).max())
    w = ref["virial"].numpy().reshape(9)[[0, 4, 8, 1, 2, 5]] * energy_factor
    np.testing.assert_allclose(out["pressure"] * out["volume"] / out["nktv2p"], w, rtol=0,
                               atol=1e-10 * np.abs(w).max())
    if periodic:  # the same through ASE's stress (xx yy zz yz xz xy)
        stress = atoms.get_stress()[[0, 1, 2, 5, 4, 3]]
        np.testing.assert_allclose(out["pressure"] / out["nktv2p"], -stress * energy_factor, rtol=0,
                                   atol=1e-10 * np.abs(stress).max() * energy_factor)


def test_orthogonal_periodic_box(lmp_factory):
    atoms = cuau((2, 2, 2))  # 7.4 A box: the 6 A cutoff is larger than half of it
    assert_matches_ase(lammps_eval(lmp_factory, atoms, MODEL), atoms, MODEL)


def test_triclinic_box_with_cutoff_beyond_half_box(lmp_factory):
    atoms = cuau((2, 2, 2), seed=1)
    atoms.set_cell(lammps_cell(7.4, 7.1, 7.6, 80.0, 97.0, 68.0), scale_atoms=True)
    assert atoms.cell.array[1, 0] != 0 and atoms.cell.array[2, 0] != 0 and atoms.cell.array[2, 1] != 0
    assert_matches_ase(lammps_eval(lmp_factory, atoms, MODEL), atoms, MODEL)


def test_non_periodic_boundaries(lmp_factory):
    cluster = cuau((2, 2, 2), seed=2)
    cluster.center(vacuum=5.0)  # LAMMPS needs the atoms inside the (fixed) box
    atoms = Atoms(cluster.get_chemical_symbols(), cluster.positions, cell=cluster.cell, pbc=False)
    out = lammps_eval(lmp_factory, atoms, MODEL, boundary="f f f")
    assert_matches_ase(out, atoms, MODEL, periodic=False)


def test_mixed_boundaries(lmp_factory):
    slab = cuau((2, 2, 2), seed=3)
    slab.center(vacuum=4.0, axis=2)
    atoms = Atoms(slab.get_chemical_symbols(), slab.positions, cell=slab.cell, pbc=[True, True, False])
    out = lammps_eval(lmp_factory, atoms, MODEL, boundary="p p f")
    assert_matches_ase(out, atoms, MODEL, periodic=False)


def test_real_units_use_kcal_per_mol(lmp_factory):
    atoms = cuau((2, 2, 2), seed=4)
    out = lammps_eval(lmp_factory, atoms, MODEL, units="real")
    assert_matches_ase(out, atoms, MODEL, energy_factor=units.KCAL_PER_MOL_PER_EV)


def test_committee_mean_and_shipped_name(lmp_factory):
    atoms = cuau((2, 2, 2), seed=5)
    # a bare name resolves to the model shipped in the package
    out = lammps_eval(lmp_factory, atoms, "morse-cuau-committee")
    assert_matches_ase(out, atoms, COMMITTEE)


def test_null_type_is_invisible_to_the_model(lmp_factory):
    atoms = cuau((2, 2, 2), seed=6)
    out = lammps_eval(lmp_factory, atoms, MODEL, elements=("Cu", "Au"))
    # hybrid/overlay: mlpot sees only Cu (Au is NULL), `zero` covers the Au pairs
    import tempfile
    from pathlib import Path

    from lammps_util import write_data

    tmp = Path(tempfile.mkdtemp())
    write_data(tmp / "system.data", atoms)
    lmp = lmp_factory()
    try:
        for cmd in ["units metal", "atom_style atomic", "atom_modify map array", f"read_data {tmp / 'system.data'}",
                    f"pair_style hybrid/overlay mlpot {MODEL} zero 6.0", "pair_coeff * * mlpot Cu NULL",
                    "pair_coeff * * zero", "run 0"]:
            lmp.command(cmd)
        n = lmp.get_natoms()
        ids = np.ctypeslib.as_array(lmp.gather_atoms("id", 0, 1)).copy()
        f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)[np.argsort(ids)]
        energy = lmp.get_thermo("pe")
    finally:
        lmp.close()
    copper = np.array([s == "Cu" for s in atoms.get_chemical_symbols()])
    only_cu = atoms[copper]
    only_cu.calc = MLPotCalculator(MODEL)
    assert energy == pytest.approx(only_cu.get_potential_energy(), rel=1e-12)
    assert energy != pytest.approx(out["energy"], rel=1e-3)
    np.testing.assert_allclose(f[copper], only_cu.get_forces(), atol=1e-11 * np.abs(f).max())
    assert np.all(f[~copper] == 0.0)


@pytest.mark.parametrize("with_compute", [True, False])
def test_committee_uncertainty_only_on_output_steps(lmp_factory, tmp_path, with_compute):
    """compute mlpot/atom registers its steps (timeflag): the pair style adds the committee statistics to
    those force calls only, so no on-demand re-evaluation and nothing on other steps."""
    from lammps_util import write_data

    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    lmp = lmp_factory()
    try:
        cmds = ["units metal", "atom_style atomic", f"read_data {tmp_path / 'system.data'}",
                "pair_style mlpot morse-cuau-committee", "pair_coeff * * Cu Au", "thermo 0"]
        if with_compute:
            cmds += ["compute u all mlpot/atom", f"dump d all custom 5 {tmp_path / 'u.dump'} id c_u[1]"]
        cmds += ["velocity all create 300 1", "fix nve all nve", "run 20"]
        for cmd in cmds:
            lmp.command(cmd)
        evaluations = lmp.extract_pair("committee_evaluations")
        on_demand = lmp.extract_pair("committee_on_demand")
    finally:
        lmp.close()
    assert on_demand == 0
    assert evaluations == (5 if with_compute else 0)  # steps 0, 5, 10, 15, 20


def test_uncertainty_every_n_and_on_demand(lmp_factory, tmp_path):
    """`uncertainty every 5` evaluates the committee on those steps only; a compute mlpot/atom invoked
    on a step without it (defined after the run, read through the library) evaluates on demand and
    equals ASE's forces_std at the final positions."""
    from lammps_util import write_data

    atoms = cuau((2, 2, 2), seed=11)
    write_data(tmp_path / "system.data", atoms)
    lmp = lmp_factory()
    try:
        for cmd in ["units metal", "atom_style atomic", "atom_modify map array",
                    f"read_data {tmp_path / 'system.data'}",
                    "pair_style mlpot morse-cuau-committee uncertainty every 5", "pair_coeff * * Cu Au",
                    "thermo 0", "velocity all create 300 1", "fix nve all nve", "run 12"]:
            lmp.command(cmd)
        assert lmp.extract_pair("committee_evaluations") == 3  # steps 0, 5, 10
        lmp.command("compute u all mlpot/atom")
        n = lmp.get_natoms()
        std = np.array(lmp.numpy.extract_compute("u", 1, 2))[:n, 0]
        assert lmp.extract_pair("committee_on_demand") == 1
        ids = np.array(lmp.numpy.extract_atom("id"))[:n]
        x = np.array(lmp.numpy.extract_atom("x"))[:n]
        std, x = std[np.argsort(ids)], x[np.argsort(ids)]
    finally:
        lmp.close()
    atoms.positions = x  # wrapped positions are fine for a periodic system
    calc = MLPotCalculator(COMMITTEE)
    atoms.calc = calc
    np.testing.assert_allclose(std, calc.get_property("forces_std", atoms), rtol=1e-10)
