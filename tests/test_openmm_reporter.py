"""UncertaintyReporter: per-atom committee force std during an OpenMM run equals ASE's forces_std."""
import numpy as np
import openmm
import openmm.app as app
import pytest

from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.openmm import (UncertaintyExceeded, UncertaintyReporter, UncertaintyWarning, create_force,
                                  read_uncertainty)
from openmm_systems import BACKENDS, COMMITTEE, cluster, empty_system, periodic_triclinic, topology_of
from mlpot_plugins import units


def simulation(atoms, model=COMMITTEE, backend="auto", ml_atoms=None):
    system = empty_system(atoms)
    system.addForce(create_force(model, topology_of(atoms), backend=backend, atoms=ml_atoms))
    sim = app.Simulation(topology_of(atoms), system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
    sim.context.setVelocitiesToTemperature(300, 7)
    return sim


def ase_std(atoms, positions_nm):
    atoms = atoms.copy()
    atoms.positions = positions_nm * units.ANGSTROM_PER_NM
    atoms.calc = MLPotCalculator(COMMITTEE)
    return atoms.calc.get_property("forces_std", atoms)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [periodic_triclinic, cluster])
def test_per_atom_std_equals_ase(tmp_path, make, backend):
    atoms = make()
    sim = simulation(atoms, backend=backend)
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "unc.txt", 4, pdb=tmp_path / "unc.pdb")
    sim.reporters.append(rep)
    sim.step(8)  # reports at steps 4 and 8, not every step
    # the python backend and the native plugin hand over the statistics of their own model call; torch needs a
    # second pass
    assert rep.same_call == (backend in ("python", "native"))
    assert rep.separate_evaluations == (0 if rep.same_call else 2)
    pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value
    rep.close()
    rec = read_uncertainty(tmp_path / "unc.npy")
    steps, stds = rec["step"], rec["forces_std"]
    assert steps.tolist() == [4, 8]
    expected = ase_std(atoms, pos)
    assert expected.max() > 1e-3
    np.testing.assert_allclose(stds[-1], expected, rtol=1e-10, atol=1e-14)
    rows = [line.split() for line in (tmp_path / "unc.txt").read_text().splitlines() if not line.startswith("#")]
    assert [int(r[0]) for r in rows] == [4, 8]
    for row, std in zip(rows, stds):
        assert float(row[1]) == pytest.approx(std.max(), abs=1e-6)
        assert float(row[2]) == pytest.approx(std.mean(), abs=1e-6)
        worst = int(row[5].split(":")[0])
        assert worst == int(np.argmax(std))
    # PDB: two models, B-factor column = std in meV/A
    pdb = (tmp_path / "unc.pdb").read_text().splitlines()
    assert sum(line.startswith("MODEL") for line in pdb) == 2
    b = np.array([float(line[60:66]) for line in pdb if line.startswith(("ATOM", "HETATM"))])
    np.testing.assert_allclose(b[-len(atoms):], np.minimum(stds[-1] * 1000, 999.99), atol=0.006)


def test_report_values_match_ase_at_report_step(tmp_path):
    """The per-atom array written at a report is ASE's forces_std at that step's positions."""
    atoms = periodic_triclinic()
    sim = simulation(atoms)
    sim.step(3)
    pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 3)
    sim.reporters.append(rep)
    sim.step(3)  # only report: step 6
    rep_pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value
    rep.close()
    rec = read_uncertainty(tmp_path / "u.npy")
    steps, stds = rec["step"], rec["forces_std"]
    assert steps.tolist() == [6]
    np.testing.assert_allclose(stds[0], ase_std(atoms, rep_pos), rtol=1e-10, atol=1e-14)
    assert not np.allclose(stds[0], ase_std(atoms, pos), rtol=1e-6)  # it is not a stale configuration


def test_threshold_stop_names_atoms(tmp_path):
    atoms = cluster()
    sim = simulation(atoms)
    std0 = ase_std(atoms, atoms.positions * units.NM_PER_ANGSTROM)
    threshold = float(np.sort(std0)[-3])  # about two atoms above it
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 1, threshold=threshold, action="stop")
    sim.reporters.append(rep)
    with pytest.raises(UncertaintyExceeded, match=r"step 1: per-atom force std exceeds the threshold") as info:
        sim.step(5)
    assert sim.currentStep == 1  # stopped at the first report, before going on
    std = rep.last_std
    over = sorted(np.nonzero(std > threshold)[0].tolist(), key=lambda k: -std[k])
    assert info.value.atoms == over and len(over) >= 1
    assert str(over[0]) in str(info.value)
    assert info.value.std == pytest.approx(std[over].tolist())
    rep.close()
    assert (tmp_path / "u.txt").read_text().splitlines()[-1].startswith("1 ")  # the record was written


def test_threshold_warn_and_subset_indices(tmp_path):
    atoms = cluster()
    subset = [3, 8, 9, 10, 11, 12, 20]
    system = empty_system(atoms)
    system.addForce(create_force(COMMITTEE, topology_of(atoms)))
    sim = app.Simulation(topology_of(atoms), system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 2, threshold=1e-9, atoms=subset)
    sim.reporters.append(rep)
    with pytest.warns(UncertaintyWarning, match=r"on 7 atom\(s\)") as record:
        sim.step(2)
    assert sim.currentStep == 2
    sub = atoms[subset]
    pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value[subset]
    np.testing.assert_allclose(rep.last_std, ase_std(sub, pos), rtol=1e-10)
    worst = subset[int(np.argmax(rep.last_std))]
    assert f" {worst} (" in str(record[0].message) or f": {worst} (" in str(record[0].message)
    rep.close()
    row = (tmp_path / "u.txt").read_text().splitlines()[-1].split()
    assert int(row[5].split(":")[0]) == worst  # system index, not ML-region index


def test_reports_energy_std_of_a_symmetric_compressed_lattice(tmp_path):
    """Zero force std but a large per-atom energy std: the reporter records both (contract names)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61 * 0.9, cubic=True).repeat((2, 2, 2))
    system = empty_system(atoms)
    system.addForce(create_force("morse-cuau", topology_of(atoms)))
    sim = app.Simulation(topology_of(atoms), system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)  # at rest: stays symmetric
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 1)
    sim.reporters.append(rep)
    sim.step(1)
    rep.close()
    ref = atoms.copy()
    ref.calc = MLPotCalculator(COMMITTEE)
    rec = read_uncertainty(tmp_path / "u.npy")
    np.testing.assert_allclose(rec["forces_std"][0], 0.0, atol=1e-9)
    np.testing.assert_allclose(rec["energies_std"][0], ref.calc.get_property("energies_std", ref), rtol=1e-10)
    assert rec["energies_std"][0].min() > 1e-3
    assert rec["energy_std"][0] == pytest.approx(ref.calc.get_property("energy_std", ref), rel=1e-10)
    row = (tmp_path / "u.txt").read_text().splitlines()[-1].split()
    assert float(row[1]) < 1e-6 and float(row[3]) == pytest.approx(rec["energies_std"][0].max(), abs=1e-6)
    assert float(row[4]) == pytest.approx(rec["energy_std"][0], abs=1e-6)


def test_continued_run_appends_and_drops_a_cut_record(tmp_path):
    """A new reporter on the files of an earlier run continues them (Class 2: nothing is lost)."""
    atoms = cluster()
    sim = simulation(atoms)
    files = dict(file=tmp_path / "u.txt", pdb=tmp_path / "u.pdb")
    rep = UncertaintyReporter(COMMITTEE, files["file"], 2, pdb=files["pdb"])
    sim.reporters.append(rep)
    sim.step(4)
    rep.close()
    sim.reporters.clear()
    with open(tmp_path / "u.npy", "ab") as f:  # a run killed in the middle of a record
        np.save(f, np.int64(99))
    with open(tmp_path / "u.txt", "a") as f:
        f.write("99 0.1")
    rep = UncertaintyReporter(COMMITTEE, files["file"], 2, pdb=files["pdb"])  # the continued run
    sim.reporters.append(rep)
    sim.step(4)
    rep.close()
    rec = read_uncertainty(tmp_path / "u.npy")
    assert rec["step"].tolist() == [2, 4, 6, 8]
    lines = (tmp_path / "u.txt").read_text().splitlines()
    assert lines[0].startswith("# step") and sum(line.startswith("#") for line in lines) == 1
    assert [int(line.split()[0]) for line in lines[1:]] == [2, 4, 6, 8]
    pdb = (tmp_path / "u.pdb").read_text().splitlines()
    assert [int(line.split()[1]) for line in pdb if line.startswith("MODEL")] == [1, 2, 3, 4]
    # append=False starts afresh
    rep = UncertaintyReporter(COMMITTEE, files["file"], 2, pdb=files["pdb"], append=False)
    rep.close()
    assert read_uncertainty(tmp_path / "u.npy")["step"].tolist() == []
    assert (tmp_path / "u.txt").read_text().count("\n") == 1


@pytest.mark.parametrize("ml_atoms", [None, [3, 8, 9, 10, 11, 12, 20]])
def test_same_call_statistics_cost_no_extra_model_evaluation(tmp_path, ml_atoms):
    """python backend driving with the reporter's committee: per report one model call gives forces and
    statistics (equal to ASE's at that step), and the next step reuses it: N steps cost N evaluations."""
    from mlpot_plugins.openmm.python_force import computations_of

    atoms = periodic_triclinic()
    sim = simulation(atoms, backend="python", ml_atoms=ml_atoms)
    (comp,) = computations_of(sim.system.getForce(0))
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 3, atoms=ml_atoms)
    sim.reporters.append(rep)
    sim.step(9)  # reports at 3, 6, 9
    assert rep.same_call and rep.separate_evaluations == 0
    # one call per positions: at a report OpenMM's getState evaluates (with the statistics) and the next
    # step reuses it, so 9 steps + the report at step 9 = 10 calls, and step 10 adds none
    assert comp.evaluations == 10
    sim.step(1)
    assert comp.evaluations == 10
    assert read_uncertainty(tmp_path / "u.npy")["step"].tolist() == [3, 6, 9]
    rep.close()


@pytest.mark.skipif("native" not in BACKENDS, reason="the native plugin is not usable here")
@pytest.mark.parametrize("ml_atoms", [None, [3, 8, 9, 10, 11, 12, 20]])
def test_native_same_call_statistics_cost_no_extra_model_evaluation(tmp_path, ml_atoms):
    """native plugin driving with the reporter's committee: the report step's State evaluation computes the
    statistics and the integrator's next step reuses it (same positions), so N steps cost N model calls."""
    from mlpot_plugins.openmm import native

    atoms = periodic_triclinic()
    sim = simulation(atoms, backend="native", ml_atoms=ml_atoms)
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 3, atoms=ml_atoms)
    sim.reporters.append(rep)
    sim.step(9)  # reports at 3, 6, 9
    assert rep.same_call and rep.separate_evaluations == 0
    tag = native.native_force_info(sim.system.getForce(0))["tag"]
    n = len(atoms) if ml_atoms is None else len(ml_atoms)
    got = native.read_uncertainty(tag, sim.context, n)
    assert got["step"] == 9 and got["evaluation"] == 10  # positions x0..x9, each evaluated once
    sim.step(3)
    got = native.read_uncertainty(tag, sim.context, n)
    assert got["step"] == 12 and got["evaluation"] == 13
    pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value
    sub = atoms if ml_atoms is None else atoms[ml_atoms]
    np.testing.assert_allclose(rep.last_std, ase_std(sub, pos if ml_atoms is None else pos[ml_atoms]),
                               rtol=1e-10, atol=1e-14)
    rep.close()


def test_same_call_values_equal_ase_at_the_report_step(tmp_path):
    atoms = cluster()
    ml_atoms = [3, 8, 9, 10, 11, 12, 20]
    sim = simulation(atoms, backend="python", ml_atoms=ml_atoms)
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 4, atoms=ml_atoms)
    sim.reporters.append(rep)
    sim.step(4)
    pos = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value[ml_atoms]
    assert rep.same_call
    np.testing.assert_allclose(rep.last_std, ase_std(atoms[ml_atoms], pos), rtol=1e-10, atol=1e-14)
    assert rep.last["energy_std"] > 0 and rep.last["energies_std"].shape == (len(ml_atoms),)
    rep.close()


def test_reporter_with_another_model_or_region_evaluates_itself(tmp_path):
    """Only the same committee on the same ML region is taken from the driving force."""
    atoms = cluster()
    sim = simulation(atoms, model="morse-cuau", backend="python")
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "a.txt", 2)
    sim.reporters.append(rep)
    sim.step(2)
    assert not rep.same_call and rep.separate_evaluations == 1
    sim = simulation(atoms, backend="python")
    rep = UncertaintyReporter(COMMITTEE, tmp_path / "b.txt", 2, atoms=[0, 1, 2])
    sim.reporters.append(rep)
    sim.step(2)
    assert not rep.same_call and rep.separate_evaluations == 1
