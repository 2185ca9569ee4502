"""Training options of `mlpot train` / `mlpot learn`: one model call per batch (the loss equals the mean of the
per-structure losses), ``training.init_from`` (continue an exported model or a checkpoint) and
``training.lr_schedule: cosine``; and ``explore.stop_after`` of the active-learning loop."""
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpot_plugins import load
from mlpot_plugins.learn.loop import run as learn
from mlpot_plugins.training.dataset import to_structures
from mlpot_plugins.training.train import Trainer, batch_loss, load_config, run, structure_loss

from learn_util import learn_folder, write_learn_config
from test_equivariant_training import TINY_MODEL, write_config


def mixed_structures(dtype=torch.float64):
    """Cu structures of different sizes and kinds: a 4-atom cubic cell, a 2x1x1 supercell, a free cluster."""
    rng = np.random.default_rng(3)
    cubic = bulk("Cu", "fcc", a=3.6, cubic=True)
    cluster = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))[:6]
    cluster.pbc = False
    cluster.cell = [0.0, 0.0, 0.0]
    frames = [cubic.copy(), cubic.repeat((2, 1, 1)), cluster]
    for a in frames:
        a.positions += rng.normal(0.0, 0.08, a.positions.shape)
        a.calc = EMT()
        a.get_forces()
    return to_structures(frames, ["Cu"], 3.0, dtype, "mixed")


def test_batched_loss_equals_the_mean_of_the_per_structure_losses(tmp_path):
    trainer = Trainer(load_config(write_config(tmp_path, stress_weight=0.0, energy_weight=3.0)), log=lambda *a: None)
    batch = mixed_structures()
    assert len({s.n_atoms for s in batch}) == 3
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    single = sum(structure_loss(trainer.model, s, trainer.tc)["total"] for s in batch) / len(batch)
    joint = batch_loss(trainer.model, batch, trainer.tc)
    assert float(joint.detach()) == pytest.approx(float(single.detach()), rel=1e-12)
    g1 = torch.autograd.grad(single, params, allow_unused=True)
    g2 = torch.autograd.grad(batch_loss(trainer.model, batch, trainer.tc), params, allow_unused=True)
    for a, b in zip(g1, g2):
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_training_continues_from_an_exported_model_or_a_checkpoint(tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    run(write_config(first, stress_weight=0.0, epochs=2), progress=False, log=lambda *a: None)
    exported = load(first / "run" / "model.pt")
    for start in (first / "run" / "model.pt", first / "run" / "best.pt"):
        second = tmp_path / f"second-{start.stem}"
        second.mkdir()
        trainer = Trainer(load_config(write_config(second, stress_weight=0.0, init_from=str(start))),
                          log=lambda *a: None)
        for s in trainer.train_set:
            mine = trainer.model.compute(s.positions, s.types, s.edge_index, s.shifts, s.n_atoms, False, True)
            ref = exported.module.compute(s.positions, s.types, s.edge_index, s.shifts, s.n_atoms, False, True)
            assert torch.allclose(mine["forces"], ref["forces"], atol=1e-10)
            assert float(mine["energy"]) == pytest.approx(float(ref["energy"]), abs=1e-9)
            assert torch.allclose(mine["member_forces"], ref["member_forces"], atol=1e-10)


@pytest.mark.parametrize("change,match", [
    (dict(init_from="nope.pt"), "training.init_from .*does not exist"),
    (dict(init_from="train.extxyz"), "neither a `mlpot train` checkpoint nor an exported model"),
    (dict(lr_schedule="step"), "training.lr_schedule='step' is not one of")])
def test_bad_init_from_and_schedule_are_named(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        Trainer(load_config(write_config(tmp_path, **change)), log=lambda *a: None)


def test_init_from_a_different_architecture_names_the_options(tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    run(write_config(first, epochs=1), progress=False, log=lambda *a: None)
    path = write_config(tmp_path, init_from=str(first / "run" / "model.pt"))
    cfg = yaml.safe_load(path.read_text())
    cfg["model"] = dict(TINY_MODEL, channels=6)
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"model.channels=6 but the start has 4"):
        Trainer(load_config(path), log=lambda *a: None)


def test_cosine_schedule_ends_at_min_lr(tmp_path):
    summary = run(write_config(tmp_path, lr_schedule="cosine", lr=1e-2, min_lr=1e-4, epochs=3,
                               early_stopping_patience=10), progress=False, log=lambda *a: None)
    lrs = [row["lr"] for row in summary["history"]]
    assert lrs[0] < 1e-2 and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(1e-4)


def test_cosine_schedule_resumed_with_more_epochs_still_ends_at_min_lr(tmp_path):
    cfg = write_config(tmp_path, lr_schedule="cosine", lr=1e-2, min_lr=1e-4, epochs=2, early_stopping_patience=10)
    run(cfg, progress=False, log=lambda *a: None)
    text = yaml.safe_load(cfg.read_text())
    text["training"]["epochs"] = 4
    cfg.write_text(yaml.safe_dump(text))
    lrs = [row["lr"] for row in run(cfg, resume=True, progress=False, log=lambda *a: None)["history"]]
    assert len(lrs) == 4 and lrs == sorted(lrs, reverse=True)  # no restart upwards (torch cycles past T_max)
    assert lrs[-1] == pytest.approx(1e-4)


def test_walkers_stop_after_enough_frames_over_the_threshold(tmp_path):
    folder = learn_folder(tmp_path)
    cfg = write_learn_config(folder, explore={"stop_after": 2}, stop={"label_budget": 3, "max_iterations": 1})
    report = learn(cfg, progress=False, log=lambda *a: None)
    ex = report["iterations"][1]["explore"]
    # threshold 1e-4: every checked frame is over it, so each of the 2 walkers ends after 2 checks of 3 steps
    assert ex["stopped_early"] == 2 and ex["aborted_walkers"] == 0
    assert ex["candidates"] == 4 and ex["md_steps"] == 2 * 2 * 3
    assert report["n_labels"] == 3
