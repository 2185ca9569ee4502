"""The quench tools' default hot-phase fallback (issue 13 accuracy from t = 0): the shipped holstein-d4 carries
its recommendation (metadata extra.fallback_default); with it the force error on the hot t = 0 state a quench
starts from is within 3% of the force std (the committee alone: ~6%), measured against exact diagonalisation;
the fallback is off from until_time on (the forces are then the committee's), a restart across the switch is
bit-identical, and the tools (`holstein run --engine auto`, `holstein lammps`) use the recommendation."""
import json

import pytest
import torch

import mlpot_plugins
from mlpot_plugins.cli import main
from mlpot_plugins.holstein.dynamics import make_forces, model_params, quench_initial_state, run_quench
from mlpot_plugins.holstein.ed import ed_solve
from mlpot_plugins.holstein.fallback import GatedForces, recommended_fallback


@pytest.fixture(scope="module")
def shipped():
    m = mlpot_plugins.load("holstein-d4")
    return m, model_params(m)


def test_shipped_model_recommends_a_hot_phase_fallback(shipped):
    m, p = shipped
    rec = recommended_fallback(m)
    assert rec is not None and rec["threshold"] > 0 and rec["until_time"] > 0
    f = make_forces("auto", p, m)
    assert isinstance(f, GatedForces) and f.threshold == rec["threshold"]
    assert f.until_step == round(rec["until_time"] / p.dt) and f.describe.startswith("ml+fallback")
    # the energy variant carries no recommendation: auto is the plain committee, unless a threshold is asked for
    energy = mlpot_plugins.load("holstein-d4-energy")
    assert make_forces("auto", p, energy).describe == "ml"
    asked = make_forces("auto", p, energy, threshold=0.2)
    assert isinstance(asked, GatedForces) and asked.threshold == 0.2 and asked.until_step is None
    with pytest.raises(ValueError, match="no recommended fallback"):
        make_forces("auto", p, energy, until_time=5.0)


def test_default_fallback_brings_the_hot_state_within_three_percent(shipped):
    """Two hot 24 x 24 t = 0 states vs ED: the committee alone misses 3% of the force std; the default
    (auto) forces meet it, by replacing a minority of sites with the exact windowed-KPM force."""
    m, p = shipped
    Q = quench_initial_state(24, p, seed=11, batch=2)[0]
    F_ed = ed_solve(Q, p)["forces"]
    scale = F_ed.std()
    ml = make_forces("ml", p, m)(Q)
    auto = make_forces("auto", p, m)
    F = auto(Q)
    err_ml = ((ml - F_ed).pow(2).mean().sqrt() / scale).item()
    err_auto = ((F - F_ed).pow(2).mean().sqrt() / scale).item()
    share = auto.last_mask.double().mean().item()
    assert err_ml > 0.04, err_ml
    assert err_auto <= 0.03, (err_auto, share)
    assert 0.02 < share < 0.4, share  # a minority of sites, not a full exact run


def test_fallback_is_off_from_until_step_and_restart_is_bit_identical(shipped, tmp_path):
    m, p = shipped
    rec = recommended_fallback(m)
    forces = make_forces("auto", p, m, until_time=3 * p.dt)  # until step 3
    assert forces.until_step == 3
    full = run_quench(forces, p, 12, 6, seed=5, record_every=2, progress=False)
    assert full["engine"].startswith("ml+fallback") and f"threshold {rec['threshold']:g}" in full["engine"]
    # calls: the initial force (step 0), then steps 1..6; steps 0, 1, 2 may fall back, 3..6 never
    assert forces.stats["calls"] == 7 and forces.stats["fallback_sites"] > 0
    assert not forces.active and not bool(forces.last_mask.any())
    ml = make_forces("ml", p, m)(full["final_Q"])
    # after until the forces are the committee's: one more call at a late step equals the ML forces
    forces.set_step(10)
    assert torch.equal(forces(full["final_Q"]), ml)
    f2 = make_forces("auto", p, m, until_time=3 * p.dt)
    ck = tmp_path / "c.pt"
    run_quench(f2, p, 12, 2, seed=5, record_every=2, checkpoint=ck, progress=False)
    f3 = make_forces("auto", p, m, until_time=3 * p.dt)
    resumed = run_quench(f3, p, 12, 6, record_every=2, checkpoint=ck, restart=True, progress=False, batch=None,
                         seed=None)
    assert torch.equal(resumed["final_Q"], full["final_Q"])
    assert f2.stats["fallback_sites"] + f3.stats["fallback_sites"] == forces.stats["fallback_sites"]


def test_tools_use_the_recommendation_and_say_so(shipped, tmp_path, capsys):
    m, p = shipped
    rec = recommended_fallback(m)
    steps = round(rec["until_time"] / p.dt)
    out = tmp_path / "deck"
    assert main(["holstein", "lammps", "--out", str(out), "--L", "8", "--steps", "10"]) == 0
    pair = next(ln for ln in (out / "in.holstein").read_text().splitlines() if ln.startswith("pair_style"))
    assert pair.endswith(f"fallback {rec['threshold']!r} until {steps}")
    info = json.loads((out / "holstein-lammps.json").read_text())
    assert info["fallback"] == rec["threshold"] and info["fallback_until_step"] == steps
    out2 = tmp_path / "deck2"
    assert main(["holstein", "lammps", "--out", str(out2), "--L", "8", "--steps", "10", "--no-fallback"]) == 0
    assert "fallback" not in next(ln for ln in (out2 / "in.holstein").read_text().splitlines()
                                  if ln.startswith("pair_style"))
    out3 = tmp_path / "deck3"
    assert main(["holstein", "lammps", "--out", str(out3), "--L", "8", "--steps", "10", "--fallback", "0.2"]) == 0
    assert next(ln for ln in (out3 / "in.holstein").read_text().splitlines()
                if ln.startswith("pair_style")).endswith("fallback 0.2")
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["holstein", "run", "--L", "8", "--steps", "2", "--every", "1", "--snapshots", "0",
                 "--out", str(run)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"ml+fallback (threshold {rec['threshold']:g}, until t = {rec['until_time']:g}")
    assert json.loads((run / "observables.json").read_text())["engine"].startswith("ml+fallback")
