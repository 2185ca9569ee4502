"""Bad inputs of `mlpot holstein lammps` (deck writer) and of `mlpot holstein analyze` on engine output (LAMMPS
dumps, OpenMM trajectories): exit status 2, no traceback, words naming the problem and the fix."""
import math

import numpy as np
import pytest

from cli_util import run_cli


def dump_text(L=4, steps=(0, 10, 20, 30), box=4.0, shift=(0.0, 0.0), dup=False, cols="id x y z", n=None):
    out = []
    for s in steps:
        rows = []
        for k in range(L * L):
            i, j = divmod(k, L)
            if dup and k == 1:
                i, j = 0, 0
            vals = {"id": k + 1, "x": i * box / L + shift[0], "y": j * box / L + shift[1], "z": 0.1 * k}
            rows.append(" ".join(repr(float(vals[c])) if c != "id" else str(vals[c]) for c in cols.split()))
        out.append(f"ITEM: TIMESTEP\n{s}\nITEM: NUMBER OF ATOMS\n{L * L if n is None else n}\nITEM: BOX BOUNDS pp pp ff\n"
                   f"0 {box}\n0 {box}\n-5 5\nITEM: ATOMS {cols}\n" + "\n".join(rows) + "\n")
    return "".join(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("wf")
    (d / "ok.dump").write_text(dump_text())
    (d / "short.dump").write_text(dump_text(steps=(0, 10)))
    (d / "offsite.dump").write_text(dump_text(shift=(0.2, 0.0)))
    (d / "doubled.dump").write_text(dump_text(dup=True))
    (d / "nonsquare.dump").write_text(dump_text(L=4).replace("NUMBER OF ATOMS\n16", "NUMBER OF ATOMS\n15")
                                      .replace("\n16 3.0 3.0 1.5\n", "\n"))
    (d / "noz.dump").write_text(dump_text(cols="id x y"))
    (d / "trunc.dump").write_text(dump_text()[:-60])
    (d / "odd.dump").write_text(dump_text(L=3, box=3.0))
    (d / "xyz.dump").write_text("16\nAtoms. Timestep: 0\n1 0 0 0\n")
    (d / "bin.dump").write_bytes(bytes(range(256)) * 4)
    (d / "q.dcd").write_bytes(b"\x00" * 200)
    (d / "t.xtc").write_bytes(b"\x00" * 10)
    (d / "run").mkdir()
    (d / "run" / "observables.json").write_text('{"t": [1, 2, 3], "domain_length": [1, 2, 3], "s_pi_pi": [0, 0, 0]}')
    (d / "afile").write_text("x")
    from mlpot_plugins.pretrained.reexport_holstein import reexport

    reexport("holstein-d4", d / "plain.pt", None, None, True)  # the shipped model without its exact solver
    return {"dir": d}


LAMMPS = ["holstein", "lammps", "--out", "{dir}/deck", "--L", "8", "--steps", "10"]
AN = ["holstein", "analyze"]

CASES = [
    (LAMMPS, ["--L", "7"], ["L=7", "even"]),
    (LAMMPS, ["--L", "4"], ["L=4", "patch width"]),
    (LAMMPS, ["--steps", "0"], ["--steps", "positive"]),
    (LAMMPS, ["--every", "0"], ["--every", "positive"]),
    (LAMMPS, ["--fallback", "0"], ["--fallback", "> 0"]),
    (LAMMPS, ["--fallback", "nan"], ["--fallback"]),
    (LAMMPS, ["--model", "{dir}/plain.pt", "--fallback", "0.05"], ["no exact local solver", "--fallback-radius", "drop --fallback"]),
    (LAMMPS, ["--no-fallback", "--fallback", "0.1"], ["--no-fallback contradicts", "--fallback"]),
    (LAMMPS, ["--fallback-until", "-1"], ["--fallback-until"]),
    (LAMMPS, ["--model", "{dir}/plain.pt", "--fallback-until", "5"], ["--fallback-until 5", "no recommended fallback",
                                                                      "--fallback THRESHOLD"]),
    (LAMMPS, ["--param", "gamma=0"], ["gamma=0", "friction > 0"]),
    (LAMMPS, ["--param", "dt=-1"], ["dt > 0"]),
    (LAMMPS, ["--param", "foo=1"], ["unknown Holstein parameter", "foo"]),
    (LAMMPS, ["--model", "morse-cuau"], ["not a Holstein lattice model"]),
    (LAMMPS, ["--model", "{dir}/none.pt"], ["none.pt"]),
    (LAMMPS, ["--out", "{dir}/afile"], ["is a file", "folder path"]),
    (LAMMPS, ["--device", "tpu"], ["'tpu'", "cpu"]),
    (AN, ["{dir}/none.dump", "--dt", "0.05"], ["does not exist", "run the deck"]),
    (AN, ["{dir}/ok.dump"], ["holstein-lammps.json", "--dt"]),
    (AN, ["{dir}/ok.dump", "--dt", "0"], ["--dt", "> 0"]),
    (AN, ["{dir}/xyz.dump", "--dt", "0.05"], ["not an observables.json", "LAMMPS text dump", "custom"]),
    (AN, ["{dir}/bin.dump", "--dt", "0.05"], ["not an observables.json", "LAMMPS text dump"]),
    (AN, ["{dir}/trunc.dump", "--dt", "0.05"], ["truncated", "last whole frame"]),
    (AN, ["{dir}/offsite.dump", "--dt", "0.05"], ["off its lattice point", "setforce"]),
    (AN, ["{dir}/doubled.dump", "--dt", "0.05"], ["missing or doubled", "every site once"]),
    (AN, ["{dir}/nonsquare.dump", "--dt", "0.05"], ["15 sites", "square"]),
    (AN, ["{dir}/odd.dump", "--dt", "0.05"], ["9 sites", "even square"]),
    (AN, ["{dir}/noz.dump", "--dt", "0.05"], ["no z column", "id x y z"]),
    (AN, ["{dir}/ok.dump", "{dir}/short.dump", "--dt", "0.05"], ["other times", "same lattice and output times"]),
    (AN, ["{dir}/run", "{dir}/ok.dump", "--dt", "0.05"], ["one `mlpot holstein run` folder", "one per seed"]),
    (AN, ["{dir}/q.dcd"], ["--frame-dt", "1/t"]),
    (AN, ["{dir}/q.dcd", "--frame-dt", "1"], ["not a DCD", "DCDReporter"]),
    (AN, ["{dir}/t.xtc", "--frame-dt", "1"], ["unknown trajectory type", ".dcd/.pdb"]),
    (AN, ["{dir}/ok.dump", "--dt", "0.05", "--out", "{dir}/afile"], ["is a file", "folder path"]),
]


@pytest.mark.parametrize("base,extra,words", CASES, ids=[" ".join(c[0][1:2] + c[1])[:70] for c in CASES])
def test_bad_input_is_a_clear_error(files, capsys, base, extra, words):
    argv = [a.format(**files) for a in base + extra]
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_ok_dump_is_read(files, capsys):
    """The fixture's well-formed dump passes (so the cases above fail for their one defect)."""
    code, err = run_cli(AN + [files["dir"] / "ok.dump", "--dt", "0.05"], capsys)
    assert code == 0, err


def test_fallback_threshold_is_checked_in_python():
    from mlpot_plugins.holstein.lammps_deck import check_fallback_model
    from mlpot_plugins.model_file import load

    m = load("holstein-d4")
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="finite number > 0"):
            check_fallback_model(m, bad)
    assert np.isfinite(1.0)


@pytest.mark.parametrize("rec,words", [
    ({"threshold": -1, "until_time": 5}, ["threshold -1", "> 0"]),
    ({"threshold": 0.07, "until_time": float("nan")}, ["until_time nan", ">= 0"]),
    ({"until_time": 5}, ["extra.fallback_default", "threshold"]),
    ("0.07", ["extra.fallback_default", "threshold"]),
])
def test_bad_recommended_fallback_is_named(rec, words):
    """A malformed hot-phase recommendation in a model file is an error naming the field, not a silent default."""
    import copy

    import mlpot_plugins
    from mlpot_plugins.holstein.fallback import recommended_fallback

    m = mlpot_plugins.load("holstein-d4")
    m.metadata = copy.deepcopy(m.metadata)
    m.metadata["extra"]["fallback_default"] = rec
    with pytest.raises(ValueError) as e:
        recommended_fallback(m)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
