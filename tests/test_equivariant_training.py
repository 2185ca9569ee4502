"""Training pipeline, EMT data, calibration metrics and the CLI of the equivariant model (tiny, fast)."""
import json

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from mlpot_plugins import load
from mlpot_plugins.cli import main as cli_main
from mlpot_plugins.emt_data import generate
from mlpot_plugins.training.calibration import fit_scale, miscalibration_area, uncertainty_metrics
from mlpot_plugins.training.train import Trainer, load_config, run, structure_loss

TINY_MODEL = dict(species=["Cu"], cutoff=3.0, lmax=2, n_layers=2, channels=4, n_basis=6, readout_hidden=4,
                  ensemble_size=2, dtype="float64")


def tiny_dataset(path, n=6, seed=0):
    import ase.io

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61 * rng.uniform(0.98, 1.02), cubic=True)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                           stress=atoms.get_stress())
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def write_config(tmp_path, **training):
    tiny_dataset(tmp_path / "train.extxyz")
    tiny_dataset(tmp_path / "test.extxyz", n=3, seed=1)
    tc = dict(epochs=3, lr=1e-2, batch_size=2, val_fraction=0.34, stress_weight=1.0, threads=1)
    tc.update(training)
    cfg = {"data": {"train": "train.extxyz", "test": "test.extxyz"}, "model": TINY_MODEL,
           "training": tc, "output": {"dir": "run", "name": "tiny"}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def total_loss(trainer):
    return sum(float(structure_loss(trainer.model, s, trainer.tc)["total"].detach()) for s in trainer.train_set)


@pytest.mark.parametrize("nll_weight", [0.0, 0.1])
def test_a_few_training_steps_lower_the_loss(tmp_path, nll_weight):
    trainer = Trainer(load_config(write_config(tmp_path, nll_weight=nll_weight, epochs=4)), log=lambda *a: None)
    before = total_loss(trainer)
    trainer.fit(progress=False)
    assert total_loss(trainer) < 0.7 * before


def test_train_report_export_and_resume(tmp_path):
    cfg = write_config(tmp_path)
    summary = run(cfg, progress=False, log=lambda *a: None)
    out = tmp_path / "run"
    for name in ("best.pt", "last.pt", "model.pt", "parity.png", "calibration.png", "metrics.json"):
        assert (out / name).is_file(), name
    model = load(out / "model.pt")
    assert model.metadata["uncertainty_scale"] == pytest.approx(summary["uncertainty_scale"])
    assert model.metadata["dtype"] == "float64" and model.metadata["ensemble_size"] == 2
    assert model.interaction_range == pytest.approx(2 * 3.0)
    assert set(json.loads((out / "metrics.json").read_text())["metrics"]) == {"val", "test"}
    with pytest.raises(ValueError, match="--resume"):
        run(cfg, progress=False, log=lambda *a: None)
    text = yaml.safe_load(cfg.read_text())
    text["training"]["epochs"] = 4
    cfg.write_text(yaml.safe_dump(text))
    summary2 = run(cfg, resume=True, progress=False, log=lambda *a: None)
    assert summary2["epochs"] == 4 and len(summary2["history"]) == 4
    # `mlpot export` of the checkpoint in float32
    assert cli_main(["export", str(out / "best.pt"), str(tmp_path / "f32.pt"), "--dtype", "float32"]) == 0
    assert load(tmp_path / "f32.pt").metadata["dtype"] == "float32"


@pytest.mark.parametrize("change,match", [
    (lambda c: c["data"].pop("train"), "data.train"),
    (lambda c: c["model"].update(width=3), "unknown model option"),
    (lambda c: c["training"].update(lrr=1), "unknown training option"),
    (lambda c: c.update(extra={}), "unknown config section")])
def test_bad_config_is_named(tmp_path, change, match):
    path = write_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_missing_species_and_missing_dataset_are_named(tmp_path):
    path = write_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"]["species"] = ["Au"]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"element\(s\) \['Cu'\] not in model species"):
        Trainer(load_config(path))
    assert cli_main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert cli_main(["export", str(tmp_path / "train.extxyz"), str(tmp_path / "x.pt")]) == 2


def test_emt_data_is_deterministic_and_labelled(tmp_path):
    a = generate("Cu", "ood-compressed", seed=3)
    b = generate("Cu", "ood-compressed", seed=3)
    c = generate("Cu", "ood-compressed", seed=4)
    assert len(a) == 20 and all(len(x) == 32 for x in a)
    assert all(np.array_equal(x.positions, y.positions) and x.get_potential_energy() == y.get_potential_energy()
               for x, y in zip(a, b))
    assert not np.allclose(a[0].positions, c[0].positions)
    # labels are EMT's
    atoms = a[0].copy()
    atoms.calc = EMT()
    assert np.allclose(atoms.get_forces(), a[0].get_forces())
    assert cli_main(["data", "emt", "--set", "ood-hot", "--system", "CuAu", "--out", str(tmp_path / "h.xyz")]) == 0
    import ase.io

    frames = ase.io.read(tmp_path / "h.xyz", ":")
    assert {"Cu", "Au"} <= set(frames[0].get_chemical_symbols()) and "forces" in frames[0].calc.results
    with pytest.raises(ValueError, match="unknown EMT system"):
        generate("Ni")


def test_calibration_metrics_on_known_gaussian_errors():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.05, 1.0, 20000)  # true per-atom std (3 components)
    errors = rng.normal(size=(20000, 3)) * (sigma / np.sqrt(3))[:, None]
    assert fit_scale(sigma / 2.5, errors) == pytest.approx(2.5, rel=0.02)
    assert miscalibration_area(sigma, errors) < 0.01
    assert miscalibration_area(sigma / 3, errors) > 0.2  # overconfident is detected
    m = uncertainty_metrics(sigma, errors)
    assert m["spearman_sigma_vs_abs_error"] > 0.5 and m["rms_z"] == pytest.approx(1.0, rel=0.02)
    shuffled = uncertainty_metrics(rng.permutation(sigma), errors)
    assert abs(shuffled["spearman_sigma_vs_abs_error"]) < 0.05
    assert shuffled["nll_per_component"] > m["nll_per_component"]
