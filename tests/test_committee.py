"""`mlpot committee`: separately exported models combined into one committee file (contract outputs for
ensemble_size K) equal the members evaluated on their own; calibration; LAMMPS 1 vs 2 ranks."""
import numpy as np
import pytest
from ase.calculators.emt import EMT

from lammps_util import cuau, lammps_eval, lmp_factory, plugin  # noqa: F401
from mlpot_plugins import export, load, pretrained_path
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.cli import main
from mlpot_plugins.committee import make_committee
from mlpot_plugins.models.reference import MorsePotential
from mlpot_plugins.training.calibration import gaussian_nll
from test_lammps_mpi import ToyMessagePassing, assert_message_passing_ranks_equal_ase, assert_two_rank_std_equals_ase


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three members: the shipped single Morse model (cutoff 6), a Morse model with the species in the other
    type order (cutoff 5) and a K=3 Morse committee (cutoff 5.5; the committee uses its mean)."""
    d = tmp_path_factory.mktemp("members")
    return [str(pretrained_path("morse-cuau")),
            str(export(MorsePotential(["Au", "Cu"], cutoff=5.0), d / "au-cu-5.pt")),
            str(export(MorsePotential(["Cu", "Au"], cutoff=5.5, ensemble_size=3, spread=0.05, seed=3),
                       d / "k3-55.pt"))]


def test_committee_equals_mean_of_members(tmp_path, members, triclinic_cell):
    out = tmp_path / "committee.pt"
    assert main(["committee", *members, "-o", str(out)]) == 0
    model = load(out)
    meta = model.metadata
    assert (meta["ensemble_size"], meta["cutoff"], meta["interaction_range"]) == (3, 6.0, 6.0)
    assert meta["uncertainty_scale"] == 1.0 and meta["species"] == ["Cu", "Au"]
    atoms = triclinic_cell
    atoms.calc = MLPotCalculator(out)
    res = {k: atoms.calc.get_property(k, atoms) for k in
           ("energy", "energies", "forces", "stress", "forces_std", "energies_std", "energy_std")}
    per = []
    for path in members:
        a = atoms.copy()
        a.calc = MLPotCalculator(path)
        per.append({k: a.calc.get_property(k, a) for k in ("energy", "energies", "forces", "stress")})
    mean = {k: np.mean([p[k] for p in per], axis=0) for k in per[0]}
    spread = np.ptp([p["energy"] for p in per])
    assert spread > 1e-3  # the members really differ
    for key in mean:
        np.testing.assert_allclose(res[key], mean[key], rtol=1e-12, atol=1e-12 * np.abs(mean[key]).max(),
                                   err_msg=key)
    member_forces = np.array([p["forces"] for p in per])
    dev = member_forces - member_forces.mean(0)
    np.testing.assert_allclose(res["forces_std"], np.sqrt((dev ** 2).sum(-1).mean(0)), rtol=1e-12)
    np.testing.assert_allclose(res["energies_std"], np.std([p["energies"] for p in per], axis=0), rtol=1e-12)
    assert res["energy_std"] == pytest.approx(np.std([p["energy"] for p in per]), rel=1e-12)
    raw = atoms.calc.evaluate(atoms)
    np.testing.assert_allclose(raw["member_energy"].numpy(), [p["energy"] for p in per], rtol=1e-12)
    vol = atoms.get_volume()  # member_virial [K, 3, 3]: stress = -W / V of each member
    np.testing.assert_allclose(-raw["member_virial"].numpy().reshape(3, 9)[:, [0, 4, 8, 5, 2, 1]] / vol,
                               [p["stress"] for p in per], rtol=1e-10, atol=1e-14)


def _engine_cases():
    from openmm_systems import BACKENDS

    return ([(b, "float64") for b in BACKENDS] + [(b, "float32") for b in BACKENDS if b in ("native", "torch")])


@pytest.mark.parametrize("backend,dtype", _engine_cases())
def test_openmm_backends_run_the_committee(tmp_path, members, backend, dtype):
    """Every OpenMM backend, in the file's dtype and cast at load: the committee's integer type maps stay
    integers (a whole-module cast made them float64 and the native backend failed on every committee file)."""
    from openmm_systems import ase_reference, context_for, empty_system, energy_forces, periodic_triclinic, topology_of

    from mlpot_plugins.openmm import create_force

    path = str(make_committee(members, tmp_path / "committee.pt"))
    atoms = periodic_triclinic()
    system = empty_system(atoms)
    system.addForce(create_force(path, topology_of(atoms), backend=backend, dtype=dtype))
    e, f = energy_forces(context_for(system, atoms))
    e_ref, f_ref = ase_reference(atoms, path, dtype)
    tol = 1e-10 if dtype == "float64" else 1e-5
    assert e == pytest.approx(e_ref, rel=tol)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=tol * np.abs(f_ref).max())


def test_lammps_casts_the_committee_to_float32(tmp_path, lmp_factory, members):
    """pair_style mlpot FILE dtype float32 on a committee file: floating-point weights cast, type maps kept."""
    path = str(make_committee(members, tmp_path / "committee.pt"))
    atoms = cuau((2, 2, 2), seed=4)
    out = lammps_eval(lmp_factory, atoms, f"{path} dtype float32", workdir=tmp_path)
    ref = atoms.copy()
    ref.calc = MLPotCalculator(path, dtype="float32")
    f_ref = ref.get_forces()
    assert out["energy"] == pytest.approx(ref.get_potential_energy(), rel=1e-5)
    np.testing.assert_allclose(out["forces"], f_ref, rtol=0, atol=1e-5 * np.abs(f_ref).max())


def test_calibration_fits_finite_scale_that_lowers_nll(tmp_path, members):
    """EMT-labelled validation structures: the fitted scale is the NLL-optimal one and is stored."""
    import ase.io

    frames = []
    for seed in range(3):
        atoms = cuau((2, 2, 2), a=3.75, seed=seed, rattle=0.15)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    ase.io.write(tmp_path / "val.extxyz", frames)
    raw = load(make_committee(members, tmp_path / "raw.pt"))
    cal = load(make_committee(members, tmp_path / "cal.pt", calibrate=tmp_path / "val.extxyz"))
    scale = cal.metadata["uncertainty_scale"]
    assert np.isfinite(scale) and scale > 1.5  # Morse vs EMT errors exceed the members' spread
    sig_raw, sig_cal, err = [], [], []
    for atoms in frames:
        ref = atoms.get_forces()
        for model, sig in ((raw, sig_raw), (cal, sig_cal)):
            a = atoms.copy()
            a.calc = MLPotCalculator(model)
            sig.append(a.calc.get_property("forces_std", a))
        err.append(a.get_forces() - ref)
    sig_raw, sig_cal, err = map(np.concatenate, (sig_raw, sig_cal, err))
    np.testing.assert_allclose(sig_cal, scale * sig_raw, rtol=1e-12)
    nll_raw, nll_cal = gaussian_nll(sig_raw, err), gaussian_nll(sig_cal, err)
    assert nll_cal < nll_raw - 0.5, (nll_raw, nll_cal)
    for factor in (0.8, 1.25):  # and it is the optimum
        assert gaussian_nll(factor * sig_cal, err) > nll_cal


def test_committee_with_message_passing_member_on_one_and_two_ranks(tmp_path, plugin, members):
    """A message-passing member (cutoff 3, range 6) beside pair members (cutoffs 6 and 5): the committee asks
    for ghost centres (range 6 + 3) and LAMMPS on 1 and 2 ranks equals ASE; member std live on 2 ranks."""
    mp = export(ToyMessagePassing(), tmp_path / "toy-mp.pt")
    path = make_committee([mp, members[0], members[1]], tmp_path / "mixed.pt")
    meta = load(path).metadata
    assert (meta["cutoff"], meta["interaction_range"]) == (6.0, 9.0)
    atoms = assert_message_passing_ranks_equal_ase(tmp_path, plugin, path)
    (tmp_path / "std").mkdir()
    assert_two_rank_std_equals_ase(tmp_path / "std", plugin, path, atoms.copy(), 1e-3)
