"""Holstein lattice dynamics under LAMMPS (`pair_style mlpot holstein-d4`, issue 13): site-steps per second
for 1 and 2 ranks, and the LAMMPS step time over the bare ``compute_lattice_block`` call on the same sites
(the block one rank holds: L/ranks x L interior plus the halo), from 10^4 to 10^6 sites.

    PYTHONPATH=. python benchmarks/lattice_lammps_scale.py [--L 100 316 1000] [--ranks 1 2] [--steps 20]

The deck builds the lattice itself (no data file): `create_atoms` on a square lattice of spacing 1 in a
`units lj`, `boundary p p f` box, Q = z ~ N(0, 0.8) (`set ... z v_q`), the quench deck's integrator (`fix langevin`
kT 0.1, damp 25 = m/gamma, `fix setforce 0 0 NULL`, `fix nve`; without the thermostat the direct-force committee is
not conservative and a 1000-step NVE run of 10^6 sites ran away: a site's |Q| left the z box), dt 0.05, skin 1.0
checked every 10 steps, thermo every max(100, steps/10) steps. ``--workdir`` keeps each run's log.lammps. LAMMPS time = the `Loop time` of `run STEPS` after a
`run 2` warm-up (TorchScript profiles its first calls). Bare call = min of repeated calls in this process
(one torch thread, as each rank has). The machine is shared, so the load average is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from lattice_block_cost import timeit, with_halo  # benchmarks/ is on sys.path when this file runs

BIN = Path(sys.executable).parent


def deck(L: int, steps: int, model: str) -> str:
    thermo = max(100, steps // 10)  # a few thermo lines: progress in log.lammps and LAMMPS' lost-atom check
    return f"""units lj
processors * * 1
atom_style atomic
boundary p p f
lattice custom 1.0 a1 1 0 0 a2 0 1 0 a3 0 0 1 basis 0 0 0
region box block 0 {L} 0 {L} -20 20 units box
create_box 1 box
region plane block 0 {L} 0 {L} -0.25 0.25 units box
create_atoms 1 region plane
mass 1 5.0
variable q atom normal(0,0.8,12345)
set group all z v_q
pair_style mlpot {model}
pair_coeff * * Q
neighbor 1.0 bin
neigh_modify every 10 delay 0 check yes
fix lv all langevin 0.1 0.1 25.0 4321
fix xy all setforce 0.0 0.0 NULL
fix nve all nve
timestep 0.05
thermo {thermo}
run 2
run {steps}
"""


def lammps_loop(L: int, ranks: int, steps: int, model: str, workdir: Path) -> dict:
    (workdir / "in.scale").write_text(deck(L, steps, model))
    cmd = [str(BIN / "lmp"), "-in", "in.scale", "-log", "log.lammps"]
    if ranks > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(ranks)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS="1", MLPOT_TIMING="1")
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=6 * 3600)
    out = res.stdout + res.stderr
    if res.returncode:
        raise RuntimeError(f"lmp failed ({res.returncode}):\n{out[-3000:]}")
    loops = re.findall(r"Loop time of ([0-9.e+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", out)
    t, procs, n, atoms = loops[-1]
    assert int(procs) == ranks and int(n) == steps and int(atoms) == L * L, loops
    timing = re.search(r"mlpot timing \(rank 0\): ([0-9.]+) s in pair_style mlpot, ([0-9.]+) s of it in the model", out)
    pair_s, model_s = (float(timing.group(1)), float(timing.group(2))) if timing else (None, None)
    return {"loop_s": float(t), "step_s": float(t) / steps, "pair_s_rank0_all_runs": pair_s,
            "model_s_rank0_all_runs": model_s}


def bare_block_call(L: int, ranks: int, model_name: str, repeats: int) -> float:
    """Seconds of one compute_lattice_block call on the block rank 0 holds (rows split among the ranks)."""
    from mlpot_plugins.model_file import load

    model = load(model_name)
    h = int(model.interaction_range)
    Q = (torch.randn(L, L, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.8)
    block = with_halo(Q, 0, -(-L // ranks), h).to(model.dtype)
    call = model.module.compute_lattice_block
    return timeit([lambda: call(block, h, False)], repeats, warm=2)[0][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[100, 316, 1000])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default="holstein-d4")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--workdir", help="keep each run's deck and log.lammps here (default: a temporary folder)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {os.cpu_count()}-core CPU, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} "
          f"at start (shared box); model {a.model}, {a.steps} steps")
    rows = []
    for L in a.L:
        per_rank = {}
        for ranks in a.ranks:
            if a.workdir:
                wd = Path(a.workdir) / f"L{L}-ranks{ranks}"
                wd.mkdir(parents=True, exist_ok=True)
                lmp = lammps_loop(L, ranks, a.steps, a.model, wd)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    lmp = lammps_loop(L, ranks, a.steps, a.model, Path(tmp))
            bare = bare_block_call(L, ranks, a.model, a.repeats)
            rate = L * L * a.steps / lmp["loop_s"]
            per_rank[ranks] = rate
            row = {"L": L, "sites": L * L, "ranks": ranks, "site_steps_per_s": rate, **lmp, "bare_block_call_s": bare,
                   "step_over_bare": lmp["step_s"] / bare}
            rows.append(row)
            print(f"L={L:5d} ({L * L:8d} sites) ranks={ranks}: {rate:10.3g} site-steps/s, step {lmp['step_s'] * 1e3:8.2f} ms, "
                  f"bare block call {bare * 1e3:8.2f} ms, step/bare {row['step_over_bare']:.3f}", flush=True)
        if 1 in per_rank and 2 in per_rank:
            print(f"L={L:5d}: 2 ranks / 1 rank = {per_rank[2] / per_rank[1]:.2f}x", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
