"""Alanine dipeptide (issue 15 items 3-4): the shipped ala2-xtb committee, its engines (ASE, LAMMPS units
real, OpenMM ML/MM in water) and the committee reweighting of observables (mlpot_plugins/observables.py)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from mlpot_plugins import observables as obs
from mlpot_plugins import units
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.model_file import load
from mlpot_plugins.pretrained.build_ala2_xtb import uncertainty_threshold
from mlpot_plugins.xtb_data import OOD_PHI_PSI, _rotate_backbone, ala2, phi_psi

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ala2-xtb"


# ---- observables ---------------------------------------------------------------------------------

def test_member_weights_are_normalised_boltzmann_ratios():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(50, 4)) * 0.02 + rng.normal(size=(50, 1))  # [T, K] eV
    w = obs.member_weights(e, 300.0)
    assert w.shape == (4, 50)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    beta = 1.0 / (1.380649e-23 / units.ELEMENTARY_CHARGE * 300.0)  # 1/(k_B T) from the SI constants
    d = e - e.mean(axis=1, keepdims=True)
    for k in range(4):  # ratio of any two frames' weights = the member's Boltzmann factor ratio
        np.testing.assert_allclose(w[k, 7] / w[k, 31], np.exp(-beta * (d[7, k] - d[31, k])), rtol=1e-10)
    same = obs.member_weights(np.repeat(e[:, :1], 3, axis=1), 300.0)  # members equal to the mean: no reweighting
    np.testing.assert_allclose(same, 1.0 / 50, rtol=1e-12)


def test_reweighting_recovers_a_members_harmonic_ensemble():
    """Samples of E_mean = k x^2/2 reweighted to a member E_k = k_k x^2/2 give <x^2> = kT / k_k."""
    kt = obs.KB_EV_PER_K * 300.0
    stiff = np.array([0.8, 1.0, 1.2])  # eV/A^2; mean 1.0 = the sampling potential
    x = np.random.default_rng(1).normal(scale=np.sqrt(kt / stiff.mean()), size=200_000)
    w = obs.member_weights(0.5 * stiff[None, :] * x[:, None] ** 2, 300.0)
    np.testing.assert_allclose(w @ x ** 2, kt / stiff, rtol=0.02)
    ess = obs.effective_sample_size(w)
    assert ess[1] == pytest.approx(len(x)) and (ess[[0, 2]] < 0.99 * len(x)).all()


def test_dihedrals_of_known_geometries():
    atoms = ala2()
    phi, psi = obs.ala2_phi_psi(atoms.positions)
    assert (phi, psi) == pytest.approx(phi_psi(atoms), abs=1e-9)
    assert phi == pytest.approx(-81.4, abs=0.05) and psi == pytest.approx(74.3, abs=0.05)  # C7eq
    ood = _rotate_backbone(atoms, *OOD_PHI_PSI)
    assert obs.ala2_phi_psi(ood.positions) == pytest.approx(OOD_PHI_PSI, abs=1e-6)
    # a hand-built quadruplet: b-c along z, a along x, d rotated by +t about z (IUPAC: clockwise = positive)
    t = np.radians([60.0, -120.0, 180.0, 0.0])
    pos = np.zeros((4, 4, 3))
    pos[:, 0] = [1.0, 0, 0]
    pos[:, 2] = [0, 0, 1.5]
    pos[:, 3] = np.stack([np.cos(t), np.sin(t), np.full(4, 1.5)], axis=1)
    got = obs.dihedrals(pos, (0, 1, 2, 3))
    ref = [Atoms("C4", p).get_dihedral(0, 1, 2, 3) for p in pos]
    np.testing.assert_allclose(np.mod(got, 360.0), np.mod(ref, 360.0), atol=1e-9)
    np.testing.assert_allclose(np.abs(got), [60.0, 120.0, 180.0, 0.0], atol=1e-9)


def test_histograms_credible_intervals_and_jsd():
    rng = np.random.default_rng(2)
    phi, psi = rng.uniform(-180, 0, 400), rng.uniform(0, 180, 400)
    w = np.full((3, 400), 1 / 400.0)
    h = obs.histogram2d(phi, psi, w, bins=18)
    assert h.shape == (3, 18, 18) and np.allclose(h.sum(axis=(1, 2)), 1.0)
    assert h[:, 9:, :].sum() == 0 and h[:, :, :9].sum() == 0  # phi < 0, psi > 0 only
    ci = obs.credible_interval(h)
    np.testing.assert_allclose(ci["std"], 0.0, atol=1e-15)
    assert obs.jensen_shannon(h[0], h[1]) == pytest.approx(0.0, abs=1e-12)
    other = obs.histogram2d(phi + 180.0, psi - 180.0, bins=18)  # disjoint support: 1 bit
    assert obs.jensen_shannon(h[0], other) == pytest.approx(1.0, abs=1e-12)


# ---- the shipped model -------------------------------------------------------------------------------

def test_shipped_model_loads_with_calibration_and_threshold():
    model = load(MODEL)
    meta = model.metadata
    assert meta["species"] == ["H", "C", "N", "O"] and meta["ensemble_size"] == 4
    assert meta["uncertainty_scale"] > 0 and meta["dtype"] == "float64"
    assert any("GFN2-xTB" in r for r in meta["references"])  # export_checkpoint(references=...) replaced EMT's
    threshold = uncertainty_threshold(model)
    assert 0 < threshold < 5.0
    # the ASE calculator returns exactly the model's contract outputs
    atoms = ala2()
    atoms.rattle(0.05, seed=3)
    calc = MLPotCalculator(MODEL)
    atoms.calc = calc
    direct = model.compute_on(atoms.positions, np.zeros((3, 3)), [False] * 3, model.types_of(atoms.get_chemical_symbols()),
                              need_virial=False, need_uncertainty=True)
    assert atoms.get_potential_energy() == float(direct["energy"])
    np.testing.assert_array_equal(atoms.get_forces(), direct["forces"].numpy())
    np.testing.assert_allclose(calc.get_property("forces_std", atoms), direct["forces_std"].numpy(), rtol=1e-12)


def test_shipped_model_against_xtb_in_and_out_of_distribution():
    """Near the C7eq minimum the committee follows GFN2-xTB; on the phi > 0 side (never trained) its
    uncertainty is higher, and it is within the threshold in distribution."""
    from mlpot_plugins.xtb_data import calculator, one_omp_thread

    rng = np.random.default_rng(4)
    errs, sigmas = {}, {}
    for name, start in (("id", ala2()), ("ood", _rotate_backbone(ala2(), *OOD_PHI_PSI))):
        atoms = start.copy()
        atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
        with one_omp_thread():
            atoms.calc = calculator(0.01)
            ref = atoms.get_forces()
        atoms.calc = MLPotCalculator(MODEL)
        errs[name] = np.sqrt(np.mean((atoms.get_forces() - ref) ** 2))
        sigmas[name] = np.median(atoms.calc.get_property("forces_std", atoms))
    assert errs["id"] < 0.3, errs  # held-out test RMSE 0.12 eV/A (docs/molecules.md); xTB forces here ~1 eV/A
    assert errs["ood"] > errs["id"] and sigmas["ood"] > 1.5 * sigmas["id"], (errs, sigmas)


# ---- engines -------------------------------------------------------------------------------------------

from lammps_util import lammps_eval, lmp_factory, plugin, read_dump  # noqa: E402,F401  (fixtures)


def test_lammps_units_real_forces_equal_the_ase_calculator(lmp_factory):
    atoms = ala2()
    atoms.rattle(0.05, seed=5)
    atoms.positions += 12.0
    atoms.cell = np.eye(3) * 24.0
    atoms.pbc = False
    out = lammps_eval(lmp_factory, atoms, MODEL, boundary="f f f", units="real", elements=("H", "C", "N", "O"))
    atoms.calc = MLPotCalculator(MODEL)
    kcal = units.KCAL_PER_MOL_PER_EV
    scale = np.abs(atoms.get_forces()).max()
    assert scale > 0.5
    assert out["energy"] == pytest.approx(atoms.get_potential_energy() * kcal, rel=1e-12)
    np.testing.assert_allclose(out["forces"], atoms.get_forces() * kcal, rtol=0, atol=1e-10 * scale * kcal)
    np.testing.assert_allclose(out["energies"], atoms.get_potential_energies() * kcal, rtol=0, atol=1e-9 * kcal)


def test_lammps_example_deck_runs_and_reports_uncertainty_in_kcal(plugin, tmp_path):
    for name in ("in.ala2_vacuum", "ala2.data"):
        (tmp_path / name).write_bytes((ROOT / "examples" / "lammps" / name).read_bytes())
    deck = (tmp_path / "in.ala2_vacuum").read_text()
    res = subprocess.run([str(Path(sys.executable).parent / "lmp"), "-in", "in.ala2_vacuum", "-var", "steps", "20"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    threshold_kcal = float(deck.split("variable threshold index")[1].split()[0])
    assert threshold_kcal == pytest.approx(uncertainty_threshold(MODEL) * units.KCAL_PER_MOL_PER_EV, rel=2e-3)
    assert "ended at step 20:" in res.stdout  # 300 K from the minimum: no alarm
    # the step-0 dump's per-atom force std (kcal/mol/A) = the ASE calculator's (eV/A) x 23.06
    dump = read_dump(tmp_path / "ala2.lammpstrj")
    rows = (tmp_path / "ala2.data").read_text().split("Atoms # atomic")[1].split("\n")
    data = np.array([[float(v) for v in r.split()] for r in rows if r.strip()])
    atoms = ala2()
    assert list(data[:, 1].astype(int)) == [["H", "C", "N", "O"].index(e) + 1 for e in atoms.get_chemical_symbols()]
    atoms.positions = data[:, 2:5]
    calc = MLPotCalculator(MODEL)
    np.testing.assert_allclose(dump["c_u[1]"], calc.get_property("forces_std", atoms) * units.KCAL_PER_MOL_PER_EV,
                               rtol=1e-8)


@pytest.mark.parametrize("threshold", [None, 0.01], ids=["calibrated", "tiny"])
def test_openmm_example_in_water_runs_and_stops_on_the_threshold(tmp_path, threshold):
    """The calibrated threshold does not fire in 20 steps at 300 K from the minimum; a tiny one stops the run
    at the first report, with the frame saved."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MLPOT_EXAMPLE_QUICK="1", OMP_NUM_THREADS="1")
    extra = [] if threshold is None else ["--threshold", str(threshold)]
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "openmm_ala2_water.py"), "--out",
                          str(tmp_path / "out"), *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "22 ML atoms" in res.stdout and "TIP3P waters" in res.stdout
    out = tmp_path / "out"
    assert (out / "start.pdb").stat().st_size > 0 and (out / "trajectory.dcd").stat().st_size > 0
    rows = np.loadtxt(out / "uncertainty.txt", usecols=(0, 1), ndmin=2)
    assert (rows[:, 1] > 0).all()
    if threshold is None:
        assert list(rows[:, 0]) == [5, 10, 15, 20] and "stopped" not in res.stdout
        assert (rows[:, 1] <= uncertainty_threshold(MODEL)).all()
    else:
        assert "stopped: step 5" in res.stdout and list(rows[:, 0]) == [5]
        assert rows[0, 1] > threshold and (out / "extrapolating.pdb").stat().st_size > 0
