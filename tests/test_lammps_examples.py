"""The example decks in examples/lammps run as documented (auto-loaded plugin, shortened runs)."""
from pathlib import Path

import numpy as np
import pytest

from lammps_util import entry_point_env, plugin, run_lmp  # noqa: F401

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "lammps"


def run_example(tmp_path, name, nprocs=1, **variables):
    deck = (EXAMPLES / name).read_text()
    for key, value in variables.items():  # as `-var key value` on the command line
        deck = deck.replace(f"variable {key} index", f"variable {key} index {value} #")
    return run_lmp(deck, tmp_path, nprocs=nprocs, env=entry_point_env(tmp_path))


def test_nvt_cu(tmp_path, plugin):
    res = run_example(tmp_path, "in.nvt_cu", nprocs=2, steps=20)
    assert "Loop time" in res.stdout


def test_uncertainty_dump(tmp_path, plugin):
    run_example(tmp_path, "in.uncertainty_dump", steps=50)
    devi = np.loadtxt(tmp_path / "model_devi.out")
    assert devi.shape == (6, 7) and np.all(devi[:, 4] > 0) and np.all(devi[:, 1] > 0)  # force and virial
    lines = (tmp_path / "uncertainty.dump").read_text().splitlines()
    assert "c_u[1] c_u[2]" in lines[8] and len(lines) == 2 * (9 + 255)


def test_halt(tmp_path, plugin):
    res = run_example(tmp_path, "in.halt", threshold=0.05)
    assert "Fix halt condition" in res.stdout
    stop = [l for l in res.stdout.splitlines() if l.startswith("stopped at step")][0]
    assert int(stop.split()[3]) < 500 and float(stop.split()[-2]) > 0.05


def test_cu_emt_active(tmp_path, plugin):
    """The trained equivariant committee: candidate frames dumped above the lower trust level, halt above
    the upper one, model_devi with real virial columns, uncalibrated = calibrated / uncertainty_scale."""
    from mlpot_plugins import load, pretrained_path

    res = run_example(tmp_path, "in.cu_emt_active", steps=4, every=2, lower=0.004, upper=0.005)
    assert "Fix halt condition" in res.stdout
    stop = [l for l in res.stdout.splitlines() if l.startswith("stopped at step")][0]
    assert stop.startswith("stopped at step 2:")
    umax = float(stop.split()[7])
    frames = (tmp_path / "candidates.dump").read_text().split("ITEM: TIMESTEP")[1:]
    assert [int(f.split()[0]) for f in frames] == [2]  # step 0 (a perfect lattice) agrees: skipped
    devi = np.loadtxt(tmp_path / "model_devi.out")
    np.testing.assert_array_equal(devi[:, 0], [0, 2])
    assert np.all(devi[:, 1] > 0)  # member virials of the re-exported model
    scale = load(pretrained_path("cu-emt")).metadata["uncertainty_scale"]
    assert devi[1, 4] == pytest.approx(umax / scale, rel=1e-5)


def test_holstein_lattice(tmp_path, plugin):
    """The lattice deck: shipped holstein-d4 on a 24 x 24 lattice, two ranks, dump of Q and the per-site std."""
    res = run_example(tmp_path, "in.holstein_lattice", nprocs=2, L=24, steps=20)
    assert "Loop time" in res.stdout
    frames = (tmp_path / "holstein_lattice.dump").read_text().split("ITEM: TIMESTEP")[1:]
    assert len(frames) == 1 and "id x y z c_u[1]" in frames[0]
    rows = np.array([l.split() for l in frames[0].splitlines()[9:]], dtype=float)
    assert rows.shape == (576, 5) and np.all(rows[:, 4] > 0)
    sites = {(x, y) for x, y in rows[:, 1:3].tolist()}  # every site once, still exactly on the lattice
    assert sites == {(float(i), float(j)) for i in range(24) for j in range(24)}
