"""`mlpot data xtb` (mlpot_plugins/xtb_data.py): GFN2-xTB labels through tblite on seeded Langevin MD frames.

Short runs of water and alanine dipeptide: the labels are those of a direct tblite call on the geometry as
written, the forces are -dE/dx, the files are reproducible bit for bit, and the ood set is hotter and (ala2)
in another backbone region than the training set."""
import ase.io
import numpy as np
import pytest

pytest.importorskip("tblite")

from mlpot_plugins.cli import main as cli_main  # noqa: E402
from mlpot_plugins.xtb_data import (ALA2_BONDS, LABEL_ACCURACY, MOLECULES, OOD_PHI_PSI,  # noqa: E402
                                    TEMPERATURES, ala2, generate, one_omp_thread, phi_psi, start_structure,
                                    tblite_version)
from tblite.ase import TBLite  # noqa: E402


def _cli(tmp_path, name, *args):
    out = tmp_path / name
    assert cli_main(["data", "xtb", "--no-progress", "--out", str(out), *map(str, args)]) == 0
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("xtb")
    return {"water": _cli(d, "water.extxyz", "--system", "water", "--frames", 4, "--seed", 3),
            "ala2": _cli(d, "ala2.extxyz", "--system", "ala2", "--frames", 2, "--seed", 3),
            "ala2-ood": _cli(d, "ala2-ood.extxyz", "--system", "ala2", "--set", "ood", "--frames", 2, "--seed", 3)}


def _direct(atoms):
    a = atoms.copy()
    a.calc = TBLite(method="GFN2-xTB", verbosity=0, accuracy=LABEL_ACCURACY)
    with one_omp_thread():
        return a.get_potential_energy(), a.get_forces()


@pytest.mark.parametrize("name", ["water", "ala2", "ala2-ood"])
def test_labels_equal_a_direct_tblite_call_on_the_written_geometry(files, name):
    frames = ase.io.read(files[name], ":")
    assert [a.info["frame"] for a in frames] == list(range(len(frames)))
    for a in frames:
        assert a.info["source"] == f"GFN2-xTB via tblite {tblite_version()}" and a.info["seed"] == 3
        assert a.info["xtb_accuracy"] == LABEL_ACCURACY
        assert not a.pbc.any()
        energy, forces = _direct(a)
        assert abs(a.get_potential_energy() - energy) < 1e-8
        np.testing.assert_allclose(a.get_forces(), forces, atol=1e-8, rtol=0)
        assert np.abs(forces).max() > 0.05  # thermal frames, not a minimum


def test_the_training_loader_reads_the_sets(files):
    import torch

    from mlpot_plugins.training.dataset import read_frames, to_structures

    frames = read_frames(files["ala2"])
    (s, _) = to_structures(frames, ["H", "C", "N", "O"], 4.0, torch.float64)
    assert s.stress is None and s.volume == 0.0 and s.config_type in ("md300K", "md400K")
    assert torch.equal(s.forces, torch.as_tensor(frames[0].get_forces()))


def test_forces_are_minus_the_energy_gradient(files):
    atoms = ase.io.read(files["ala2"], index=1)
    calc = TBLite(method="GFN2-xTB", verbosity=0, accuracy=1e-4, cache_api=False)
    h = 1e-4
    rng = np.random.default_rng(0)
    with one_omp_thread():
        for i, k in zip(rng.choice(len(atoms), 6, replace=False), rng.integers(0, 3, 6)):
            e = []
            for s in (1, -1):
                b = atoms.copy()
                b.positions[i, k] += s * h
                b.calc = calc
                e.append(b.get_potential_energy())
            assert abs(-(e[0] - e[1]) / (2 * h) - atoms.get_forces()[i, k]) < 1e-4, (i, k)


def test_same_seed_same_file_other_seed_other_file(tmp_path, files):
    again = _cli(tmp_path, "w2.extxyz", "--system", "water", "--frames", 4, "--seed", 3)
    assert again.read_bytes() == files["water"].read_bytes()
    other = _cli(tmp_path, "w3.extxyz", "--system", "water", "--frames", 4, "--seed", 4)
    assert other.read_bytes() != files["water"].read_bytes()
    a = generate("ala2", "test", seed=1, frames=1, temperature=450)
    b = generate("ala2", "test", seed=1, frames=1, temperature=450)
    assert a[0].info["temperature"] == 450.0
    assert np.array_equal(a[0].positions, b[0].positions) and np.array_equal(a[0].get_forces(), b[0].get_forces())
    val = generate("water", "val", seed=3, frames=4)  # the set selects an independent stream
    assert not np.allclose(val[0].positions, ase.io.read(files["water"], index=0).positions)


def test_ood_is_hotter_and_in_another_backbone_region(files):
    train, ood = ase.io.read(files["ala2"], ":"), ase.io.read(files["ala2-ood"], ":")
    assert {a.info["temperature"] for a in train} <= set(TEMPERATURES)
    assert min(a.info["temperature"] for a in ood) > max(TEMPERATURES)
    for a in train + ood:
        assert np.allclose((a.info["phi"], a.info["psi"]), phi_psi(a), atol=1e-6)
    assert all(a.info["phi"] < -30 for a in train)  # C7eq basin
    assert all(a.info["phi"] > 20 for a in ood)  # started at phi = +80: never visited from C7eq at <= 600 K
    assert {a.info["set"] for a in ood} == {"ood"}


@pytest.mark.parametrize("which", ["train", "ood"])
def test_ala2_structure_is_chemically_sensible(which):
    atoms = start_structure("ala2", which)
    assert atoms.get_chemical_formula() == "C6H12N2O2"
    d = atoms.get_all_distances()
    bonded = np.zeros_like(d, dtype=bool)
    for i, j in ALA2_BONDS:
        bonded[i, j] = bonded[j, i] = True
        assert 0.9 <= d[i, j] <= 1.6, (i, j, d[i, j])
    assert len(ALA2_BONDS) == len(atoms) - 1  # a tree: every atom bonded, no ring
    hh = np.equal.outer(atoms.numbers, 1) & np.equal.outer(atoms.numbers, 1)
    off = ~bonded & ~np.eye(len(atoms), dtype=bool)
    assert d[off & hh].min() >= 1.5 and d[off & ~hh].min() >= 1.6
    p = atoms.positions  # L-alanine (S): ((N - CA) x (C - CA)) . (HA - CA) < 0
    assert np.dot(np.cross(p[6] - p[8], p[14] - p[8]), p[9] - p[8]) < 0
    phi, psi = phi_psi(atoms)
    expected = OOD_PHI_PSI if which == "ood" else (-81.4, 74.3)
    assert abs(phi - expected[0]) < 0.2 and abs(psi - expected[1]) < 0.2
    if which == "train":  # the hard-coded structure is the GFN2-xTB minimum
        assert np.abs(_direct(ala2())[1]).max() < 0.01  # eV/Å


@pytest.mark.parametrize("name", sorted(MOLECULES))
def test_every_named_molecule_is_a_closed_shell_hcno_molecule_xtb_can_label(name):
    atoms = start_structure(name, "train")
    assert set(atoms.get_chemical_symbols()) <= {"H", "C", "N", "O"} and atoms.numbers.sum() % 2 == 0
    d = atoms.get_all_distances() + 9 * np.eye(len(atoms))
    assert 0.9 <= d.min(axis=1).min() and d.min(axis=1).max() <= 1.6  # every atom bonded
    energy, forces = _direct(atoms)
    assert np.isfinite(energy) and np.abs(forces).max() < 2.0  # G2 (MP2) geometry: near the GFN2-xTB minimum
