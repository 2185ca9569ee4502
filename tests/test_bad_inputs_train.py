"""Bad inputs and faults of `mlpot train`, `mlpot export` and `mlpot data emt`: each case asserts exit status 2
(argparse or the CLI's error line, never a traceback) and the words naming the problem and the fix. Extend
CONFIG_CASES with new config options."""
import math
import signal

import pytest
import torch
import yaml

from mlpot_plugins.runsafe import RunInterrupted
from mlpot_plugins.training.train import Trainer, load_config

from cli_util import run_cli
from test_equivariant_training import TINY_MODEL, tiny_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("tb")
    tiny_dataset(d / "train.extxyz", n=6)
    text = (d / "train.extxyz").read_text()
    (d / "truncated.extxyz").write_text(text[: len(text) // 2 + 7])
    (d / "nan.extxyz").write_text(_nan_forces(text))
    (d / "afile").write_text("x")
    (d / "garbage.pt").write_bytes(b"PK\x03\x04 not a zip")
    return d


def _nan_forces(text: str) -> str:
    """The extxyz with the first force component of the first atom replaced by NaN."""
    lines = text.splitlines()
    fields = lines[2].split()
    fields[-1] = "nan"
    lines[2] = " ".join(fields)
    return "\n".join(lines) + "\n"


def base_config(**training):
    tc = dict(epochs=1, lr=1e-2, batch_size=2, val_fraction=0.34, threads=1)
    tc.update(training)
    return {"data": {"train": "train.extxyz"}, "model": dict(TINY_MODEL, ensemble_size=1), "training": tc,
            "output": {"dir": "run"}}


def edit(change):
    def make():
        cfg = base_config()
        change(cfg)
        return cfg
    return make


# (config: dict, or raw text; words of the message)
CONFIG_CASES = [
    ("data: [1, 2\n", ["not valid YAML", "line 2", "fix the syntax"]),
    ("- data\n- model\n", ["must be a YAML mapping"]),
    ("data: [train.extxyz]\n", ["section 'data' must be a mapping"]),
    ("\x00\x01 binary", ["YAML"]),
    (edit(lambda c: c.update(extra={})), ["unknown config section", "extra"]),
    (edit(lambda c: c["data"].pop("train")), ["data.train", "required"]),
    (edit(lambda c: c["data"].update(train=5)), ["data.train=5", "file path"]),
    (edit(lambda c: c["data"].update(ood=["x.extxyz"])), ["data.ood must be a mapping"]),
    (edit(lambda c: c["model"].update(width=3)), ["unknown model option", "width"]),
    (edit(lambda c: c["model"].update(species="Cu")), ["model.species='Cu'", "list of strings"]),
    (edit(lambda c: c["model"].update(cutoff=-3.0)), ["model.cutoff=-3.0", "> 0"]),
    (edit(lambda c: c["model"].update(channels="eight")), ["model.channels='eight'", "not an integer"]),
    (edit(lambda c: c["model"].update(lmax=1.5)), ["model.lmax=1.5", "not an integer"]),
    (edit(lambda c: c["model"].update(ensemble_size=0)), ["model.ensemble_size=0", "positive"]),
    (edit(lambda c: c["model"].update(radial=3)), ["model.radial=3", "string"]),
    (edit(lambda c: c["training"].update(lrr=1)), ["unknown training option", "lrr"]),
    (edit(lambda c: c["training"].update(epochs="many")), ["training.epochs='many'", "whole number"]),
    (edit(lambda c: c["training"].update(epochs=0)), ["training.epochs=0", "positive"]),
    (edit(lambda c: c["training"].update(batch_size=-2)), ["training.batch_size=-2", "positive"]),
    (edit(lambda c: c["training"].update(lr=0.0)), ["training.lr=0.0", "> 0"]),
    (edit(lambda c: c["training"].update(lr="fast")), ["training.lr='fast'", "not a number"]),
    (edit(lambda c: c["training"].update(force_weight=float("nan"))), ["training.force_weight", "finite"]),
    (edit(lambda c: c["training"].update(val_fraction=1.5)), ["val_fraction must be in (0, 1)"]),
    (edit(lambda c: c["output"].update(dir="afile/run")), ["afile is a file, not a folder"]),
    (edit(lambda c: c["output"].update(dir="afile")), ["output.dir", "is a file"]),
    (edit(lambda c: c["data"].update(train="truncated.extxyz")), ["truncated.extxyz cannot be read", "regenerate"]),
    (edit(lambda c: c["data"].update(train="missing.extxyz")), ["missing.extxyz does not exist", "mlpot data emt"]),
    (edit(lambda c: c["data"].update(train="nan.extxyz")), ["structure 0 has NaN/inf", "regenerate the labels"]),
    (edit(lambda c: c["model"].update(species=["Au"])), ["not in model species", "model.species"]),
]


@pytest.mark.parametrize("config,words", CONFIG_CASES, ids=range(len(CONFIG_CASES)))
def test_bad_config_is_a_clear_error(folder, tmp_path, capsys, config, words):
    path = folder / f"cfg-{tmp_path.name}.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config()))
    code, err = run_cli(["train", path, "--no-progress"], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (folder / "run" / "last.pt").exists()  # nothing started


CLI_CASES = [
    (["train", "{d}/none.yaml"], ["does not exist"]),
    (["export", "{d}/garbage.pt", "{d}/x.pt"], ["not a checkpoint written by `mlpot train`"]),
    (["export", "{d}/train.extxyz", "{d}/afile/x.pt"], ["afile is a file, not a folder"]),
    (["data", "emt", "--scale", "0", "--out", "{d}/e.extxyz"], ["--scale", "positive"]),
    (["data", "emt", "--out", "{d}/afile/e.extxyz"], ["afile is a file, not a folder"]),
]


@pytest.mark.parametrize("argv,words", CLI_CASES, ids=[" ".join(c[0][:2]) for c in CLI_CASES])
def test_bad_command_line_is_a_clear_error(folder, capsys, argv, words):
    code, err = run_cli([a.format(d=folder) for a in argv], capsys)
    assert code == 2 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def write(folder, cfg, name):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_diverging_training_stops_with_a_clear_error(folder, capsys):
    """Class 3: lr = 1e30 used to finish with status 0 and NaN/inf weights exported."""
    cfg = base_config(lr=1e30, epochs=2)
    cfg["output"]["dir"] = "diverged"
    code, err = run_cli(["train", write(folder, cfg, "diverge"), "--no-progress"], capsys)
    assert code == 2 and "loss" in err and ("is inf" in err or "is nan" in err or "ran away" in err), err
    assert "lower training.lr (now 1e+30)" in err
    assert not (folder / "diverged" / "model.pt").exists()


def test_runaway_but_finite_losses_stop_the_training(folder, capsys):
    """Class 3: lr = 1e8 drove the losses to ~1e150 while staying finite; it finished with status 0."""
    cfg = base_config(lr=1e8, epochs=3)
    cfg["output"]["dir"] = "runaway"
    code, err = run_cli(["train", write(folder, cfg, "runaway"), "--no-progress"], capsys)
    assert code == 2 and "ran away" in err and "lower training.lr (now 1e+08)" in err, err
    assert not (folder / "runaway" / "model.pt").exists()


def test_config_that_is_a_directory_is_named(folder, capsys):
    code, err = run_cli(["train", str(folder)], capsys)
    assert code == 2 and "is a directory" in err and "config.yaml" in err, err


def test_resume_of_a_corrupt_checkpoint_is_named(folder, capsys):
    cfg = base_config()
    cfg["output"]["dir"] = "corrupt"
    (folder / "corrupt").mkdir()
    (folder / "corrupt" / "last.pt").write_bytes(b"garbage")
    code, err = run_cli(["train", write(folder, cfg, "corrupt"), "--resume"], capsys)
    assert code == 2 and "not a checkpoint written by `mlpot train`" in err
    code, err = run_cli(["train", write(folder, cfg, "corrupt")], capsys)
    assert code == 2 and "already holds a run" in err and "--resume" in err  # never overwritten


@pytest.mark.parametrize("stop", ["sigterm", "crash"])
def test_stop_mid_epoch_then_resume_continues_exactly(folder, stop):
    """Class 2: SIGTERM during an epoch writes last.pt after the current optimiser step (with the position
    inside the epoch) and raises RunInterrupted; a crash leaves the last periodic (checkpoint_minutes) save.
    --resume then ends bit-identically to an uninterrupted run."""
    def config(name, **training):
        cfg = base_config(epochs=3, lr=5e-3, **training)
        cfg["model"]["ensemble_size"] = 2
        cfg["output"]["dir"] = name
        return load_config(write(folder, cfg, name))

    quiet = dict(log=lambda *a: None)
    whole = Trainer(config("whole"), **quiet)
    whole.fit(progress=False)

    name = f"cut-{stop}"
    cut = Trainer(config(name, checkpoint_minutes=1e-9 if stop == "crash" else 10.0), **quiet)
    steps = []

    def stop_at_third_step(opt, args, kwargs):
        steps.append(1)
        if len(steps) == 3 and stop == "sigterm":  # epoch 2 of 3, first of its two batches
            signal.raise_signal(signal.SIGTERM)
        if len(steps) == 4 and stop == "crash":  # after the periodic save of step 3
            raise MemoryError("node lost")

    cut.opt.register_step_post_hook(stop_at_third_step)
    if stop == "sigterm":
        with pytest.raises(RunInterrupted, match="stopped by SIGTERM.*--resume") as exc:
            cut.fit(progress=False)
        assert exc.value.exit_code == 143
    else:
        with pytest.raises(MemoryError):
            cut.fit(progress=False)
    ck = torch.load(folder / name / "last.pt", weights_only=False)
    assert ck["epoch"] == 1 and ck["partial_epoch"]["next"] == 2
    resumed = Trainer(config(name), **quiet)
    resumed.resume(folder / name / "last.pt")
    resumed.fit(progress=False)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [r["train_loss"] for r in whole.history] == [r["train_loss"] for r in resumed.history]
    assert all(math.isfinite(r["val_loss"]) for r in resumed.history)
