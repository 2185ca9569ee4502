"""Bad inputs to the alanine-dipeptide observables, the shipped model's threshold and the Ramachandran
benchmark: each a clear error naming the problem and the fix (exception type + key words)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlpot_plugins import observables as obs
from mlpot_plugins.pretrained.build_ala2_xtb import uncertainty_threshold

ROOT = Path(__file__).resolve().parents[1]
E = np.random.default_rng(0).normal(size=(10, 4))
PHI = np.linspace(-170, 170, 10)
POS = np.random.default_rng(1).normal(size=(3, 22, 3))

CASES = [
    ("weights 1-D energies", lambda: obs.member_weights(E[:, 0], 300), ValueError, ["2-D", "shape"]),
    ("weights one member", lambda: obs.member_weights(E[:, :1], 300), ValueError, ["committee", "members"]),
    ("weights NaN energy", lambda: obs.member_weights(np.where(E == E[3, 1], np.nan, E), 300), ValueError,
     ["NaN", "drop the broken frames"]),
    ("weights empty", lambda: obs.member_weights(np.zeros((0, 4)), 300), ValueError, ["empty", "at least one frame"]),
    ("weights zero K", lambda: obs.member_weights(E, 0.0), ValueError, ["temperature", "> 0", "kelvin"]),
    ("weights negative K", lambda: obs.member_weights(E, -300), ValueError, ["temperature", "kelvin"]),
    ("weights text K", lambda: obs.member_weights(E, "hot"), ValueError, ["not a number", "kelvin"]),
    ("weights inf K", lambda: obs.member_weights(E, float("inf")), ValueError, ["finite", "kelvin"]),
    ("hist frames mismatch", lambda: obs.histogram2d(PHI, PHI, np.ones((4, 7)) / 7), ValueError,
     ["weights cover 7 frames", "phi/psi 10"]),
    ("hist phi/psi lengths", lambda: obs.histogram2d(PHI, PHI[:5]), ValueError, ["same number of frames"]),
    ("hist zero bins", lambda: obs.histogram2d(PHI, PHI, bins=0), ValueError, ["bins", "positive"]),
    ("hist fractional bins", lambda: obs.histogram2d(PHI, PHI, bins=2.5), ValueError, ["bins", "whole number"]),
    ("dihedral index range", lambda: obs.dihedrals(POS, (0, 1, 2, 40)), ValueError, ["out of range", "22 atoms"]),
    ("dihedral repeated index", lambda: obs.dihedrals(POS, (0, 1, 1, 2)), ValueError, ["4 different atom indices"]),
    ("dihedral 2-D coordinates", lambda: obs.dihedrals(POS[..., :2], (0, 1, 2, 3)), ValueError,
     ["[frames, atoms, 3]"]),
    ("dihedral NaN positions", lambda: obs.ala2_phi_psi(np.full((22, 3), np.nan)), ValueError, ["NaN"]),
    ("jsd different bins", lambda: obs.jensen_shannon(np.ones(4), np.ones(5)), ValueError,
     ["different binning", "same bins"]),
    ("jsd negative", lambda: obs.jensen_shannon(np.array([1.0, -1.0]), np.ones(2)), ValueError, ["non-negative"]),
    ("interval one member", lambda: obs.credible_interval(np.ones((1, 5))), ValueError, ["at least 2"]),
    ("threshold missing", lambda: uncertainty_threshold("morse-cuau-committee"), KeyError,
     ["uncertainty_threshold", "pass a threshold"]),
    ("threshold unknown model", lambda: uncertainty_threshold("no-such-model"), FileNotFoundError,
     ["not a shipped model name", "'ala2-xtb'"]),
]


@pytest.mark.parametrize("name,call,exc,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, exc, words):
    with pytest.raises(exc) as info:
        call()
    text = str(info.value)
    for w in words:
        assert w in text, f"{name}: {w!r} not in {text!r}"


def test_benchmark_refuses_an_xtb_run_as_ml(tmp_path):
    run = tmp_path / "xtb.npz"
    np.savez(run, positions=POS, member_energy=np.zeros(0), driver="xtb", seed=0, temperature=300.0, ps=0.1,
             wall_s=1.0)
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ala2_ramachandran.py"), "analyse",
                          "--ml", str(run), "--xtb", str(run)], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "xtb-driven run without member energies" in res.stderr and "--driver ml" in res.stderr


@pytest.mark.parametrize("script,args,words", [
    ("examples/openmm_ala2_water.py", ["--steps", "0"], ["--steps", "positive"]),
    ("examples/openmm_ala2_water.py", ["--padding", "-1"], ["--padding", "> 0"]),
    ("examples/openmm_ala2_water.py", ["--threshold", "nan"], ["--threshold", "finite"]),
    ("benchmarks/ala2_ramachandran.py", ["run", "--driver", "ml", "--ps", "0", "--out", "x.npz"], ["--ps", "> 0"]),
    ("benchmarks/ala2_ramachandran.py", ["run", "--driver", "ml", "--seed", "-1", "--out", "x.npz"], ["--seed"]),
], ids=["steps0", "padding-1", "threshold-nan", "ps0", "seed-1"])
def test_script_arguments(tmp_path, script, args, words):
    res = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    for w in words:
        assert w in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "x.npz").exists()
