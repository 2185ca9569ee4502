"""`mlpot holstein lammps` (data file + deck) and `mlpot holstein analyze` on LAMMPS dumps and OpenMM
trajectories: the written lattice is exactly the runner's t = 0 state on the conventions' positions, and the
observables read back from engine output equal those computed directly from the Q field."""
import json
import math
import subprocess

import numpy as np
import pytest
import torch

from mlpot_plugins.cli import main
from mlpot_plugins.holstein.dynamics import quench_initial_state
from mlpot_plugins.holstein.observables import domain_length, s_pi_pi
from mlpot_plugins.holstein.params import HolsteinParams
from mlpot_plugins.holstein.trajectories import read_dcd

from lammps_util import plugin  # noqa: F401 (fixture: the compiled LAMMPS plugin)


def read_data_file(path):
    """(box [3, 2], atoms [N, 5] id type x y z, velocities [N, 4]) of a LAMMPS atomic data file."""
    lines = path.read_text().splitlines()
    box = np.array([[float(v) for v in ln.split()[:2]] for ln in lines if ln.endswith(("xhi", "yhi", "zhi"))])
    a0 = lines.index("Atoms # atomic") + 2
    n = int(next(ln.split()[0] for ln in lines if ln.endswith(" atoms")))
    atoms = np.array([[float(v) for v in ln.split()] for ln in lines[a0:a0 + n]])
    v0 = lines.index("Velocities") + 2
    vel = np.array([[float(v) for v in ln.split()] for ln in lines[v0:v0 + n]])
    return box, atoms, vel


def test_deck_writes_the_runner_state_on_the_lattice(tmp_path, capsys):
    out = tmp_path / "deck"
    assert main(["holstein", "lammps", "--out", str(out), "--L", "8", "--steps", "30", "--seed", "3",
                 "--every", "10", "--param", "gamma=0.5", "--param", "m=2"]) == 0
    p = HolsteinParams(gamma=0.5, m=2.0)
    Q0, P0 = quench_initial_state(8, p, seed=3)
    box, atoms, vel = read_data_file(out / "holstein.data")
    assert box[:2].tolist() == [[0.0, 8.0], [0.0, 8.0]] and box[2, 0] < -Q0.abs().max() and box[2, 1] > Q0.abs().max()
    i, j = np.divmod(np.arange(64), 8)
    assert atoms[:, 0].tolist() == list(range(1, 65)) and set(atoms[:, 1]) == {1.0}
    assert np.array_equal(atoms[:, 2], i.astype(float)) and np.array_equal(atoms[:, 3], j.astype(float))
    assert np.array_equal(atoms[:, 4], Q0.numpy().ravel())  # %.17g: the runner's t = 0 field bit for bit
    assert np.array_equal(vel[:, 1:3], np.zeros((64, 2))) and np.allclose(vel[:, 3], (P0 / 2.0).numpy().ravel(),
                                                                          rtol=1e-15, atol=0)
    deck = (out / "in.holstein").read_text()
    for line in ["units lj", "atom_style atomic", "boundary p p f", "pair_style mlpot holstein-d4",
                 "pair_coeff * * Q", "fix lv all langevin 0.1 0.1 4.0 ${seed}", "fix xy all setforce 0.0 0.0 NULL",
                 "timestep 0.05", "dump q all custom 10 holstein.dump id x y z vz c_u[1]", "run ${steps} upto",
                 "variable steps index 30", "thermo_modify temp tz"]:
        assert line in deck, line
    assert deck.index("fix lv") < deck.index("fix xy") < deck.index("fix nve")  # setforce after the noise
    # the model's recommended hot-phase fallback (metadata extra.fallback_default), until t = 5 = step 100
    assert deck.split("pair_style")[1].splitlines()[0].endswith(" fallback 0.07 until 100")
    info = json.loads((out / "holstein-lammps.json").read_text())
    assert info["unit_mapping"]["langevin_damp"] == 4.0 and info["params"]["m"] == 2.0 and info["L"] == 8
    assert "lmp -in in.holstein" in capsys.readouterr().out


def write_dump(path, frames, box_L, order=None, step_every=10):
    """A LAMMPS custom dump (id x y z) of Q frames [F, L, L], atoms in ``order`` (default: shuffled)."""
    L = frames.shape[-1]
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        for f, Q in enumerate(frames):
            k = rng.permutation(L * L) if order is None else order
            i, j = np.divmod(k, L)
            fh.write(f"ITEM: TIMESTEP\n{f * step_every}\nITEM: NUMBER OF ATOMS\n{L * L}\nITEM: BOX BOUNDS pp pp ff\n"
                     f"0 {box_L}\n0 {box_L}\n-50 50\nITEM: ATOMS id x y z\n")
            a = box_L / L
            for kk, ii, jj in zip(k, i, j):
                fh.write(f"{kk + 1} {float(ii * a)!r} {float(jj * a)!r} {float(Q.reshape(-1)[kk])!r}\n")


def test_analyze_reads_a_lammps_dump_like_the_field(tmp_path, capsys):
    """Shuffled atom order, spacing 1.5, two seeds: the recorded S(pi,pi)/N and L(t) equal the direct ones."""
    g = torch.Generator().manual_seed(5)
    seeds = [torch.randn(4, 12, 12, generator=g, dtype=torch.float64) * 3 for _ in range(2)]
    for s, Q in enumerate(seeds):
        write_dump(tmp_path / f"s{s}.dump", Q, 18.0)
    assert main(["holstein", "analyze", str(tmp_path / "s0.dump"), str(tmp_path / "s1.dump"), "--dt", "0.05",
                 "--out", str(tmp_path / "an")]) == 0
    rec = json.loads((tmp_path / "an" / "analysis.json").read_text())
    Q = torch.stack(seeds, 1)  # [frames, seeds, L, L]
    assert rec["t"] == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=1e-15) and rec["batch"] == 2 and rec["L"] == 12
    assert rec["s_pi_pi_per_sample"] == [s_pi_pi(q).tolist() for q in Q]
    assert rec["s_pi_pi"] == pytest.approx([float(s_pi_pi(q).mean()) for q in Q], rel=1e-14)
    assert rec["domain_length"] == pytest.approx([float(domain_length(q).mean()) for q in Q], rel=1e-14)
    for png in ("domain_growth.png", "s_pi_pi.png", "final_order_field.png"):
        assert (tmp_path / "an" / png).stat().st_size > 1000
    assert "growth exponent" in capsys.readouterr().out


def test_analyze_reads_an_openmm_dcd(tmp_path):
    """OpenMM's own DCD writer (Angstrom on disk): particle k = site k row-major, Q = z in nm."""
    from openmm import Vec3
    from openmm.app import DCDFile, Element, Topology
    from openmm.unit import nanometer, picosecond

    L = 8
    top = Topology()
    res = top.addResidue("S", top.addChain())
    for _ in range(L * L):
        top.addAtom("S", Element.getBySymbol("C"), res)
    g = torch.Generator().manual_seed(2)
    frames = torch.randn(4, L, L, generator=g, dtype=torch.float64) * 2
    i, j = np.divmod(np.arange(L * L), L)
    with open(tmp_path / "q.dcd", "wb") as fh:
        dcd = DCDFile(fh, top, 0.001 * picosecond, firstStep=0, interval=10)
        for Q in frames:
            dcd.writeModel([Vec3(float(a), float(b), float(z)) for a, b, z in zip(i, j, Q.reshape(-1))] * nanometer)
    z, frame_ps = read_dcd(tmp_path / "q.dcd")
    assert z.shape == (4, 64) and np.allclose(z, frames.reshape(4, -1).numpy(), atol=1e-6)  # float32 on disk
    assert frame_ps == pytest.approx(0.01, rel=1e-6)
    assert main(["holstein", "analyze", str(tmp_path / "q.dcd"), "--frame-dt", "2.5"]) == 0
    rec = json.loads((tmp_path / "analysis.json").read_text())
    assert rec["t"] == [0.0, 2.5, 5.0, 7.5]
    assert rec["s_pi_pi"] == pytest.approx([float(s_pi_pi(q)) for q in frames], rel=1e-5)
    assert math.isfinite(rec["domain_length"][-1])


def test_deck_runs_a_lammps_quench_end_to_end(tmp_path, plugin):
    """The written deck under the real `lmp` (2 ranks): the t = 0 frame is the runner's state, the per-site
    std is the model's, temp is <P^2/m>, sites stay on the lattice, and `-var continue 1` continues from the
    newest write_restart file; `mlpot holstein analyze` reads the folder."""
    import mlpot_plugins
    from lammps_util import VENV_BIN, run_lmp

    out = tmp_path / "deck"
    assert main(["holstein", "lammps", "--out", str(out), "--L", "8", "--steps", "10", "--seed", "4",
                 "--every", "5", "--restart-every", "5"]) == 0
    deck = (out / "in.holstein").read_text()
    run_lmp(deck, out, nprocs=2)
    p = HolsteinParams()
    Q0, P0 = quench_initial_state(8, p, seed=4)
    frame0 = (out / "holstein.dump").read_text().split("ITEM: TIMESTEP")[1].splitlines()
    cols = frame0[8].split()[2:]
    rows = np.array([[float(v) for v in ln.split()] for ln in frame0[9:9 + 64]])
    assert np.array_equal(rows[:, cols.index("z")], Q0.numpy().ravel())
    std = mlpot_plugins.load("holstein-d4").module.compute_lattice(Q0.float(), True)["forces_std"]
    assert np.allclose(rows[:, cols.index("c_u[1]")], std.double().numpy().ravel(), rtol=1e-5, atol=1e-7)
    log = (out / "log.lammps").read_text().splitlines()
    head = next(k for k, ln in enumerate(log) if ln.split()[:3] == ["Step", "Time", "Temp"])
    assert float(log[head + 1].split()[2]) == pytest.approx(float((P0 ** 2 / p.m).mean()), rel=1e-6)
    assert sorted(x.name for x in out.glob("holstein.restart.*")) == ["holstein.restart.10", "holstein.restart.5"]
    res = subprocess.run([str(VENV_BIN / "lmp"), "-in", "in.holstein", "-var", "continue", "1", "-var", "steps", "15"],
                         cwd=out, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
    assert main(["holstein", "analyze", str(out)]) == 0
    rec = json.loads((out / "analysis.json").read_text())
    assert rec["t"] == pytest.approx([0.0, 0.25, 0.5, 0.75]) and rec["L"] == 8
    assert rec["s_pi_pi"][0] == pytest.approx(float(s_pi_pi(Q0)), rel=1e-12)


def test_fallback_deck_counts_fallback_sites_in_thermo():
    """With a threshold the deck asks pair_style mlpot for the fallback and prints the count per step
    (`compute fb all pair mlpot`, c_fb[1], the pair style's extra global value)."""
    from mlpot_plugins.holstein.lammps_deck import FALLBACK_THERMO, deck_text

    deck = deck_text("m.pt", HolsteinParams(), 16, 100, 0, 0.05, 10, 10, 50, "cuda")
    assert "pair_style mlpot m.pt device cuda fallback 0.05\n" in deck
    assert "compute fb all pair mlpot" in deck and FALLBACK_THERMO == "c_fb[1]"
    thermo = next(ln for ln in deck.splitlines() if ln.startswith("thermo_style"))
    assert thermo.split()[-1] == "c_fb[1]" and deck.index("compute fb") < deck.index("thermo_style")


def test_generate_hot_states_are_ed_labelled_t0_states(tmp_path):
    """`generate --hot N`: N extra t = 0 hot states (kind "hot", exact ED labels); the trajectories are the
    same as without them."""
    from mlpot_plugins.holstein.data import generate
    from mlpot_plugins.holstein.ed import ed_solve

    a = generate(tmp_path / "a.pt", L=6, n_quench=1, n_domain=0, quench_steps=2, stride=2, progress=False)
    b = generate(tmp_path / "b.pt", L=6, n_quench=1, n_domain=0, quench_steps=2, stride=2, progress=False, n_hot=3)
    assert b["kind"] == ["quench", "hot", "hot", "hot"] and torch.equal(b["Q"][:1], a["Q"])
    assert b["time"][1:].tolist() == [0.0] * 3 and len(set(b["traj"].tolist())) == 4
    assert torch.allclose(b["f_el"][1:], ed_solve(b["Q"][1:], HolsteinParams())["electronic_forces"], atol=1e-12)
    assert 1.5 < float(b["Q"][1:].std()) < 3.0  # N(0, kT_hot / k0 = 5)


def test_weights_from_an_export_rebuild_it_exactly(tmp_path):
    """The shipped file's weights (for fine-tuning) re-export to the same forces and std."""
    import mlpot_plugins
    from mlpot_plugins.holstein.train import export_saved, weights_from_export

    weights_from_export("holstein-d4", tmp_path / "w.sd")
    export_saved(tmp_path / "w.sd", tmp_path / "again.pt")
    Q = torch.randn(2, 12, 12, generator=torch.Generator().manual_seed(0)) * 2
    x = mlpot_plugins.load("holstein-d4").module.compute_lattice(Q, True)
    y = mlpot_plugins.load(tmp_path / "again.pt").module.compute_lattice(Q, True)
    assert torch.equal(x["forces"], y["forces"]) and torch.equal(x["forces_std"], y["forces_std"])
