"""Bad inputs and faults of `mlpot holstein generate|train|run|analyze` and of the Python functions behind
them: each case asserts exit status 2 (argparse or the CLI's error line, never a traceback) and the words
that name the problem and the fix. Extend CASES for new options."""
import json
import warnings

import pytest
import torch

import mlpot_plugins
from mlpot_plugins.cli import main
from mlpot_plugins.holstein.dynamics import make_forces, run_quench
from mlpot_plugins.holstein.langevin import LangevinIntegrator
from mlpot_plugins.holstein.model import D4LatticeForceField
from mlpot_plugins.holstein.params import HolsteinParams
from mlpot_plugins.runsafe import DivergenceError

from cli_util import run_cli

P = HolsteinParams()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hb")
    m = D4LatticeForceField(P.to_dict(), radius2=2, channels=2, hidden=4, ensemble_size=2, dtype=torch.float64)
    model = mlpot_plugins.export(m, d / "tiny.pt", kind="lattice", extra={"holstein": P.to_dict()})
    data = d / "data.pt"
    assert main(["holstein", "generate", "--out", str(data), "--L", "6", "--quench", "2", "--domains", "2",
                 "--steps", "4", "--domain-steps", "4", "--stride", "2"]) == 0
    (d / "truncated.pt").write_bytes(data.read_bytes()[:400])
    (d / "afile").write_text("x")
    return {"dir": d, "model": model, "data": data, "trunc": d / "truncated.pt", "afile": d / "afile"}


GEN = ["holstein", "generate", "--out", "{dir}/g.pt", "--L", "6", "--steps", "4", "--domain-steps", "4",
       "--stride", "2"]
TRAIN = ["holstein", "train", "--data", "{data}", "--out", "{dir}/m.pt", "--epochs", "1", "--channels", "2",
         "--hidden", "4", "--ensemble", "2", "--radius2", "2"]
RUN = ["holstein", "run", "--model", "{model}", "--L", "6", "--steps", "4", "--every", "2", "--snapshots", "0",
       "--out", "{dir}/run"]

# (base command, extra arguments, words of the message)
CASES = [
    (GEN, ["--stride", "0"], ["--stride", "positive"]),
    (GEN, ["--quench", "-1"], ["--quench", "non-negative"]),
    (GEN, ["--steps", "0"], ["--steps", "positive"]),
    (GEN, ["--domain-steps", "-2"], ["--domain-steps", "positive"]),
    (GEN, ["--L", "5"], ["L=5", "even"]),
    (GEN, ["--L", "abc"], ["'abc'", "not an integer"]),
    (GEN, ["--quench", "0", "--domains", "0"], ["no trajectories", "at least one"]),
    (GEN, ["--steps", "2", "--stride", "6"], ["shorter than --stride", "lower --stride"]),
    (GEN, ["--param", "dt=0"], ["dt > 0"]),
    (GEN, ["--param", "kappa=0.5"], ["elastically unstable", "lower kappa"]),
    (TRAIN, ["--epochs", "0"], ["--epochs", "positive"]),
    (TRAIN, ["--batch", "0"], ["--batch", "positive"]),
    (TRAIN, ["--ensemble", "0"], ["--ensemble", "positive"]),
    (TRAIN, ["--channels", "-1"], ["--channels", "positive"]),
    (TRAIN, ["--radius2", "0"], ["--radius2", "positive"]),
    (TRAIN, ["--budget", "0"], ["--budget", "> 0"]),
    (TRAIN, ["--lr", "-1"], ["--lr", ">= 0"]),
    (TRAIN, ["--lr", "nan"], ["--lr", "finite"]),
    (RUN, ["--L", "-4"], ["L=-4", "even L >= 4"]),
    (RUN, ["--L", "7"], ["L=7", "bipartite"]),
    (RUN, ["--L", "0"], ["L=0", "even L >= 4"]),
    (RUN, ["--threads", "0"], ["--threads", "positive"]),
    (RUN, ["--fallback-until", "-1"], ["--fallback-until", ">= 0"]),
    (RUN, ["--engine", "ml", "--threshold", "0.1"], ["--engine ml", "does not use", "ml+fallback"]),
    (RUN, ["--engine", "ed", "--fallback-until", "5"], ["--engine ed", "does not use"]),
    (RUN, ["--snapshots", "-1"], ["--snapshots", "non-negative"]),
    (RUN, ["--batch", "0"], ["--batch", "positive"]),
    (RUN, ["--every", "0"], ["--every", "positive"]),
    (RUN, ["--steps", "-3"], ["--steps", "non-negative"]),
    (RUN, ["--threshold", "0"], ["--threshold", "> 0"]),
    (RUN, ["--save-every", "0"], ["--save-every", "positive"]),
    (RUN, ["--param", "kT"], ["key=value"]),
    (RUN, ["--param", "beta=1"], ["unknown Holstein parameter", "beta"]),
    (RUN, ["--restart"], ["--restart needs --checkpoint"]),
    (RUN, ["--restart", "--checkpoint", "{dir}/none.pt"], ["does not exist", "--checkpoint"]),
    (RUN, ["--restart", "--checkpoint", "{trunc}"], ["not a Holstein Langevin checkpoint"]),
    (RUN, ["--out", "{afile}/run"], ["afile is a file, not a folder", "another output path"]),
    (RUN, ["--checkpoint", "{afile}/c.pt"], ["afile is a file, not a folder"]),
    (RUN, ["--out", "{afile}"], ["is a file", "folder path"]),
    (RUN, ["--model", "{data}"], ["data.pt"]),
    (GEN, ["--out", "{afile}/g.pt"], ["afile is a file, not a folder"]),
    (GEN, ["--out", "{dir}"], ["is a directory", "file name"]),
    (TRAIN, ["--data", "{trunc}"], ["truncated.pt", "regenerate it"]),
    (TRAIN, ["--data", "{dir}/none.pt"], ["does not exist", "holstein generate"]),
    (TRAIN, ["--init", "{trunc}"], ["truncated.pt", "MODEL.sd"]),
    (TRAIN, ["--out", "{afile}/m.pt"], ["afile is a file, not a folder"]),
    (["holstein", "analyze", "{trunc}"], [], ["not an observables.json", "--out folder"]),
    (["holstein", "analyze", "{dir}/none"], [], ["does not exist"]),
    (GEN, ["--device", "cuda:99"] if torch.cuda.is_available() else ["--device", "cuda"], ["CUDA", "device"]),
    (TRAIN, ["--device", "tpu"], ["'tpu'", "Use 'cpu'"]),
]


@pytest.mark.parametrize("base,extra,words", CASES, ids=[" ".join(c[0][1:2] + c[1])[:60] for c in CASES])
def test_bad_input_is_a_clear_error(files, capsys, base, extra, words):
    argv = [a.format(**files) for a in base + extra]
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w.format(**files) in err, (w, err)


def test_training_output_is_checked_before_the_work(files, capsys, tmp_path):
    """Class 2: a bad --out fails at once (nothing trained, nothing written); a missing folder is created."""
    code, err = run_cli([a.format(**files) for a in TRAIN] + ["--out", files["afile"] / "sub" / "m.pt"], capsys)
    assert code == 2 and "is a file, not a folder" in err and "rmse" not in err
    out = tmp_path / "new" / "deeper" / "m.pt"
    code, err = run_cli([a.format(**files) for a in TRAIN] + ["--out", out], capsys)
    assert code == 0, err
    assert mlpot_plugins.load(out).metadata["kind"] == "lattice" and out.with_suffix(".sd").is_file()


@pytest.mark.parametrize("engine", ["ml", "ed"])
def test_blown_up_langevin_run_is_an_error_naming_dt(files, capsys, tmp_path, engine):
    """Class 3: dt=5 used to end with status 0 and S(pi,pi)/N ~ 1e58; now it stops, names dt and the fix
    and records nothing as a result."""
    out = tmp_path / "run"
    code, err = run_cli(["holstein", "run", "--engine", engine, "--model", files["model"], "--L", "6", "--steps",
                         "200", "--every", "10", "--snapshots", "0", "--param", "dt=5", "--out", out], capsys)
    assert code == 2 and "diverged" in err and "dt=5" in err and "smaller time step" in err, err
    assert not (out / "observables.json").exists()


def test_non_finite_forces_stop_the_integrator():
    Q = torch.randn(6, 6, dtype=torch.float64)
    with pytest.raises(DivergenceError, match="non-finite"):
        LangevinIntegrator(lambda q: torch.full_like(q, float("nan")), P, Q)
    calls = []

    def nan_after_two(q):
        calls.append(1)
        return -q if len(calls) < 3 else q * float("nan")

    integ = LangevinIntegrator(nan_after_two, P, Q)
    with pytest.raises(DivergenceError, match="step 2"):
        integ.step(10)


@pytest.mark.parametrize("engine", ["ml", "ed", "kpm", "ml+fallback"])
def test_every_engine_refuses_odd_lattices(files, engine):
    """Class 3: odd L was refused by ED/KPM but accepted by the ML engine; one check serves all."""
    model = mlpot_plugins.load(files["model"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model at its trained parameters must not warn
        forces = make_forces(engine, P, model)
    with pytest.raises(ValueError, match="L=7 is not supported: need an even L"):
        run_quench(forces, P, 7, 2, progress=False)
    with pytest.raises(ValueError, match="L=5 is not supported"):
        forces(torch.zeros(5, 5, dtype=torch.float64))


def test_ml_patch_larger_than_lattice_is_named(files):
    big = D4LatticeForceField(P.to_dict(), radius2=13, channels=2, hidden=4, ensemble_size=1, dtype=torch.float64)
    path = mlpot_plugins.export(big, files["dir"] / "big.pt", kind="lattice", extra={"holstein": P.to_dict()})
    forces = make_forces("ml", P, mlpot_plugins.load(path))
    with pytest.raises(ValueError, match=r"L=6 is not supported: need an even L >= 7 .*patch"):
        run_quench(forces, P, 6, 1, progress=False)


def test_other_parameters_than_the_trained_ones_warn(files, capsys, tmp_path):
    """Class 3: a lattice model used at other (g, k0, kappa, kT) says so, with the trained values."""
    model = mlpot_plugins.load(files["model"])
    with pytest.warns(UserWarning, match=r"trained at t=1, g=3.5, k0=1, kappa=0.18, kT=0.1, mu=0; the run "
                                         r"uses g=4, kT=0.3"):
        make_forces("ml", HolsteinParams(g=4.0, kT=0.3), model)
    out = tmp_path / "r"
    code, err = run_cli([a.format(**files) for a in RUN] + ["--out", out, "--param", "k0=2"], capsys)
    assert code == 0 and "mlpot holstein run: warning:" in err and "k0=1" in err and "k0=2" in err
    assert "warnings" in json.loads((out / "observables.json").read_text())
    code, err = run_cli([a.format(**files) for a in RUN] + ["--out", tmp_path / "r2", "--param", "dt=0.02"], capsys)
    assert code == 0 and "warning" not in err  # integrator-only parameters are free


def test_restart_applies_and_records_a_new_temperature(files, capsys, tmp_path):
    """Class 3: --restart --param kT=... used to be recorded but not applied."""
    ck, out = tmp_path / "c.pt", tmp_path / "run"
    base = ["holstein", "run", "--engine", "ed", "--L", "4", "--every", "2", "--snapshots", "0"]
    assert run_cli(base + ["--steps", "4", "--checkpoint", ck, "--out", out], capsys)[0] == 0
    kept = tmp_path / "kept.pt"
    kept.write_bytes(ck.read_bytes())
    assert run_cli(base + ["--steps", "8", "--checkpoint", ck, "--out", out, "--restart", "--param", "kT=0.5"],
                   capsys)[0] == 0
    assert run_cli(base + ["--steps", "8", "--checkpoint", kept, "--out", tmp_path / "o2", "--restart"],
                   capsys)[0] == 0
    hot, cold = torch.load(ck), torch.load(kept)
    assert hot["params"]["kT"] == 0.5 and cold["params"]["kT"] == 0.1
    assert not torch.equal(hot["Q"], cold["Q"])  # the thermostat really ran at the new temperature
    rec = json.loads((out / "observables.json").read_text())
    assert rec["param_changes"] == [{"step": 4, "t": 0.2, "changed": {"kT": 0.5}, "before": P.to_dict()}]
    assert rec["t"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])  # one series continued after the restart
    # what a restart cannot change is refused, not ignored
    code, err = run_cli(base + ["--steps", "8", "--checkpoint", kept, "--out", tmp_path / "o3", "--restart",
                                "--L", "6"], capsys)
    assert code == 2 and "holds a run with L=4" in err and "got L=6" in err
    code, err = run_cli(base + ["--steps", "2", "--checkpoint", kept, "--out", tmp_path / "o3", "--restart"], capsys)
    assert code == 2 and "beyond steps=2" in err and "larger --steps" in err


def test_a_fresh_run_never_overwrites_an_earlier_run(files, capsys, tmp_path):
    """Class 2: a second run into the same --out used to overwrite the observables."""
    out, ck = tmp_path / "run", tmp_path / "c.pt"
    argv = ["holstein", "run", "--engine", "ed", "--L", "4", "--steps", "2", "--snapshots", "0", "--out", out]
    assert run_cli(argv + ["--checkpoint", ck], capsys)[0] == 0
    before = (out / "observables.json").read_text()
    code, err = run_cli(argv, capsys)
    assert code == 2 and "already holds the observables" in err and "--restart" in err
    code, err = run_cli(argv[:-1] + [tmp_path / "other", "--checkpoint", ck], capsys)
    assert code == 2 and "already holds the checkpoint" in err
    assert (out / "observables.json").read_text() == before
