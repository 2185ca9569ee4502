"""Class 2 of issue 10 for the long Holstein commands: a real `mlpot holstein generate` / `train` killed with
SIGTERM (after its first periodic save is on disk) exits 143 with the state saved atomically, and the same
command with --resume ends with the same result as an uninterrupted run: the data file byte for byte, the
trained weights bit for bit (CPU, no --budget). Bad --resume inputs are clear errors (exit status 2)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mlpot_plugins
from mlpot_plugins.cli import main

from cli_util import run_cli

GEN = ["--L", "6", "--quench", "2", "--domains", "2", "--steps", "200", "--domain-steps", "60", "--stride", "5",
       "--save-every", "20"]
TRAIN = ["--epochs", "12", "--channels", "2", "--hidden", "4", "--ensemble", "2", "--radius2", "2", "--batch", "2",
         "--save-minutes", "0"]


def kill_after_first_save(argv, state: Path):
    """Run `mlpot` in a subprocess, SIGTERM it once ``state`` exists -> (exit status, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(mlpot_plugins.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "mlpot_plugins.cli"] + [str(a) for a in argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not state.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert state.exists(), "no periodic save appeared"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An uninterrupted generation (the reference) and the data the training tests use."""
    d = tmp_path_factory.mktemp("hi")
    torch.set_num_threads(1)
    assert main(["holstein", "generate", "--out", str(d / "whole.pt")] + GEN) == 0
    return d / "whole.pt"


def test_generate_killed_and_resumed_writes_the_same_file(data, tmp_path, capsys):
    out = tmp_path / "g.pt"
    partial = tmp_path / "g.pt.partial"
    code, err = kill_after_first_save(["holstein", "generate", "--out", out] + GEN, partial)
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert not out.exists() and partial.exists() and not list(tmp_path.glob(".*.tmp"))
    st = torch.load(partial, weights_only=True)
    assert st["run"] == 0 and st["integrator"]["step"] >= 20  # stopped inside the first (quench) batch
    # a fresh run refuses to throw the saved work away
    code, err = run_cli(["holstein", "generate", "--out", out] + GEN, capsys)
    assert code == 2 and "interrupted" in err and "--resume" in err and partial.exists()
    code, err = run_cli(["holstein", "generate", "--out", out, "--resume"] + GEN, capsys)
    assert code == 0, err
    assert out.read_bytes() == data.read_bytes()  # byte for byte the uninterrupted run's file
    assert not partial.exists()


@pytest.fixture
def float32_default():
    """The in-process runs like the subprocess: the model's precision follows the default dtype, and another
    test module (test_holstein_reference) sets float64 at import (then the runs differ by ~1.6)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


def test_train_killed_and_resumed_gives_the_same_weights(data, tmp_path, capsys, float32_default):
    ref = tmp_path / "ref.pt"
    torch.set_num_threads(1)
    assert main([str(a) for a in ["holstein", "train", "--data", data, "--out", ref] + TRAIN]) == 0
    out, state = tmp_path / "m.pt", tmp_path / "m.ckpt"
    argv = ["holstein", "train", "--data", data, "--out", out] + TRAIN
    code, err = kill_after_first_save(argv, state)
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    st = torch.load(state, weights_only=True)
    assert 1 <= st["epoch"] < 12 and st["step"] > 0
    for other in (["--lr", "0.01"], ["--epochs", "13"]):  # a resume with other options is refused
        code, err = run_cli(argv + other + ["--resume"], capsys)
        assert code == 2 and "other options" in err and "delete the file" in err, err
    assert "epochs=12 (now 13)" in err
    code, err = run_cli(argv, capsys)  # a fresh run refuses to throw the saved work away
    assert code == 2 and "interrupted" in err and "--resume" in err
    code, err = run_cli(argv + ["--resume"], capsys)
    assert code == 0, err
    a, b = (torch.load(p.with_suffix(".sd"), weights_only=False) for p in (ref, out))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    # bit-identical
    diff = max(((a["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in a["state_dict"]
                if a["state_dict"][k].numel()), default=0.0)
    assert diff == 0.0, (diff, st["epoch"], st["next_batch"])
    print(f"resumed - uninterrupted weights: max abs difference {diff:g}")
    assert a["metrics"]["epochs_run"] == b["metrics"]["epochs_run"] == 12
    assert b["metrics"]["rmse"] == pytest.approx(a["metrics"]["rmse"], rel=1e-4)
    assert not state.exists()


def test_bad_resume_inputs_are_clear_errors(data, tmp_path, capsys):
    gen = ["holstein", "generate", "--out", tmp_path / "g.pt", "--resume"] + GEN
    train = ["holstein", "train", "--data", data, "--out", tmp_path / "m.pt", "--resume"] + TRAIN
    for argv in (gen, train):  # nothing to resume
        code, err = run_cli(argv, capsys)
        assert code == 2 and "cannot --resume" in err and "does not exist" in err and "without --resume" in err
    # a state of other options: generate with another seed, train with another lr
    partial = tmp_path / "g.pt.partial"
    torch.save({"kind": "mlpot-holstein-generate-partial", "config": {"seed": 7}}, partial)
    code, err = run_cli(gen, capsys)
    assert code == 2 and "other options" in err and "seed=7 (now 0)" in err and "delete the file" in err
    state = tmp_path / "m.ckpt"
    # corrupt and foreign state files
    for bad in (b"", b"PK\x03\x04 truncated", data.read_bytes()):
        partial.write_bytes(bad)
        state.write_bytes(bad)
        for argv, path in ((gen, partial), (train, state)):
            code, err = run_cli(argv, capsys)
            assert code == 2 and str(path) in err and "not a readable state file" in err, err
            assert "delete it" in err and "Traceback" not in err
