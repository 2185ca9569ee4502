"""`mlpot import metatomic`: a tiny metatomic model (nm, kJ/mol, built here) imported into the contract agrees
with metatomic's own ASE calculator (fp64, 1e-10) and runs in OpenMM and LAMMPS on 1 and 2 ranks."""
import numpy as np
import pytest

pytest.importorskip("metatomic.torch")
pytest.importorskip("metatomic_ase")

from lammps_util import cuau, lammps_cell, plugin  # noqa: F401,E402
from metatomic_ase import MetatomicCalculator  # noqa: E402
from metatomic_models import save_tiny_eam  # noqa: E402
from mlpot_plugins import load, units  # noqa: E402
from mlpot_plugins.ase import MLPotCalculator  # noqa: E402
from mlpot_plugins.cli import main  # noqa: E402

PROPS = ("energy", "forces", "stress", "energies")
BAR_PER_EV_PER_A3 = 1.6021765e6  # LAMMPS metal units nktv2p (its own constant)


def small_triclinic():
    atoms = cuau((2, 2, 2), seed=3, rattle=0.12)  # 32 atoms; cutoff 5 A > half the cell heights
    atoms.set_cell(lammps_cell(7.3, 7.5, 7.2, 80.0, 100.0, 70.0), scale_atoms=True)
    return atoms


VARIANTS = {"full-list": (True, False), "half-list": (False, False), "two-hop": (True, True)}


def import_tiny(d, variant):
    """The tiny model with a full or a half neighbour list, or a message-passing (two-hop) variant whose
    interaction range is twice its cutoff (LAMMPS then needs ghost centres); imported with the CLI."""
    full_list, two_hop = VARIANTS[variant]
    src = save_tiny_eam(d / f"tiny-eam-{variant}.pt", full_list=full_list, two_hop=two_hop)
    out = d / f"imported-{variant}.pt"
    assert main(["import", "metatomic", src, "-o", str(out)]) == 0
    return src, str(out)


@pytest.fixture(scope="module", params=list(VARIANTS))
def imported(request, tmp_path_factory):
    return import_tiny(tmp_path_factory.mktemp("mta"), request.param)


def test_metadata_from_capabilities(imported):
    meta = load(imported[1]).metadata
    assert meta["species"] == ["Cu", "Au"] and meta["dtype"] == "float64"
    assert meta["cutoff"] == pytest.approx(5.0, rel=1e-14)  # 0.5 nm
    two_hop = "two-hop" in imported[1]
    assert meta["interaction_range"] == pytest.approx(10.0 if two_hop else 5.0, rel=1e-14)
    assert (meta["length_unit"], meta["energy_unit"]) == ("angstrom", "eV")
    (entry,) = meta["torch_libraries"]
    assert entry["python_module"] == "metatomic.torch" and len(entry["shared_libraries"]) == 3


def test_agrees_with_metatomic_ase_calculator(imported):
    src, out = imported
    atoms = small_triclinic()
    ref = atoms.copy()
    ref.calc = MetatomicCalculator(src)
    atoms.calc = MLPotCalculator(out)
    for key in PROPS:
        want = ref.calc.get_property(key, ref)
        got = atoms.calc.get_property(key, atoms)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max(), err_msg=key)
    assert np.abs(ref.get_forces()).max() > 0.5 and abs(ref.get_stress()).max() > 1e-3  # non-trivial


def test_openmm_python_backend_agrees(imported):
    from openmm_systems import context_for, empty_system, energy_forces, topology_of

    from mlpot_plugins.openmm import create_force

    src, out = imported
    atoms = small_triclinic()
    system = empty_system(atoms)
    with pytest.raises(ValueError, match="cannot freeze.*backend='python'"):
        create_force(out, topology_of(atoms), backend="torch")  # openmm-torch freezes the module
    system.addForce(create_force(out, topology_of(atoms), backend="python"))
    e, f = energy_forces(context_for(system, atoms))
    atoms.calc = MetatomicCalculator(src)
    np.testing.assert_allclose(e, atoms.get_potential_energy() * units.OPENMM_ENERGY_FROM_MODEL, rtol=1e-10)
    f_ref = atoms.get_forces() * units.OPENMM_FORCE_FROM_MODEL
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-10 * np.abs(f_ref).max())


@pytest.mark.parametrize("variant", ["half-list", "two-hop"])  # two-hop: full list and ghost centres
def test_lammps_one_and_two_ranks(tmp_path, plugin, variant):
    """The C++ engine dlopens the model's `torch_libraries` itself (no LD_PRELOAD, no metatomic import in
    lmp) and then agrees with metatomic's ASE calculator."""
    from lammps_util import read_dump, results, run_lmp, write_data
    from test_lammps_mpi import SNAPSHOT, deck

    src, out = import_tiny(tmp_path, variant)
    atoms = cuau((3, 3, 3), seed=4, rattle=0.1)
    got = {}
    for n in (1, 2):
        work = tmp_path / f"n{n}"
        work.mkdir()
        write_data(work / "system.data", atoms)
        res = run_lmp(deck(plugin, out, SNAPSHOT), work, n)
        got[n] = results(res.stdout), read_dump(work / "dump.atoms")
    atoms.calc = MetatomicCalculator(src)
    assert got[1][0]["pe"] == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    stress = atoms.get_stress(voigt=False)  # eV/A^3; LAMMPS pressure (bar) = -stress
    for key, (a, b) in {"pxx": (0, 0), "pxy": (0, 1), "pyz": (1, 2)}.items():
        assert got[1][0][key] == pytest.approx(-stress[a, b] * BAR_PER_EV_PER_A3, rel=1e-9, abs=1e-6), key
    assert got[2][0]["pe"] == pytest.approx(got[1][0]["pe"], rel=1e-10)
    assert got[2][0]["pxy"] == pytest.approx(got[1][0]["pxy"], rel=1e-9)
    for col in got[1][1]:  # forces, per-atom energies and per-atom virials
        ref = got[1][1][col]
        np.testing.assert_allclose(got[2][1][col], ref, rtol=0, atol=1e-10 * np.abs(ref).max(), err_msg=col)
    f_ref = atoms.get_forces()
    for n in (1, 2):
        d = got[n][1]
        f = np.stack([d["fx"], d["fy"], d["fz"]], 1)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-10 * np.abs(f_ref).max(), err_msg=f"{n} ranks")
        np.testing.assert_allclose(d["c_pe"], atoms.get_potential_energies(), rtol=0, atol=1e-10)


def test_committee_with_an_imported_member_keeps_its_libraries(tmp_path):
    from mlpot_plugins.committee import make_committee

    src, out = import_tiny(tmp_path, "full-list")
    path = make_committee([out, "morse-cuau"], tmp_path / "c.pt")
    assert load(path).metadata["torch_libraries"] == load(out).metadata["torch_libraries"]
    atoms = small_triclinic()
    ref = atoms.copy()
    ref.calc = MetatomicCalculator(src)
    atoms.calc = MLPotCalculator(path)
    member = atoms.calc.evaluate(atoms)["member_energy"].numpy()
    assert member[0] == pytest.approx(ref.get_potential_energy(), rel=1e-12)


def test_float32_model(tmp_path):
    """dtype comes from the capabilities: a float32 model stays float32 and agrees in float32 precision."""
    src = save_tiny_eam(tmp_path / "f32.pt", dtype="float32")
    out = tmp_path / "imported-f32.pt"
    assert main(["import", "metatomic", src, "-o", str(out)]) == 0
    assert load(out).metadata["dtype"] == "float32"
    atoms = small_triclinic()
    ref = atoms.copy()
    ref.calc = MetatomicCalculator(src)
    atoms.calc = MLPotCalculator(out)
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), rtol=0, atol=1e-4 * np.abs(ref.get_forces()).max())


def test_energy_ensemble_becomes_a_committee(tmp_path):
    """A model with a per-atom energy_ensemble output imports as a committee: energy/forces are the model's
    energy output, member k equals a standalone model with member k's parameters (metatomic's calculator)."""
    scales = (0.9, 1.0, 1.15)
    src = save_tiny_eam(tmp_path / "ens.pt", ensemble_scales=scales, embed_scale=1.02)
    out = tmp_path / "ens-imported.pt"
    assert main(["import", "metatomic", src, "-o", str(out)]) == 0
    meta = load(out).metadata
    assert meta["ensemble_size"] == 3 and "forces_std" in meta["outputs"]
    atoms = small_triclinic()
    calc = MLPotCalculator(out)
    res = calc.evaluate(atoms)
    ref = atoms.copy()
    ref.calc = MetatomicCalculator(src)
    assert float(res["energy"]) == pytest.approx(ref.get_potential_energy(), rel=1e-12)
    members = []
    for k, s in enumerate(scales):
        m = atoms.copy()
        m.calc = MetatomicCalculator(save_tiny_eam(tmp_path / f"member{k}.pt", embed_scale=s))
        members.append((m.get_potential_energy(), m.get_forces(), m.get_stress(voigt=False) * m.get_volume()))
        assert float(res["member_energy"][k]) == pytest.approx(members[k][0], rel=1e-12)
        np.testing.assert_allclose(res["member_forces"][k].numpy(), members[k][1], rtol=0,
                                   atol=1e-10 * np.abs(members[k][1]).max())
        np.testing.assert_allclose(-res["member_virial"][k].numpy(), members[k][2], rtol=1e-10, atol=1e-10)
    f = np.array([m[1] for m in members])
    np.testing.assert_allclose(res["forces_std"].numpy(), np.sqrt(((f - f.mean(0)) ** 2).sum(-1).mean(0)), rtol=1e-10)
    assert res["forces_std"].numpy().min() > 5e-5  # members differ (1e-4 to 1e-3 eV/A here)


def test_energy_ensemble_uncertainty_live_in_lammps(tmp_path, plugin):
    """compute mlpot/atom on 2 ranks gives the imported ensemble's per-atom force std (= ASE's)."""
    from test_lammps_mpi import assert_two_rank_std_equals_ase

    src = save_tiny_eam(tmp_path / "ens.pt", ensemble_scales=(0.9, 1.0, 1.15))
    out = tmp_path / "ens-imported.pt"
    assert main(["import", "metatomic", src, "-o", str(out)]) == 0
    assert_two_rank_std_equals_ase(tmp_path, plugin, out, cuau((3, 3, 3), seed=2), min_std=5e-5)
