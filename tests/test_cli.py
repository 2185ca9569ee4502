"""The `mlpot` command line, run as a user would run it."""
import subprocess
import sys
from pathlib import Path

MLPOT = [str(Path(sys.executable).with_name("mlpot"))]


def run(*args, check=True):
    res = subprocess.run(MLPOT + list(args), capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_models_lists_shipped_models():
    out = run("models").stdout
    assert "morse-cuau " in out and "morse-cuau-committee" in out and "Reference Cu/Au Morse" in out


def test_info_prints_species_cutoff_units_outputs():
    out = run("info", "morse-cuau-committee").stdout
    assert "species     : Cu Au" in out
    assert "cutoff      : 6.0 angstrom" in out
    assert "length angstrom, energy eV" in out
    assert "forces_std" in out and "4 member(s)" in out


def test_info_on_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_text("garbage")
    res = run("info", str(bad), check=False)
    assert res.returncode == 2 and "not a TorchScript archive" in res.stderr
    res = run("info", "no-such-model", check=False)
    assert res.returncode == 2 and "not a shipped model name" in res.stderr
    assert "Traceback" not in res.stderr


def test_demo_runs_quick(tmp_path):
    out = run("demo", "--quick", "--stage", "ase_stage", "--out", str(tmp_path)).stdout
    assert "energy drift" in out and "max per-atom force std" in out and "demo finished" in out
    res = run("demo", "--stage", "nope", check=False)
    assert res.returncode == 2 and "unknown demo stage(s) ['nope']" in res.stderr


def test_demo_stops_on_a_blown_up_md_and_checks_its_folder(tmp_path, capsys):
    """A demo stage whose MD diverged raises instead of printing a meaningless drift; a bad --out fails first."""
    import pytest

    from mlpot_plugins.cli import main
    from mlpot_plugins.demo import check_md
    from mlpot_plugins.runsafe import DivergenceError

    check_md("ok", -100.0, -100.01, [0.01, 0.02], 10)
    with pytest.raises(DivergenceError, match=r"\[x\] the total energy after the MD is nan"):
        check_md("x", -100.0, float("nan"), [0.01], 10)
    with pytest.raises(DivergenceError, match="largest force std is inf"):
        check_md("x", -100.0, -100.0, [float("inf")], 10)
    with pytest.raises(DivergenceError, match="drifted by 10 eV/atom"):
        check_md("x", -100.0, 0.0, [0.01], 10)
    (tmp_path / "afile").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "afile"), "--stage", "ase_stage"]) == 2
    assert "is a file; give a folder path" in capsys.readouterr().err
