"""Observables, uncertainty-gated fallback, quench runs and the `mlpot holstein` CLI."""
import json
from pathlib import Path

import pytest
import torch

import mlpot_plugins
from mlpot_plugins.cli import main
from mlpot_plugins.holstein.dynamics import MLForces, make_forces, run_quench
from mlpot_plugins.holstein.ed import ed_solve
from mlpot_plugins.holstein.fallback import GatedForces
from mlpot_plugins.holstein.model import D4LatticeForceField
from mlpot_plugins.holstein.observables import (domain_length, growth_exponent, order_field, plot_growth,
                                                 plot_snapshot, s_pi_pi, structure_factor)
from mlpot_plugins.holstein.params import HolsteinParams, stagger

P = HolsteinParams()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    m = D4LatticeForceField(P.to_dict(), channels=4, hidden=8, ensemble_size=3, dtype=torch.float64)
    path = tmp_path_factory.mktemp("m") / "tiny-holstein.pt"
    return mlpot_plugins.export(m, path, kind="lattice", extra={"holstein": P.to_dict()})


def test_order_parameter_structure_factor_and_domain_length():
    L, A = 16, 6.0
    cb = A * stagger(L)
    assert torch.allclose(order_field(cb), torch.full((L, L), A, dtype=torch.float64))
    assert s_pi_pi(cb).item() == pytest.approx(A * A)
    S = structure_factor(cb)
    assert S[L // 2, L // 2].item() == pytest.approx(L * L * A * A) and S.sum() == pytest.approx(S[8, 8])
    assert domain_length(cb).item() == L  # one domain: capped at the lattice size
    stripes = cb * torch.where(torch.arange(L) < L // 2, 1.0, -1.0).double()[:, None]
    many = cb * torch.where((torch.arange(L) // 4) % 2 == 0, 1.0, -1.0).double()[:, None]
    assert s_pi_pi(stripes).item() == pytest.approx(0.0)
    assert 2 < domain_length(many).item() < domain_length(stripes).item() < L


def test_growth_exponent_fit_and_plots(tmp_path):
    t = torch.logspace(0, 3, 20).tolist()
    fit = growth_exponent(t, [2.0 * x ** 0.5 for x in t])
    assert fit["exponent"] == pytest.approx(0.5, abs=1e-9) and fit["prefactor"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 3"):
        growth_exponent([1, 2], [1, 2])
    for png in (plot_growth(t, [x ** 0.5 for x in t], tmp_path / "g.png", fit),
                plot_snapshot(6 * stagger(8), tmp_path / "s.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fallback_replaces_uncertain_sites_with_exact_forces(tiny_model):
    p = HolsteinParams(kT=0.5)
    module = mlpot_plugins.load(tiny_model).module
    Q = torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = ed_solve(Q, p)["forces"]
    ml = MLForces(module)(Q)
    everything = GatedForces(module, p, threshold=1e-12, radius=4, max_fraction=1.0)
    nothing = GatedForces(module, p, threshold=1e6)
    assert torch.equal(nothing(Q), ml) and nothing.stats["fallback_sites"] == 0
    gated = everything(Q)
    assert everything.stats["fallback_sites"] == 64
    assert (gated - exact).abs().max() < 0.05 < (ml - exact).abs().max()
    half = GatedForces(module, p, threshold=1e-12, radius=4, max_fraction=0.5)
    half(Q)
    assert half.stats["fallback_sites"] == 32  # the budget keeps the 32 most uncertain sites
    std = module.compute_lattice(Q, True)["forces_std"]
    assert std[half.last_mask].min() >= std[~half.last_mask].max()
    with pytest.raises(ValueError, match="threshold"):
        GatedForces(module, p, threshold=0.0)


def test_quench_checkpoint_restart_matches_one_run(tiny_model, tmp_path):
    model = mlpot_plugins.load(tiny_model)
    f = make_forces("ml", P, model)
    full = run_quench(f, P, 8, 12, seed=3, record_every=4, progress=False)
    run_quench(f, P, 8, 6, seed=3, record_every=4, checkpoint=tmp_path / "c.pt", progress=False)
    # `steps` is the run's total length: the restart continues from step 6 up to 12
    rest = run_quench(f, P, 8, 12, seed=3, record_every=4, checkpoint=tmp_path / "c.pt", restart=True,
                      progress=False)
    assert torch.equal(full["final_Q"], rest["final_Q"])
    assert rest["t"] == full["t"] and rest["s_pi_pi"] == full["s_pi_pi"]  # one continued time series


def test_cli_run_and_analyze(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["holstein", "run", "--model", str(tiny_model), "--L", "8", "--steps", "10", "--every", "2",
                 "--snapshots", "2", "--out", str(out), "--param", "kT=0.2"]) == 0
    rec = json.loads((out / "observables.json").read_text())
    assert len(rec["t"]) == 6 and rec["params"]["kT"] == 0.2 and len(list(out.glob("snapshot_*.png"))) == 2
    assert main(["holstein", "analyze", str(out)]) == 0
    assert (out / "domain_growth.png").is_file() and "growth exponent" in capsys.readouterr().out


def test_cli_and_run_bad_inputs(tiny_model, tmp_path, capsys):
    assert main(["holstein", "run", "--model", "morse-cuau", "--L", "8", "--steps", "1",
                 "--out", str(tmp_path)]) == 2
    assert "not a Holstein lattice model" in capsys.readouterr().err
    assert main(["holstein", "run", "--model", str(tiny_model), "--param", "kT", "--out", str(tmp_path)]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["holstein", "analyze", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown engine"):
        make_forces("dft", P)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        run_quench(make_forces("ed", P), P, 4, 1, restart=True, progress=False)


def test_cli_generate_and_train(tmp_path, capsys):
    data, model_path = tmp_path / "d.pt", tmp_path / "m.pt"
    assert main(["holstein", "generate", "--out", str(data), "--L", "8", "--quench", "2", "--domains", "2",
                 "--steps", "8", "--domain-steps", "8", "--stride", "4", "--param", "kT=0.2"]) == 0
    assert main(["holstein", "train", "--data", str(data), "--out", str(model_path), "--epochs", "2",
                 "--channels", "4", "--hidden", "8", "--ensemble", "2"]) == 0
    m = mlpot_plugins.load(model_path)
    assert m.metadata["extra"]["holstein"]["kT"] == 0.2 and m.metadata["extra"]["training"]["data_L"] == 8
    assert "rmse_over_force_std" in capsys.readouterr().out
    # fine-tuning starts from the saved weights: with a zero learning rate nothing changes
    tuned = tmp_path / "tuned.pt"
    assert main(["holstein", "train", "--data", str(data), "--out", str(tuned), "--epochs", "1", "--channels", "4",
                 "--hidden", "8", "--ensemble", "2", "--init", str(model_path.with_suffix(".sd")), "--lr", "0"]) == 0
    Q = torch.randn(2, 8, 8, dtype=torch.float64)
    a = m.module.compute_lattice(Q, False)["forces"]
    assert torch.equal(a, mlpot_plugins.load(tuned).module.compute_lattice(Q, False)["forces"])
    irr = tmp_path / "irr.pt"
    assert main(["holstein", "train", "--data", str(data), "--out", str(irr), "--epochs", "1", "--arch", "irreps",
                 "--hidden", "8", "--ensemble", "2"]) == 0
    assert mlpot_plugins.load(irr).metadata["extra"]["architecture"]["arch"] == "irreps"
    capsys.readouterr()
    assert main(["holstein", "train", "--data", str(data), "--out", str(irr), "--arch", "irreps", "--energy"]) == 2
    assert "direct-force only" in capsys.readouterr().err
    assert main(["holstein", "train", "--data", str(data), "--out", str(tuned), "--epochs", "1",
                 "--init", str(irr.with_suffix(".sd"))]) == 2  # irreps weights into a conv model
    assert "do not fit this model" in capsys.readouterr().err
    assert main(["holstein", "train", "--data", str(data), "--out", str(tuned), "--init", str(tmp_path / "x.sd")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["holstein", "train", "--data", str(tmp_path / "nope.pt"), "--out", str(model_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sigterm_mid_run_leaves_a_checkpoint_that_restarts_bit_identically(tmp_path):
    """Class 2: a real `mlpot holstein run` killed with SIGTERM saves its checkpoint and observables
    (atomically) and exits 143; the same command with --restart then ends exactly where an uninterrupted run
    ends (state, noise stream and the whole observables series)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def argv(out, ck):
        return ["holstein", "run", "--engine", "ed", "--L", "4", "--steps", "1200", "--every", "50",
                "--snapshots", "0", "--save-every", "50", "--threads", "1", "--out", str(out), "--checkpoint", str(ck)]

    out, ck = tmp_path / "killed", tmp_path / "killed.pt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(mlpot_plugins.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "mlpot_plugins.cli"] + argv(out, ck), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ck.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)  # the first periodic checkpoint (step 50) is written while the run goes on
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--restart" in err and "Traceback" not in err
    st = torch.load(ck)
    rec = json.loads((out / "observables.json").read_text())
    assert 50 <= st["step"] < 1200 and rec["status"] == "interrupted" and rec["step"] == st["step"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files behind
    assert main(argv(out, ck) + ["--restart"]) == 0
    ref_out, ref_ck = tmp_path / "whole", tmp_path / "whole.pt"
    assert main(argv(ref_out, ref_ck)) == 0
    a, b = torch.load(ck), torch.load(ref_ck)
    assert a["step"] == b["step"] == 1200
    assert torch.equal(a["Q"], b["Q"]) and torch.equal(a["P"], b["P"]) and torch.equal(a["rng"], b["rng"])
    r1, r2 = (json.loads((o / "observables.json").read_text()) for o in (out, ref_out))
    assert len(r1["t"]) == 25 and r1["status"] == "complete"
    for key in ("t", "s_pi_pi", "domain_length", "s_pi_pi_per_sample"):
        assert r1[key] == r2[key]


def test_periodic_saves_keep_the_state_of_a_run_that_dies(tmp_path):
    """Class 2: the checkpoint and observables are written every save_every steps, not only at the end."""
    calls = []

    class Dies:
        def __call__(self, Q):
            calls.append(1)
            if len(calls) == 8:  # the force call of step 7
                raise RuntimeError("node lost")
            return make_forces("ed", P)(Q)

    with pytest.raises(RuntimeError, match="node lost"):
        run_quench(Dies(), P, 4, 10, record_every=2, out_dir=tmp_path / "o", checkpoint=tmp_path / "c.pt",
                   save_every=3, progress=False)
    st = torch.load(tmp_path / "c.pt")
    rec = json.loads((tmp_path / "o" / "observables.json").read_text())
    assert st["step"] == 6 and rec["status"] == "running" and rec["t"] == pytest.approx([0, 0.1, 0.2, 0.3])
    ed = make_forces("ed", P)
    rest = run_quench(ed, P, None, 10, record_every=2, out_dir=tmp_path / "o", checkpoint=tmp_path / "c.pt",
                      restart=True, progress=False)
    whole = run_quench(ed, P, 4, 10, record_every=2, progress=False)
    assert torch.equal(rest["final_Q"], whole["final_Q"]) and rest["s_pi_pi"] == whole["s_pi_pi"]


def test_analyze_window_with_t_min_above_t_max_is_named():
    from mlpot_plugins.holstein.observables import growth_exponent

    with pytest.raises(ValueError, match="t-min 40 is not below --t-max 10"):
        growth_exponent([1, 2, 4, 8, 16], [1, 1.4, 2, 2.8, 4], t_min=40, t_max=10)
