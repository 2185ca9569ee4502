"""`mlpot learn` end to end on a tiny Cu committee with real EMT labels (ASE engine): one iteration exports a
loadable committee trained on real labels, SIGTERM during labelling resumes without repeating labels, and the
stopping rules (quiet exploration, label budget)."""
import json
import os
import signal

import numpy as np
import pytest
from ase.calculators.emt import EMT

from mlpot_plugins.learn.loop import run
from mlpot_plugins.model_file import load
from mlpot_plugins.runsafe import RunInterrupted
from mlpot_plugins.training.dataset import read_frames

from learn_util import learn_folder, write_learn_config


class CountingEMT(EMT):
    """Real EMT that records every geometry it labels (and can SIGTERM its own process after n labels)."""

    def __init__(self, kill_after=None):
        super().__init__()
        self.seen, self.kill_after = [], kill_after

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or ["positions"])
        key = tuple(np.round(self.atoms.positions.ravel(), 6))
        if key not in self.seen:
            self.seen.append(key)
            if self.kill_after is not None and len(self.seen) == self.kill_after:
                os.kill(os.getpid(), signal.SIGTERM)


def emt_label_error(frames):
    worst = 0.0
    for f in frames:
        a = f.copy()
        a.calc = EMT()
        worst = max(worst, abs(a.get_potential_energy() - f.get_potential_energy()),
                    float(np.abs(a.get_forces() - f.get_forces()).max()))
    return worst


@pytest.fixture(scope="module")
def one_iteration(tmp_path_factory):
    folder = learn_folder(tmp_path_factory.mktemp("learn"))
    cfg = write_learn_config(folder, stop={"label_budget": 3})
    report = run(cfg, progress=False, log=lambda *a: None)
    return folder / "run", report


def test_one_iteration_exports_a_committee_trained_on_real_emt_labels(one_iteration):
    out, report = one_iteration
    assert report["stop_reason"].startswith("label budget spent (3 of 3)")
    assert [r["iteration"] for r in report["iterations"]] == [0, 1]
    row = report["iterations"][1]
    assert row["n_labels"] == 3 and row["selected"] == 3 and row["n_train"] == 8 + 3
    labelled = read_frames(out / "iter_001" / "labelled.extxyz")
    assert len(labelled) == 3 and emt_label_error(labelled) < 1e-6   # extxyz keeps 8 decimals
    explored = read_frames(out / "iter_001" / "explored.extxyz")
    sigma = sorted((a.info["sigma_max"] for a in explored), reverse=True)
    # threshold mode labels the most uncertain frames: the labelled ones are the top of the explored ones
    assert sorted(a.info["sigma_max"] for a in labelled) == pytest.approx(sorted(sigma[:3]), rel=1e-6)
    for k in (0, 1):
        model = load(out / f"iter_{k:03d}" / "model.pt")
        assert model.metadata["ensemble_size"] == 2 and model.has_uncertainty
        f = labelled[0]
        res = model.compute_on(f.positions, f.cell.array, f.pbc, model.types_of(f.get_chemical_symbols()),
                               need_uncertainty=True)
        assert res["forces"].shape == (len(f), 3) and bool(np.isfinite(res["forces_std"].numpy()).all())
    saved = json.loads((out / "report.json").read_text())
    assert saved["models"][-1].endswith("iter_001/model.pt")
    assert (out / "learning_curve.png").stat().st_size > 1000 and (out / "sigma_vs_error.png").is_file()
    assert 0.0 < row["overhead_fraction"] < 1.0 and row["timings"]["label"] > 0 and row["timings"]["train"] > 0


def test_retraining_starts_from_the_previous_weights(one_iteration):
    out, report = one_iteration
    # iteration 1 starts from iteration 0's best weights: its first epoch's validation error is near the
    # end of iteration 0's, not back at the untrained level
    import torch

    h0 = torch.load(out / "iter_000" / "last.pt", weights_only=False)["history"]
    h1 = torch.load(out / "iter_001" / "last.pt", weights_only=False)["history"]
    untrained = h0[0]["val_force_rmse"]
    assert h1[0]["val_force_rmse"] < 1.5 * min(r["val_force_rmse"] for r in h0)
    assert len(h1) == 2 and untrained > 0


def test_sigterm_during_labelling_resumes_without_repeating_labels(tmp_path):
    folder = learn_folder(tmp_path)
    cfg = write_learn_config(folder, stop={"label_budget": 3, "max_iterations": 1})
    first = CountingEMT(kill_after=2)
    with pytest.raises(RunInterrupted, match="--resume") as exc:
        run(cfg, progress=False, log=lambda *a: None, reference=first)
    assert exc.value.exit_code == 128 + signal.SIGTERM
    assert len(first.seen) == 2
    model0 = (folder / "run" / "iter_000" / "model.pt").stat().st_mtime_ns
    with pytest.raises(Exception, match="--resume"):  # a fresh run must not overwrite the interrupted one
        run(cfg, progress=False, log=lambda *a: None)
    second = CountingEMT()
    report = run(cfg, resume=True, progress=False, log=lambda *a: None, reference=second)
    assert len(second.seen) == 1 and not set(second.seen) & set(first.seen)  # only the missing label
    assert (folder / "run" / "iter_000" / "model.pt").stat().st_mtime_ns == model0  # iteration 0 not redone
    labelled = read_frames(folder / "run" / "iter_001" / "labelled.extxyz")
    assert len(labelled) == 3 and report["n_labels"] == 3 and emt_label_error(labelled) < 1e-6
    keys = {tuple(np.round(a.positions.ravel(), 6)) for a in labelled}
    assert len(keys) == 3
    # a finished run resumed with a larger budget continues with the next iteration
    cfg = write_learn_config(folder, stop={"label_budget": 4, "max_iterations": 2})
    report = run(cfg, resume=True, progress=False, log=lambda *a: None)
    assert report["n_labels"] == 4 and [r["iteration"] for r in report["iterations"]] == [0, 1, 2]
    assert len(read_frames(folder / "run" / "labels.extxyz")) == 4


def test_quiet_exploration_stops_the_loop(tmp_path):
    folder = learn_folder(tmp_path)
    cfg = write_learn_config(folder, select={"threshold": 50.0})  # nothing reaches 50 eV/A
    report = run(cfg, progress=False, log=lambda *a: None)
    assert report["stop_reason"].startswith("converged") and report["n_labels"] == 0
    assert report["iterations"][-1]["explore"]["over_threshold"] == 0
    assert report["iterations"][-1]["explore"]["md_steps"] == 2 * 12
    assert not (folder / "run" / "iter_001" / "model.pt").exists()


@pytest.mark.parametrize("engine", ["lammps", "openmm"])
def test_engine_iteration_records_the_engines_own_uncertainty(tmp_path, engine):
    """One iteration explored in LAMMPS (compute mlpot/atom) or OpenMM (UncertaintyReporter): the per-atom
    std the loop selected by is the contract's (the ASE calculator's at the same positions) and the
    labels are real EMT ones."""
    from mlpot_plugins.ase import MLPotCalculator

    folder = learn_folder(tmp_path)
    cfg = write_learn_config(folder, explore={"engine": engine, "walkers": 1},
                             stop={"label_budget": 2, "max_iterations": 1})
    report = run(cfg, progress=False, log=lambda *a: None)
    assert report["n_labels"] == 2 and report["iterations"][1]["explore"]["md_steps"] == 12
    calc = MLPotCalculator(str(folder / "run" / "iter_000" / "model.pt"))
    explored = read_frames(folder / "run" / "iter_001" / "explored.extxyz")
    assert len(explored) == 4
    moved = 0.0
    for a in explored:
        b = a.copy()
        b.calc = calc
        assert np.abs(calc.get_property("forces_std", b) - a.arrays["forces_std"]).max() < 1e-6
        moved = max(moved, float(np.abs(a.positions - explored[0].positions).max()))
    assert moved > 1e-3  # the frames are successive MD states, not one frame repeated
    labelled = read_frames(folder / "run" / "iter_001" / "labelled.extxyz")
    assert len(labelled) == 2 and emt_label_error(labelled) < 1e-6
    assert load(folder / "run" / "iter_001" / "model.pt").has_uncertainty
