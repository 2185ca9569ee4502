"""pair_style mlpot with ``device cuda`` vs ``device cpu`` on one GPU machine (builds the plugin there).

    python benchmarks/device/lammps_cuda.py OUT_DIR

For each shipped model (Morse committee, equivariant cu-emt) on a rattled fcc cell: energy, forces,
pressure and per-atom uncertainty (compute mlpot/atom) from cuda vs cpu; NVE energy drift on cuda;
time per MD step on cpu (all cores) and cuda for growing cells. JSON lines, also OUT_DIR/lammps_cuda.json.
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from mlpot_plugins.lammps import lammps_instance, plugin_path

results = {}
MODELS = {"morse-cuau-committee": ("Cu Au", 2), "cu-emt": ("Cu", 1)}


def report(key, value):
    results[key] = value
    print(json.dumps({key: value}), flush=True)


def setup(lmp, model, device, n, ntypes, rattle=0.1):
    cmds = ["units metal", "atom_style atomic", "atom_modify map array", "lattice fcc 3.61",
            f"region box block 0 {n} 0 {n} 0 {n}", f"create_box {ntypes} box", "create_atoms 1 box",
            "mass 1 63.546"]
    if ntypes == 2:
        cmds += ["mass 2 196.96657", "set type 1 type/fraction 2 0.25 12345"]
    cmds += [f"displace_atoms all random {rattle} {rattle} {rattle} 4321 units box",
             f"pair_style mlpot {model} device {device}", f"pair_coeff * * {MODELS[model][0]}",
             "thermo_style custom step pe press etotal", "thermo_modify norm no"]
    for c in cmds:
        lmp.command(c)


def single_point(model, device, n=3):
    lmp = lammps_instance()
    try:
        setup(lmp, model, device, n, MODELS[model][1])
        lmp.command("compute u all mlpot/atom")
        lmp.command("compute umax all reduce max c_u[1]")
        lmp.command("run 0")
        natoms = lmp.get_natoms()
        f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(natoms, 3).copy()
        u = np.ctypeslib.as_array(lmp.gather("c_u", 1, 2)).reshape(natoms, 2)[:, 0].copy() if hasattr(lmp, "gather") else None
        return {"pe": lmp.get_thermo("pe"), "press": lmp.get_thermo("press"), "f": f, "u": u,
                "umax": lmp.extract_compute("umax", 0, 0)}
    finally:
        lmp.close()


def nve_drift(model, n=3, steps=400):
    lmp = lammps_instance()
    try:
        setup(lmp, model, "cuda", n, MODELS[model][1], rattle=0.0)
        for c in ["velocity all create 600 4928459 mom yes rot yes dist gaussian", "fix nve all nve",
                  "timestep 0.001", "run 0"]:
            lmp.command(c)
        e0 = lmp.get_thermo("etotal")
        lmp.command(f"run {steps}")
        return {"atoms": lmp.get_natoms(), "steps": steps, "dt_fs": 1.0,
                "drift_meV_per_atom": abs(lmp.get_thermo("etotal") - e0) / lmp.get_natoms() * 1e3}
    finally:
        lmp.close()


def timing(model, device, n, steps):
    lmp = lammps_instance()
    try:
        setup(lmp, model, device, n, MODELS[model][1], rattle=0.02)
        for c in ["velocity all create 300 1 mom yes", "fix nve all nve", "timestep 0.001", "thermo 100000",
                  "run 3"]:
            lmp.command(c)
        t0 = time.perf_counter()
        lmp.command(f"run {steps}")
        dt = (time.perf_counter() - t0) / steps
        return {"atoms": lmp.get_natoms(), "s_per_step": dt, "atom_steps_per_s": lmp.get_natoms() / dt}
    finally:
        lmp.close()


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report("plugin", str(plugin_path()))
    report("plugin_build_s", time.perf_counter() - t0)
    for model in MODELS:
        try:
            cpu, gpu = single_point(model, "cpu"), single_point(model, "cuda")
            d = {"pe_cpu": cpu["pe"], "pe_diff": gpu["pe"] - cpu["pe"], "press_diff": gpu["press"] - cpu["press"],
                 "max_force_diff": float(np.abs(gpu["f"] - cpu["f"]).max()),
                 "max_force": float(np.abs(cpu["f"]).max()), "umax_cpu": cpu["umax"], "umax_cuda": gpu["umax"]}
            if cpu["u"] is not None:
                d["max_u_diff"] = float(np.abs(gpu["u"] - cpu["u"]).max())
            report(f"{model}_cuda_vs_cpu", d)
            report(f"{model}_nve_cuda", nve_drift(model))
        except Exception as exc:
            report(f"{model}_error", repr(exc)[:500])
    for model, sizes in (("morse-cuau-committee", (6, 12, 20)), ("cu-emt", (4, 8, 14))):
        for n in sizes:
            for device in ("cpu", "cuda"):
                if device == "cpu" and n == sizes[-1]:
                    continue
                try:
                    report(f"time_{model}_{device}_n{n}", timing(model, device, n, 10 if device == "cpu" else 30))
                except Exception as exc:
                    report(f"time_{model}_{device}_n{n}_error", repr(exc)[:300])
    (out / "lammps_cuda.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
