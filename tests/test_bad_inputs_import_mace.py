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


# ---- NequIP -------------------------------------------------------------------------------------------------
def aoti_like_file(tmp_path):
    """The layout of an AOTInductor .nequip.pt2 archive."""
    import zipfile

    p = tmp_path / "model.nequip.pt2"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("model/data/aotinductor/model/model.wrapper.so", b"\x7fELF")
        z.writestr("model/archive_format", "pt2")
    return p


def package_file(tmp_path):
    """A torch.package archive, as nequip-package writes (.nequip.zip)."""
    from torch.package import PackageExporter

    p = tmp_path / "model.nequip.zip"
    with PackageExporter(str(p)) as exp:
        exp.save_pickle("model", "model.pkl", {"weights": [1.0, 2.0]})
    return p


NEQUIP_CASES = [
    ("missing file", lambda t: t / "nope.nequip.pth", {}, FileNotFoundError, ["does not exist", "NequIP model"]),
    ("text file", text_file, {}, ValueError, ["not a NequIP compiled model", "nequip-compile"]),
    ("AOTInductor file", aoti_like_file, {}, ValueError, ["AOTInductor", "--mode torchscript"]),
    ("package file", package_file, {}, ValueError, ["NequIP package", "nequip-compile", "--mode torchscript"]),
    ("mlpot file", torchscript_file, {}, ValueError, ["without NequIP's r_max/type_names", "used directly"]),
    ("unknown dtype", text_file, {"dtype": "bfloat16"}, ValueError, ["'bfloat16'", "--dtype"]),
]


@pytest.mark.parametrize("case,make,kwargs,exc,words", NEQUIP_CASES, ids=[c[0] for c in NEQUIP_CASES])
def test_nequip_rejected(tmp_path, case, make, kwargs, exc, words):
    from mlpot_plugins.importers.nequip import import_nequip

    with pytest.raises(exc) as info:
        import_nequip(make(tmp_path), tmp_path / "out.pt", **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert not (tmp_path / "out.pt").exists()


@pytest.fixture(scope="module")
def nequip_python():
    from mlpot_plugins.importers import nequip

    env = nequip.side_env()
    try:
        return env.python()
    except SideEnvError:
        pytest.skip("NequIP side environment unavailable (package registry unreachable?)")


@pytest.mark.parametrize("case,type_names,kwargs,words", [
    ("dtype differs from the compiled one", "Cu,Au", {"dtype": "float32"},
     ["--dtype float32 differs from the compiled model's float64", "Leave --dtype out"]),
    ("type names are not elements", "CuA,AuB", {}, ["type names ['CuA', 'AuB'] are not element symbols"]),
])
def test_nequip_model_rejected(tmp_path, nequip_python, case, type_names, kwargs, words):
    from pathlib import Path

    from mlpot_plugins.importers.nequip import import_nequip

    path = tmp_path / "m.nequip.pth"
    script = str(Path(__file__).with_name("nequip_side.py"))
    subprocess.run([str(nequip_python), script, "build", str(path), "0", type_names], check=True,
                   capture_output=True)
    with pytest.raises(ValueError) as info:
        import_nequip(path, tmp_path / "out.pt", **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert not (tmp_path / "out.pt").exists()
