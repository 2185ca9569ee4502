"""Bad inputs of `mlpot import mace` / `mlpot import nequip`: each a clear error naming the problem and the fix."""
import subprocess
import sys

import pytest
import torch

from mlpot_plugins import pretrained_path
from mlpot_plugins.cli import main
from mlpot_plugins.importers import mace as mace_import
from mlpot_plugins.importers.side_env import SideEnv, SideEnvError


def text_file(tmp_path):
    p = tmp_path / "notes.model"
    p.write_text("this is not a model\n")
    return p


def state_dict_file(tmp_path):
    p = tmp_path / "checkpoint.model"
    torch.save({"model": {"w": torch.zeros(3)}, "epoch": 3}, p)
    return p


def torchscript_file(tmp_path):
    p = tmp_path / "morse.model"
    p.write_bytes(pretrained_path("morse-cuau").read_bytes())
    return p


# (case, make the model file, import_mace kwargs, exception, words of the message)
CASES_MAIN_ENV = [
    ("missing file", lambda t: t / "nope.model", {}, FileNotFoundError, ["does not exist", "path of the MACE"]),
    ("text file", text_file, {}, ValueError, ["not a MACE model file", "mace_run_train"]),
    ("TorchScript file", torchscript_file, {}, ValueError, ["TorchScript archive", "use it directly"]),
    ("unknown dtype", text_file, {"dtype": "float16"}, ValueError, ["'float16'", "--dtype float64"]),
    ("output overwrites input", text_file, {"output": "SAME"}, ValueError, ["overwrite", "-o"]),
    ("missing --python", state_dict_file, {"python": "/nonexistent/bin/python"}, SideEnvError,
     ["no such interpreter", "leave --python out"]),
]


@pytest.mark.parametrize("case,make,kwargs,exc,words", CASES_MAIN_ENV, ids=[c[0] for c in CASES_MAIN_ENV])
def test_rejected_before_any_side_env(tmp_path, monkeypatch, case, make, kwargs, exc, words):
    monkeypatch.setenv("MLPOT_CACHE_DIR", str(tmp_path / "cache"))  # proves no side env is made
    path = make(tmp_path)
    if kwargs.get("output") == "SAME":
        kwargs = dict(kwargs, output=path)
    with pytest.raises(exc) as info:
        mace_import.import_mace(path, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert not (tmp_path / "cache" / "side-envs" / "mace-0.3.16").exists()


def test_cli_reports_error_without_traceback(tmp_path, capsys):
    assert main(["import", "mace", str(text_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "mlpot import: error:" in err and "not a MACE model file" in err and "Traceback" not in err


def test_cli_rejects_unknown_dtype(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["import", "mace", str(text_file(tmp_path)), "--dtype", "float16"])
    assert info.value.code == 2 and "invalid choice: 'float16'" in capsys.readouterr().err


def test_side_env_creation_failure_says_what_to_do(tmp_path, monkeypatch):
    """pip cannot reach any index: the error names the failing step, pip's own words and the two fixes."""
    monkeypatch.setenv("MLPOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    env = SideEnv("broken-1", ["mace-torch==0.3.16"], "pass", progress=lambda msg: None)
    with pytest.raises(SideEnvError) as info:
        env.python()
    msg = str(info.value)
    assert "resolving the requirements failed" in msg and "mace-torch" in msg
    assert "package index is reachable" in msg and "--python" in msg
    assert not env.is_ready() and not env.path.exists()  # nothing half-made is left as if ready


@pytest.fixture(scope="module")
def side_python():
    env = mace_import.side_env()
    if not env.is_ready():
        try:
            return env.python()
        except SideEnvError:
            pytest.skip("MACE side environment unavailable (package registry unreachable?)")
    return env.python()


SIDE_CASES = [
    ("checkpoint dict", state_dict_file, {}, ["not a MACE model", "holds a dict", "mace_run_train"]),
    ("unknown head", "mace", {"head": "pbe"}, ["head 'pbe' is not one of the model's heads ['Default']", "--head"]),
]


@pytest.mark.parametrize("case,make,kwargs,words", SIDE_CASES, ids=[c[0] for c in SIDE_CASES])
def test_rejected_in_side_env(tmp_path, side_python, case, make, kwargs, words):
    if make == "mace":
        path = tmp_path / "tiny.model"
        script = str(__import__("pathlib").Path(__file__).with_name("mace_side.py"))
        subprocess.run([str(side_python), script, "build", str(path)], check=True, capture_output=True)
    else:
        path = make(tmp_path)
    with pytest.raises(SideEnvError) as info:
        mace_import.import_mace(path, tmp_path / "out.pt", **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert "Traceback" not in str(info.value) and not (tmp_path / "out.pt").exists()
