"""Bad inputs and faults of `mlpot data xtb`: each case asserts exit status 2 (argparse or the CLI's error line,
never a traceback) and the words naming the problem and the fix."""
import pytest
from ase import Atoms
import ase.io

pytest.importorskip("tblite")
from cli_util import run_cli  # noqa: E402
from mlpot_plugins.xtb_data import XtbError, generate  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("xtb-bad")
    ase.io.write(d / "overlap.xyz", Atoms("OHH", positions=[[0, 0, 0], [0.05, 0, 0], [0.76, 0.59, 0]]))
    ase.io.write(d / "uranium.xyz", Atoms("UO2", positions=[[0, 0, 0], [1.8, 0, 0], [-1.8, 0, 0]]))
    ase.io.write(d / "periodic.extxyz", Atoms("H2O", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]],
                                              cell=[5, 5, 5], pbc=True))
    (d / "garbage.xyz").write_text("3\nnot an xyz\nO 0 0\n")
    (d / "afile").write_text("x")
    (d / "adir").mkdir()
    return d


CASES = [
    (["--system", "argon"], ["unknown xTB system 'argon'", "choose one of", "ala2"]),
    (["--system", "missing.xyz"], ["missing.xyz does not exist", "give an existing"]),
    (["--system", "{d}/garbage.xyz"], ["cannot read a structure", "garbage.xyz", "xyz/extxyz/pdb"]),
    (["--system", "{d}/periodic.extxyz"], ["is periodic", "isolated molecules", "pbc=F"]),
    (["--system", "{d}/overlap.xyz"], ["atoms 0 (O) and 1 (H) are 0.050 Å apart", "broken geometry",
                                       "fix the structure"]),
    (["--system", "{d}/uranium.xyz"], ["GFN2-xTB failed", "uranium.xyz start structure", "Z >86",
                                       "fix the structure", "elements H to Rn"]),
    (["--set", "hot"], ["--set", "invalid choice", "ood"]),
    (["--frames", "0"], ["--frames", "positive"]),
    (["--frames", "2.5"], ["--frames", "not an integer"]),
    (["--temperature", "0"], ["--temperature", "finite number > 0"]),
    (["--temperature", "-300"], ["--temperature", "finite number > 0"]),
    (["--temperature", "nan"], ["--temperature", "finite number > 0"]),
    (["--seed", "-1"], ["--seed", "non-negative"]),
    ([], ["is a directory", "give a file name inside it"], "{d}/adir"),
    ([], ["afile is a file, not a folder"], "{d}/afile/x.extxyz"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c[0]) or c[2])
def test_bad_cli_input_is_a_clear_error(folder, capsys, case):
    args, words = case[0], case[1]
    out = (case[2] if len(case) > 2 else "{d}/out.extxyz").format(d=folder)
    code, err = run_cli(["data", "xtb", "--no-progress", "--frames", "1", *[a.format(d=folder) for a in args],
                         "--out", out], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (folder / "out.extxyz").exists()  # nothing half-written


@pytest.mark.parametrize("kwargs, words", [
    (dict(frames=0), "frames=0 must be positive"),
    (dict(temperature=-1.0), "temperature=-1.0 must be a finite number > 0"),
    (dict(seed=-2), "seed=-2 must be non-negative"),
    (dict(which="ood-hot"), "unknown xTB set 'ood-hot'"),
])
def test_bad_python_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        generate("water", **kwargs)


def test_scf_failure_in_md_is_a_clear_error(tmp_path, capsys):
    """1e7 K tears water apart within the warm-up and xTB's SCF fails: the run stops naming the trajectory,
    xTB's own reason and the fix, and writes no file."""
    code, err = run_cli(["data", "xtb", "--system", "water", "--frames", "1", "--temperature", "1e7",
                         "--no-progress", "--out", tmp_path / "w.extxyz"], capsys)
    assert code == 2 and "Traceback" not in err, err
    for w in ("GFN2-xTB failed on water train MD at 1e+07 K", "SCF not converged", "lower --temperature"):
        assert w in err, (w, err)
    assert not (tmp_path / "w.extxyz").exists()


def test_a_molecule_coming_apart_is_a_clear_error(tmp_path, capsys):
    """6000 K breaks water within the warm-up while the SCF still converges: stopped, not written as 'water'."""
    code, err = run_cli(["data", "xtb", "--system", "water", "--frames", "3", "--temperature", "6000",
                         "--no-progress", "--out", tmp_path / "w.extxyz"], capsys)
    assert code == 2 and "Traceback" not in err, err
    for w in ("water train frame 0", "6000 K", "came apart (2 fragments, started as 1", "lower --temperature"):
        assert w in err, (w, err)
    assert not (tmp_path / "w.extxyz").exists()
