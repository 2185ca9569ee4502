"""ASE calculator: physics of the contract outputs on the analytic reference model."""
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from scipy.spatial.transform import Rotation

from mlpot_plugins.ase import MLPotCalculator


def calc(name="morse-cuau"):
    return MLPotCalculator(name)


def fd_forces(atoms, h=1e-5):
    f = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for a in range(3):
            e = []
            for s in (h, -h):
                b = atoms.copy()
                b.calc = atoms.calc
                b.positions[i, a] += s
                e.append(b.get_potential_energy())
            f[i, a] = -(e[0] - e[1]) / (2 * h)
    return f


@pytest.mark.parametrize("kind", ["periodic", "triclinic", "open", "slab"])
def test_forces_are_minus_energy_gradient(kind, cuau_cell, triclinic_cell):
    atoms = {"periodic": cuau_cell, "triclinic": triclinic_cell}.get(kind)
    if kind == "open":
        atoms = cuau_cell.copy()
        atoms.pbc = False
    if kind == "slab":
        atoms = fcc111("Cu", (2, 2, 3), a=3.7, vacuum=4.0)
        atoms.rattle(0.05, rng=np.random.default_rng(3))
    atoms = atoms[:12] if kind == "open" else atoms
    atoms.calc = calc()
    np.testing.assert_allclose(atoms.get_forces(), fd_forces(atoms), atol=2e-7, rtol=1e-6)


def test_stress_is_strain_derivative(triclinic_cell):
    atoms = triclinic_cell
    atoms.calc = calc()
    stress = atoms.get_stress(voigt=False)
    h = 1e-6
    num = np.zeros((3, 3))
    cell0, vol = atoms.cell.array.copy(), atoms.get_volume()
    for a in range(3):
        for b in range(3):
            e = []
            for s in (h, -h):
                eps = np.eye(3)
                eps[a, b] += s
                x = atoms.copy()
                x.calc = atoms.calc
                x.set_cell(cell0 @ eps.T, scale_atoms=True)
                e.append(x.get_potential_energy())
            num[a, b] = (e[0] - e[1]) / (2 * h) / vol
    np.testing.assert_allclose(stress, 0.5 * (num + num.T), atol=1e-8)
    assert abs(stress).max() > 1e-3  # not a trivially zero stress


def test_per_atom_energies_sum_to_total(cuau_cell):
    cuau_cell.calc = calc()
    e = cuau_cell.get_potential_energy()
    np.testing.assert_allclose(cuau_cell.get_potential_energies().sum(), e, rtol=1e-12)
    assert cuau_cell.get_potential_energies().std() > 1e-4  # rattled: atoms differ


def test_invariance_and_equivariance(cuau_cell):
    atoms = cuau_cell
    atoms.calc = calc()
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    rot = Rotation.random(random_state=4).as_matrix()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    moved.positions = atoms.positions @ rot.T + np.array([0.3, -1.2, 2.5])
    moved.calc = calc()
    np.testing.assert_allclose(moved.get_potential_energy(), e0, rtol=1e-12)
    np.testing.assert_allclose(moved.get_forces(), f0 @ rot.T, atol=1e-10)
    np.testing.assert_allclose(moved.get_stress(voigt=False), rot @ s0 @ rot.T, atol=1e-10)
    # wrapping atoms back into the cell changes nothing
    moved.wrap()
    np.testing.assert_allclose(moved.get_potential_energy(), e0, rtol=1e-12)


def test_supercell_energy_and_forces_scale(triclinic_cell):
    small = triclinic_cell
    small.calc = calc()
    big = small.repeat((2, 2, 2))
    big.calc = calc()
    np.testing.assert_allclose(big.get_potential_energy(), 8 * small.get_potential_energy(), rtol=1e-11)
    np.testing.assert_allclose(big.get_forces(), np.tile(small.get_forces(), (8, 1)), atol=1e-10)
    np.testing.assert_allclose(big.get_stress(), small.get_stress(), atol=1e-11)


def test_cutoff_larger_than_half_box_counts_every_image():
    # one atom in a 4 A simple cubic box: all its neighbours are its own images (cutoff 6 A)
    atoms = Atoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=np.eye(3) * 4.0, pbc=True)
    atoms.calc = calc()
    r = np.linalg.norm(np.array(np.meshgrid(*[range(-2, 3)] * 3)).reshape(3, -1).T * 4.0, axis=1)
    r = r[(r > 0) & (r < 6.0)]
    d, a, r0, rc = 0.3429, 1.3588, 2.866, 6.0
    phi = d * ((1 - np.exp(-a * (r - r0))) ** 2 - 1) * (1 - (r / rc) ** 2) ** 3
    np.testing.assert_allclose(atoms.get_potential_energy(), 0.5 * phi.sum(), rtol=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-12)


def test_two_atoms_match_analytic_morse():
    r = 2.7
    atoms = Atoms("CuAu", positions=[[0, 0, 0], [r, 0, 0]])
    atoms.calc = calc()
    d = np.sqrt(0.3429 * 0.4826)
    a, r0, rc = 0.5 * (1.3588 + 1.5830), 0.5 * (2.866 + 3.006), 6.0
    phi = d * ((1 - np.exp(-a * (r - r0))) ** 2 - 1) * (1 - (r / rc) ** 2) ** 3
    np.testing.assert_allclose(atoms.get_potential_energy(), phi, rtol=1e-13)


def test_committee_uncertainty_outputs(cuau_cell):
    atoms = cuau_cell
    atoms.calc = calc("morse-cuau-committee")
    std = atoms.calc.get_property("forces_std", atoms)
    assert std.shape == (len(atoms),) and np.all(std > 0)
    assert atoms.calc.get_property("energy_std", atoms) > 0
    assert atoms.calc.get_property("energies_std", atoms).shape == (len(atoms),)
    # the committee is centred on the reference parameters, so its mean is close to the single model
    single = cuau_cell.copy()
    single.calc = calc()
    np.testing.assert_allclose(atoms.get_forces(), single.get_forces(), atol=5 * std.max())


def test_committee_of_identical_members_has_zero_std(tmp_path, cuau_cell):
    from mlpot_plugins import export
    from mlpot_plugins.models import MorsePotential

    path = export(MorsePotential(["Cu", "Au"], ensemble_size=3, spread=0.0), tmp_path / "same.pt")
    cuau_cell.calc = MLPotCalculator(str(path))
    np.testing.assert_allclose(cuau_cell.calc.get_property("forces_std", cuau_cell), 0.0, atol=1e-12)
    single = cuau_cell.copy()
    single.calc = calc()
    np.testing.assert_allclose(cuau_cell.get_forces(), single.get_forces(), atol=1e-12)


def test_unknown_element_is_a_clear_error():
    atoms = bulk("Ni", "fcc", a=3.5)
    atoms.calc = calc()
    with pytest.raises(ValueError, match=r"\['Ni'\] \(atom\(s\) \[0\]\) not in the model's species"):
        atoms.get_potential_energy()


def test_nve_energy_is_conserved(cuau_cell):
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = cuau_cell
    atoms.calc = calc()
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(5))
    e0 = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(100)
    assert atoms.get_kinetic_energy() > 0.1 * len(atoms) * 0.0388  # atoms really move
    assert abs(atoms.get_total_energy() - e0) / len(atoms) < 2e-4  # eV/atom over 100 fs


def test_only_requested_outputs_are_computed(cuau_cell):
    """Regression: every call used to ask for the virial and the committee spread."""
    atoms = cuau_cell
    atoms.calc = calc("morse-cuau-committee")
    e = atoms.get_potential_energy()
    assert set(atoms.calc.results) == {"energy", "free_energy", "energies", "forces"}
    stress = atoms.get_stress()
    assert "stress" in atoms.calc.results and "forces_std" not in atoms.calc.results
    assert atoms.calc.results["energy"] == e  # kept across property requests of the same configuration
    std = atoms.calc.get_property("forces_std", atoms)
    assert set(atoms.calc.results) >= {"stress", "forces_std", "energies_std", "energy_std"}
    np.testing.assert_allclose(atoms.get_stress(), stress, rtol=0, atol=0)
    atoms.positions[0] += 0.05  # a new configuration: nothing stale survives
    atoms.get_potential_energy()
    assert "forces_std" not in atoms.calc.results and "stress" not in atoms.calc.results
    assert not np.allclose(atoms.calc.get_property("forces_std", atoms), std)


def test_uncertainty_request_matches_plain_evaluation(cuau_cell):
    """Energy/forces are the same whether or not the committee spread was asked for."""
    atoms = cuau_cell
    atoms.calc = calc("morse-cuau-committee")
    plain = atoms.calc.evaluate(atoms, need_uncertainty=False, need_virial=False)
    full = atoms.calc.evaluate(atoms, need_uncertainty=True, need_virial=True)
    torch_close = np.testing.assert_allclose
    torch_close(plain["forces"].numpy(), full["forces"].numpy(), rtol=1e-12, atol=1e-13)
    assert "forces_std" not in plain and "virial" not in plain


def test_per_atom_stresses_sum_to_stress(triclinic_cell):
    atoms = triclinic_cell
    atoms.calc = calc()
    stresses = atoms.get_stresses()
    assert stresses.shape == (len(atoms), 6)
    np.testing.assert_allclose(stresses.sum(axis=0), atoms.get_stress(), rtol=1e-12, atol=1e-14)
    assert np.ptp(stresses[:, 0]) > 1e-4  # atoms differ: a real per-atom split, not stress / N
    # ASE convention: stress = -virial / V, so per-atom stresses are -atom_virial / V
    out = atoms.calc.evaluate(atoms, need_uncertainty=False, need_virial=True)
    av = -out["atom_virial"].numpy() / atoms.get_volume()
    np.testing.assert_allclose(stresses[:, 0], av[:, 0, 0], rtol=1e-12)


def test_model_without_virial_works_on_periodic_cells(tmp_path, cuau_cell):
    from ase.calculators.calculator import PropertyNotImplementedError

    from mlpot_plugins import export
    from mlpot_plugins.models import MorsePotential

    path = export(MorsePotential(["Cu", "Au"]), tmp_path / "novirial.pt",
                  outputs=["energy", "energies", "forces"])
    atoms = cuau_cell
    atoms.calc = MLPotCalculator(str(path))
    ref = cuau_cell.copy()
    ref.calc = calc()
    np.testing.assert_allclose(atoms.get_potential_energy(), ref.get_potential_energy(), rtol=1e-13)
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-12)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stresses()


def compressed_lattice():
    """A perfect fcc lattice compressed by 10%: every atom is a centre of symmetry, so all member forces
    are zero, while the members' energies differ a lot (out of distribution)."""
    atoms = bulk("Cu", "fcc", a=3.61 * 0.9, cubic=True).repeat((2, 2, 2))
    return atoms


def test_symmetric_compressed_lattice_has_energy_std_but_no_force_std():
    atoms = compressed_lattice()
    atoms.calc = calc("morse-cuau-committee")
    fstd = atoms.calc.get_property("forces_std", atoms)
    estd = atoms.calc.get_property("energies_std", atoms)
    np.testing.assert_allclose(fstd, 0.0, atol=1e-10)
    assert estd.min() > 1e-3 and np.ptp(estd) < 1e-10  # large, the same on every (equivalent) atom
    assert atoms.calc.get_property("energy_std", atoms) > estd.max()


def test_shipped_model_names_work():
    atoms = bulk("Cu", cubic=True)
    for name in ("morse-cuau", "morse-cuau-committee"):
        atoms.calc = MLPotCalculator(name)
        assert np.isfinite(atoms.get_potential_energy())
