"""pair_style mlpot with ``device cuda`` vs ``device cpu`` on one GPU machine (builds the plugin there).

    python benchmarks/device/lammps_cuda.py OUT_DIR

For each shipped model (Morse committee, equivariant cu-emt) on a rattled fcc cell: energy, forces,
pressure and per-atom uncertainty (compute mlpot/atom) from cuda vs cpu; NVE energy drift on cuda;
time per MD step on cpu (all cores) and cuda for growing cells. JSON lines, also OUT_DIR/lammps_cuda.json.

Then (issue 12, item 4) atom-steps/s on cuda from 1k to 100k atoms with the edges built on the host and copied every
step (`edges host`) against built on the GPU from the positions alone (`edges device`, the default with device
cuda), with the share of a step spent outside the model call (the adapter). `--edges-only` skips the rest;
`--budget S` stops starting new measurements after S seconds (default 400).
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


def setup(lmp, model, device, n, ntypes, rattle=0.1, options=""):
    cmds = ["units metal", "atom_style atomic", "atom_modify map array", "lattice fcc 3.61",
            f"region box block 0 {n} 0 {n} 0 {n}", f"create_box {ntypes} box", "create_atoms 1 box",
            "mass 1 63.546"]
    if ntypes == 2:
        cmds += ["mass 2 196.96657", "set type 1 type/fraction 2 0.25 12345"]
    cmds += [f"displace_atoms all random {rattle} {rattle} {rattle} 4321 units box",
             f"pair_style mlpot {model} device {device} {options}", f"pair_coeff * * {MODELS[model][0]}",
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


def timing(model, device, n, steps, options=""):
    """One MD run (after 3 warm-up steps): s/step, atom-steps/s and the adapter's share (pair time outside the
    model call)."""
    lmp = lammps_instance()
    try:
        setup(lmp, model, device, n, MODELS[model][1], rattle=0.02, options=options)
        for c in ["velocity all create 300 1 mom yes", "fix nve all nve", "timestep 0.001", "thermo 100000",
                  "run 3"]:
            lmp.command(c)
        pair0, model0 = lmp.extract_pair("time_evaluate"), lmp.extract_pair("time_model")
        t0 = time.perf_counter()
        lmp.command(f"run {steps}")
        dt = (time.perf_counter() - t0) / steps
        pair, mod = lmp.extract_pair("time_evaluate") - pair0, lmp.extract_pair("time_model") - model0
        return {"atoms": lmp.get_natoms(), "options": options, "s_per_step": dt,
                "atom_steps_per_s": lmp.get_natoms() / dt, "pair_s_per_step": pair / steps,
                "adapter_share_of_pair": (pair - mod) / pair if pair > 0 else None,
                "edges_device": lmp.extract_pair("edges_device"),
                "candidate_builds": lmp.extract_pair("candidate_builds")}
    finally:
        lmp.close()


def edges_phase(budget_s, t_start, device="cuda", max_n=29):
    """edges host vs device, 1k..100k atoms (fcc n x n x n x 4), alternating, smaller cells first."""
    plan = [("morse-cuau-committee", "", (6, 10, 15, 20, 29)),
            ("cu-emt", "dtype float32", (6, 10, 15, 20, 29)),
            ("cu-emt", "", (6, 10, 15, 20))]
    for model, dtype, sizes in plan:
        for n in [n for n in sizes if n <= max_n]:
            steps = 20 if n <= 10 else 10 if n <= 15 else 5
            for edges in ("host", "device"):
                key = f"edges_{model}_{dtype.replace(' ', '_') or 'float64'}_n{n}_{edges}"
                if time.perf_counter() - t_start > budget_s:
                    report(key + "_skipped", "budget spent")
                    continue
                try:
                    report(key, timing(model, device, n, steps, f"{dtype} edges {edges}"))
                except Exception as exc:
                    report(key + "_error", repr(exc)[:300])


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    budget = float(sys.argv[sys.argv.index("--budget") + 1]) if "--budget" in sys.argv else 400.0
    t0 = time.perf_counter()
    report("plugin", str(plugin_path()))
    report("plugin_build_s", time.perf_counter() - t0)
    if "--edges-only" in sys.argv:  # `--device cpu --max-n 6` tries it out without a GPU
        device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda"
        max_n = int(sys.argv[sys.argv.index("--max-n") + 1]) if "--max-n" in sys.argv else 29
        edges_phase(budget, t0, device, max_n)
        (out / "lammps_cuda.json").write_text(json.dumps(results, indent=1))
        return
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
    edges_phase(budget, t0)
    (out / "lammps_cuda.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
