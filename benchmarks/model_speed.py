"""Model-speed levers of issue 12 on the shipped cu-emt committee (K = 4), each measured in this one run.

Every configuration runs in its own process (the allocator setting is per process), through the ASE
calculator on a rattled fcc Cu cell, forces + virial + uncertainty, one warm-up call then the median of
``--repeats`` calls:

* dtype: float64 (the file) vs float32 chosen at load, 864 atoms, and the held-out force RMSE vs EMT of both;
* allocator: the engines' default (mlpot_plugins.engine_setup.tune_malloc) vs ``MLPOT_MALLOC=system``
  (glibc's defaults), 864 and 2048 atoms;
* threads: 1 (the engines' default) vs 2 torch threads, 864 atoms (on a shared machine);
* spline basis: the cu-emt weights re-scripted with the 4-spline (sparse) basis vs every spline (dense);
* NVE drift: a short velocity-Verlet run (108 atoms, 300 K) in float64 and in float32.

``python benchmarks/model_speed.py [--repeats 3] [--nve-steps 100] [--skip-2048]``
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

WORKER = "--worker"


def rattled(repeat, seed=0):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.positions += np.random.default_rng(seed).normal(0, 0.05, atoms.positions.shape)
    return atoms


def worker(cfg):
    """One configuration in this process: call times (s) and, for 864 atoms, the force RMSE vs EMT."""
    from ase.calculators.emt import EMT

    from mlpot_plugins.ase import MLPotCalculator

    model = "cu-emt"
    if cfg.get("basis"):  # the cu-emt weights re-scripted with this code's spline basis, sparse or dense
        model = rescripted(cfg["basis"])
    calc = MLPotCalculator(model, dtype=cfg["dtype"])
    atoms = rattled(cfg["repeat"])
    times = []
    for i in range(cfg["repeats"] + 1):
        atoms.positions += 1e-4  # a new geometry each call
        t0 = time.perf_counter()
        calc.calculate(atoms, ["energy", "forces", "stress", "forces_std"])
        if i:
            times.append(time.perf_counter() - t0)
    out = {"median_s": float(np.median(times)), "times_s": times, "atoms": len(atoms)}
    if cfg.get("rmse"):
        errs = []
        for seed in range(3):
            held = rattled(2, seed=100 + seed)
            ref = held.copy()
            ref.calc = EMT()
            held.calc = calc
            errs.append(held.get_forces() - ref.get_forces())
        out["force_rmse"] = float(np.sqrt(np.mean(np.square(errs))))
    return out


def rescripted(basis):
    import tempfile

    from mlpot_plugins import export, load, pretrained_path
    from mlpot_plugins.models.equivariant import EquivariantPotential
    from mlpot_plugins.models.radial import CubicBSplineBasis

    class DenseSplineBasis(CubicBSplineBasis):
        def forward(self, r):
            return self.dense(r)

    old = load(pretrained_path("cu-emt"))
    model = EquivariantPotential(**dict(old.metadata["extra"]["hparams"], dtype="float64"),
                                 species=old.metadata["species"])
    model.load_state_dict(old.module.state_dict(), strict=True)
    model.uncertainty_scale = old.metadata["uncertainty_scale"]
    if basis == "dense":
        model.basis.__class__ = DenseSplineBasis
    return export(model, tempfile.mkdtemp() + f"/cu-emt-{basis}.pt")


def nve(dtype, steps):
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from mlpot_plugins.ase import MLPotCalculator

    atoms = rattled(3, seed=4)
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    atoms.calc = MLPotCalculator("cu-emt", dtype=dtype)
    dyn = VelocityVerlet(atoms, 2.0 * units.fs)
    etot = []
    dyn.attach(lambda: etot.append(atoms.get_total_energy()), interval=1)
    dyn.run(steps)
    e = np.array(etot)
    slope = np.polyfit(np.arange(len(e)) * 2e-3, e, 1)[0] / len(atoms)  # eV/atom/ps
    return {"atoms": len(atoms), "steps": steps, "drift_eV_per_atom_per_ps": float(slope),
            "max_dev_eV_per_atom": float(np.abs(e - e[0]).max() / len(atoms))}


def run(cfg, env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLPOT_MALLOC", "MLPOT_THREADS", "MALLOC_"))}
    full.update(OMP_NUM_THREADS="1", **env)
    res = subprocess.run([sys.executable, __file__, WORKER, json.dumps(cfg)], capture_output=True, text=True,
                         env=full, timeout=1800)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine():
    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 2**20 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB, {platform.system()}, torch {torch.__version__}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nve-steps", type=int, default=100)
    ap.add_argument("--skip-2048", action="store_true")
    ap.add_argument("--only", help="run only the rows whose name contains this (e.g. spline)")
    a = ap.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    base = {"dtype": "float64", "repeat": 6, "repeats": a.repeats}
    rows = {
        "864 float64": (dict(base, rmse=True), {}),
        "864 float32": (dict(base, dtype="float32", rmse=True), {}),
        "864 float64 malloc=system": (base, {"MLPOT_MALLOC": "system"}),
        "864 float64 threads=2": (base, {"MLPOT_THREADS": "2"}),
        "864 float64 dense spline": (dict(base, basis="dense"), {}),
        "864 float64 sparse spline": (dict(base, basis="sparse"), {}),
    }
    if not a.skip_2048:
        big = dict(base, repeat=8)  # 2048 atoms
        rows["2048 float64"] = (big, {})
        rows["2048 float64 malloc=system"] = (big, {"MLPOT_MALLOC": "system"})
    if a.only:
        rows = {k: v for k, v in rows.items() if a.only in k}
    res = {}
    for name, (cfg, env) in rows.items():
        res[name] = run(cfg, env)
        print(f"{name:30s} {res[name]['median_s']:.3f} s/call  {res[name].get('force_rmse', '')}", flush=True)
    print("ratios (this run):")

    def ratio(label, slow, fast, key="median_s", fmt="{:.2f}x"):
        if slow in res and fast in res:
            print(f"  {label:40s}: {fmt.format(res[slow][key] / res[fast][key])}")

    ratio("float32 speed-up, 864 atoms", "864 float64", "864 float32")
    ratio("float32 / float64 held-out force RMSE", "864 float32", "864 float64", "force_rmse", "{:.4f}")
    for n in ("864", "2048"):
        ratio(f"allocator tuned vs system, {n} atoms", f"{n} float64 malloc=system", f"{n} float64")
    ratio("1 vs 2 torch threads, 864 atoms (>1: 1 faster)", "864 float64 threads=2", "864 float64")
    ratio("sparse vs dense spline basis, 864 atoms", "864 float64 dense spline", "864 float64 sparse spline")
    if a.nve_steps:
        for dtype in ("float64", "float32"):
            print(f"  NVE {dtype}: {json.dumps(run({'nve': dtype, 'steps': a.nve_steps}, {}))}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == WORKER:
        cfg = json.loads(sys.argv[2])
        print(json.dumps(nve(cfg["nve"], cfg["steps"]) if "nve" in cfg else worker(cfg)))
    else:
        main()
