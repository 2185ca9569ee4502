"""Bad inputs around the dtype choice and the engine process settings (issue 12, speed): unknown or half
precision dtypes, converting a lattice model, `mlpot export` of a model file without --dtype, bad thread counts
and MLPOT_MALLOC values — in Python (exception type + words naming problem and fix), the CLI (exit 2 + message)
and a real `lmp` (an ERROR: line, a non-zero exit, no crash)."""
import pytest
import torch

from lammps_util import cuau, plugin, run_lmp, write_data  # noqa: F401
from mlpot_plugins import load, pretrained_path
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.cli import main as mlpot
from mlpot_plugins.engine_setup import choose_threads, tune_malloc

MORSE = str(pretrained_path("morse-cuau"))

PY_CASES = {
    "load float16": (lambda: load(MORSE, dtype="float16"), ValueError, ["'float16' is not supported", "'float32'"]),
    "load bfloat16": (lambda: load(MORSE, dtype=torch.bfloat16), ValueError, ["bfloat16", "'float64'"]),
    "load typo": (lambda: load(MORSE, dtype="double"), ValueError, ["'double' is not supported", "'float32'"]),
    "ase float16": (lambda: MLPotCalculator(MORSE, dtype="float16"), ValueError, ["float16", "'float32'"]),
    "ase dtype on loaded": (lambda: MLPotCalculator(load(MORSE), dtype="half"), ValueError,
                            ["'half' is not supported"]),
    "openmm bfloat16": (lambda: __import__("mlpot_plugins.openmm", fromlist=["create_force"]).create_force(
        MORSE, ["Cu"], dtype=torch.bfloat16), ValueError, ["bfloat16", "'float32'"]),
    "lattice model": (lambda: load("holstein-d4", dtype="float64"), ValueError,
                      ["dtype conversion is for atomistic models", "lattice", "drop the dtype choice"]),
    "threads 0": (lambda: MLPotCalculator(MORSE, threads=0), ValueError, ["threads 0", "whole number >= 1"]),
    "threads text": (lambda: choose_threads("two"), ValueError, ["'two'", "whole number >= 1"]),
    "threads float": (lambda: choose_threads(1.5), ValueError, ["1.5", "whole number >= 1"]),
}


@pytest.mark.parametrize("case", sorted(PY_CASES))
def test_python_bad_inputs(case):
    call, exc, words = PY_CASES[case]
    with pytest.raises(exc) as err:
        call()
    for word in words:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize("env,value,words", [
    ("MLPOT_THREADS", "abc", ["'abc' (from MLPOT_THREADS)", "whole number >= 1"]),
    ("MLPOT_THREADS", "0", ["'0' (from MLPOT_THREADS)", "whole number >= 1"]),
    ("MLPOT_MALLOC", "bogus", ["MLPOT_MALLOC='bogus' is not understood", "'system'"]),
])
def test_bad_environment(monkeypatch, env, value, words):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError) as err:
        MLPotCalculator(MORSE)
    for word in words:
        assert word in str(err.value)
    with pytest.raises(ValueError):
        (tune_malloc if env == "MLPOT_MALLOC" else choose_threads)()


@pytest.mark.parametrize("args,words", [
    (["export", "morse-cuau", "-o", "{tmp}/x.pt"], ["already a model file", "--dtype float32"]),
    (["export", "holstein-d4", "--dtype", "float64", "-o", "{tmp}/x.pt"], ["dtype conversion is for atomistic"]),
])
def test_cli_export_dtype(tmp_path, capsys, args, words):
    assert mlpot([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err
    assert not (tmp_path / "x.pt").exists()


def test_cli_export_float16_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        mlpot(["export", "morse-cuau", "--dtype", "float16", "-o", str(tmp_path / "x.pt")])
    assert ex.value.code == 2 and "invalid choice: 'float16'" in capsys.readouterr().err


LMP_CASES = {
    "dtype float16": ("dtype float16", {}, ["dtype must be float32 or float64", "float16", "drop the option"]),
    "dtype missing": ("dtype", {}, ["dtype: expected float32 or float64"]),
    "threads 0": ("threads 0", {}, ["threads must be >= 1", "got 0"]),
    "MLPOT_THREADS 0": ("", {"MLPOT_THREADS": "0"}, ["MLPOT_THREADS=0 must be a number >= 1"]),
    "MLPOT_MALLOC bogus": ("", {"MLPOT_MALLOC": "bogus"}, ["MLPOT_MALLOC=bogus is not understood", "system"]),
}


@pytest.mark.parametrize("case", sorted(LMP_CASES))
def test_lammps_bad_options(tmp_path, plugin, case):
    options, env, words = LMP_CASES[case]
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    deck = (f"units metal\natom_style atomic\natom_modify map array\nplugin load {plugin}\nread_data system.data\n"
            f"pair_style mlpot {MORSE} {options}\npair_coeff * * Cu Au\nrun 0\n")
    res = run_lmp(deck, tmp_path, check=False, timeout=60, env=env)
    out = res.stdout + res.stderr
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert res.returncode > 0 and errors, f"exit {res.returncode}:\n{out[-2000:]}"
    for bad in ("terminate called", "Segmentation", "signal"):
        assert bad not in out
    for word in words:
        assert word in errors[0], (word, errors[0])
