"""Physics and contract tests of the E(3)-equivariant committee potential (tiny models, fp64 unless noted)."""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from e3nn import o3

from mlpot_plugins import export, load
from mlpot_plugins.models.equivariant import EquivariantPotential
from mlpot_plugins.neighbors import neighbor_list

TINY = dict(species=["Cu", "Au"], cutoff=3.2, lmax=2, n_layers=2, channels=4, n_basis=6, radial_hidden=8,
            readout_hidden=4, avg_num_neighbors=8.0, ensemble_size=3)


def tiny(**kw):
    hp = dict(TINY)
    hp.update(kw)
    torch.manual_seed(0)
    return EquivariantPotential(**hp)


def cluster(seed=0, n=7):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, 4.0, (n, 3))
    atoms = Atoms(["Cu"] * (n - 2) + ["Au"] * 2, positions=pos)
    # keep atoms apart: relax points that are too close
    for _ in range(50):
        d = atoms.get_all_distances() + np.eye(n) * 10
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] > 1.9:
            break
        atoms.positions[i] -= 0.3 * (atoms.positions[j] - atoms.positions[i])
    return atoms


def crystal():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions += np.random.default_rng(1).normal(0, 0.1, atoms.positions.shape)
    atoms.numbers[1] = 79
    return atoms


def run(model, atoms, dtype=torch.float64, virial=True, unc=True):
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    types = torch.tensor([model.species.index(s) for s in atoms.get_chemical_symbols()])
    return model.compute(torch.tensor(atoms.positions, dtype=dtype), types, torch.tensor(ei),
                         torch.tensor(sh, dtype=dtype), len(atoms), virial, unc)


def transformed(atoms, rot, shift):
    out = atoms.copy()
    out.positions = atoms.positions @ rot.T + shift
    if atoms.pbc.any():
        out.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    return out


@pytest.mark.parametrize("opts", [dict(radial="spline"), dict(radial="mlp"), dict(ensemble="shallow")])
@pytest.mark.parametrize("make", [cluster, crystal])
def test_rotation_reflection_translation_fp64(opts, make):
    model = tiny(**opts)
    atoms = make()
    ref = run(model, atoms)
    for seed, mirror in ((0, 1.0), (1, -1.0)):
        torch.manual_seed(seed)
        rot = (o3.rand_matrix(dtype=torch.float64) * mirror).numpy()
        out = run(model, transformed(atoms, rot, np.array([0.7, -1.3, 2.1])))
        assert abs(float(out["energy"] - ref["energy"])) < 1e-10
        f_rot = ref["forces"].numpy() @ rot.T
        assert np.abs(out["forces"].numpy() - f_rot).max() < 1e-10
        assert np.abs(out["forces_std"].numpy() - ref["forces_std"].numpy()).max() < 1e-10
        w_rot = rot @ ref["virial"].numpy() @ rot.T
        assert np.abs(out["virial"].numpy() - w_rot).max() < 1e-10
    assert float(ref["forces"].abs().max()) > 1e-3  # the check is not vacuous


def test_equivariance_fp32():
    model = tiny(dtype="float32")
    atoms = cluster(3)
    ref = run(model, atoms, torch.float32)
    rot = o3.rand_matrix(dtype=torch.float64).numpy() * -1.0
    out = run(model, transformed(atoms, rot, np.array([1.0, 2.0, -0.5])), torch.float32)
    scale = max(1.0, float(ref["forces"].abs().max()))
    assert abs(float(out["energy"] - ref["energy"])) < 1e-5 * max(1.0, abs(float(ref["energy"])))
    assert np.abs(out["forces"].numpy() - ref["forces"].numpy() @ rot.T).max() < 1e-5 * scale


def test_s2grid_nonlinearity_is_equivariant_up_to_aliasing():
    """The sphere-grid activation is exact only for band-limited signals: bounded, shrinking error."""
    atoms = cluster(4)
    torch.manual_seed(2)
    rot = o3.rand_matrix(dtype=torch.float64).numpy()
    errors = []
    for res in (8, 20):
        model = tiny(nonlinearity="s2grid", grid_resolution=res)
        ref = run(model, atoms)
        out = run(model, transformed(atoms, rot, np.zeros(3)))
        scale = float(ref["forces"].abs().max())
        errors.append(np.abs(out["forces"].numpy() - ref["forces"].numpy() @ rot.T).max() / scale)
    assert errors[0] < 1e-2 and errors[1] < 1e-5  # measured ~3e-4 and ~1e-7
    assert errors[1] < 0.01 * errors[0]


def test_permutation_invariance():
    model = tiny()
    atoms = crystal()
    ref = run(model, atoms)
    perm = np.random.default_rng(0).permutation(len(atoms))
    out = run(model, atoms[perm])
    assert abs(float(out["energy"] - ref["energy"])) < 1e-10
    assert np.abs(out["forces"].numpy() - ref["forces"].numpy()[perm]).max() < 1e-10
    assert np.abs(out["energies"].numpy() - ref["energies"].numpy()[perm]).max() < 1e-10


def test_forces_and_virial_are_energy_derivatives():
    model = tiny()
    atoms = crystal()
    out = run(model, atoms)
    h = 1e-5
    for i, c in ((0, 0), (1, 2), (3, 1)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, c] += h
        minus.positions[i, c] -= h
        fd = -(float(run(model, plus)["energy"]) - float(run(model, minus)["energy"])) / (2 * h)
        assert abs(fd - float(out["forces"][i, c])) < 1e-6
    # virial W = -dE/d(strain)
    for a, b in ((0, 0), (0, 1), (2, 1)):
        eps = np.zeros((3, 3))
        eps[a, b] = h
        e = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            e.append(float(run(model, strained)["energy"]))
        assert abs(-(e[0] - e[1]) / (2 * h) - float(out["virial"][a, b])) < 1e-6


def test_smooth_at_cutoff():
    """Energy and force of a dimer go continuously to zero interaction at the cutoff."""
    model = tiny(ensemble_size=1)
    rc = model.cutoff

    def dimer(r):
        return run(model, Atoms("CuAu", positions=[[0, 0, 0], [r, 0, 0]]), unc=False)

    far = float(dimer(rc + 0.5)["energy"])
    for delta in (1e-2, 1e-3):
        inside = dimer(rc - delta)
        assert abs(float(inside["energy"]) - far) < 1e-3 * delta ** 2  # envelope ~ (rc - r)^3
        assert float(inside["forces"].abs().max()) < 1e-2 * delta
    assert abs(float(dimer(rc - 1.0)["energy"]) - far) > 1e-6  # there is an interaction to switch off


def test_committee_members_are_batched_single_models():
    """Member k of the batched committee equals a K=1 model holding member k's weights."""
    committee = tiny(ensemble_size=3, seed=5)
    atoms = cluster(2)
    out = run(committee, atoms)
    for k in range(3):
        single = tiny(ensemble_size=1)
        params = dict(committee.named_parameters())
        state = {n: (t[k:k + 1] if n in params else t) for n, t in committee.state_dict().items()}
        single.load_state_dict(state)
        ref = run(single, atoms, unc=False)
        assert np.abs(ref["forces"].numpy() - out["member_forces"][k].numpy()).max() < 1e-12
        assert abs(float(ref["energy"]) - float(out["member_energy"][k])) < 1e-12


@pytest.mark.parametrize("ensemble", ["committee", "shallow"])
def test_committee_std_zero_when_members_identical(ensemble):
    model = tiny(ensemble=ensemble)
    atoms = crystal()
    assert float(run(model, atoms)["forces_std"].min()) > 1e-6
    model.make_members_identical()
    out = run(model, atoms)
    assert float(out["forces_std"].max()) < 1e-12
    assert float(out["energy_std"]) < 1e-12


def test_shallow_ensemble_shares_the_trunk():
    model = tiny(ensemble="shallow", ensemble_size=4)
    lead = {n: p.shape[0] for n, p in model.named_parameters()}
    assert {v for n, v in lead.items() if n.startswith("readout")} == {4}
    assert {v for n, v in lead.items() if not n.startswith("readout")} == {1}


def test_export_load_identical_and_interaction_range(tmp_path):
    model = tiny(n_layers=3)
    path = export(model, tmp_path / "eq.pt", name="eq")
    loaded = load(path)
    assert loaded.interaction_range == pytest.approx(3 * model.cutoff)
    assert loaded.metadata["ensemble_size"] == 3 and loaded.has_uncertainty
    atoms = crystal()
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    types = torch.tensor([model.species.index(s) for s in atoms.get_chemical_symbols()])
    args = (torch.tensor(atoms.positions), types, torch.tensor(ei), torch.tensor(sh))
    a = model.compute(*args, len(atoms), True, True)
    b = loaded.compute(*args, need_virial=True, need_uncertainty=True)
    for key in ("energy", "forces", "virial", "forces_std", "energies_std", "member_forces"):
        assert torch.equal(a[key], b[key]), key


def test_ase_calculator_runs_exported_model(tmp_path):
    from mlpot_plugins.ase import MLPotCalculator

    path = export(tiny(), tmp_path / "eq.pt")
    atoms = crystal()
    atoms.calc = MLPotCalculator(str(path))
    forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all()
    assert atoms.calc.get_property("forces_std", atoms).shape == (len(atoms),)
    assert atoms.get_stress().shape == (6,)


@pytest.mark.parametrize("bad,match", [
    (dict(radial="gaussian"), "radial must be"), (dict(nonlinearity="relu"), "nonlinearity must be"),
    (dict(ensemble="deep"), "ensemble must be"), (dict(lmax=0), "lmax >= 1"), (dict(colour=3), "unknown"),
    (dict(radial="spline", n_basis=3), "n_basis >= 4")])
def test_bad_options_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny(**bad)
