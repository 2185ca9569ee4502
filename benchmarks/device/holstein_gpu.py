"""One GPU session for the Holstein family: 40x40 ED training data and GPU timings.

    python benchmarks/device/holstein_gpu.py OUT_DIR --budget 330

1. times batched fp64 ``eigh`` at 40x40 (cuSOLVER; MAGMA too with --try-magma) and picks the faster;
2. runs ED Langevin trajectories on 40x40 (``mlpot_plugins.holstein.data.generate`` on cuda: 8 hot quenches
   and 8 random-domain runs), with step counts sized so the run fits ``--budget`` seconds, and writes them
   as float32 parts (quench / domains) small enough to copy back;
3. times the shipped ML committee (``holstein-d4``) on the GPU at L = 40..1000 and a 200x200 ML Langevin run.
Prints one JSON line per measurement; everything also goes to OUT_DIR/holstein_gpu.json.
Merge the parts here with ``python benchmarks/device/merge_holstein_parts.py``.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mlpot_plugins.holstein.data import generate
from mlpot_plugins.holstein.dynamics import MLForces
from mlpot_plugins.holstein.ed import hamiltonian
from mlpot_plugins.holstein.langevin import LangevinIntegrator
from mlpot_plugins.holstein.params import HolsteinParams, hot_random_state
from mlpot_plugins.model_file import load

results = {}


def report(key, value):
    results[key] = value
    print(json.dumps({key: value}), flush=True)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def sync_time(fn, reps=3):
    fn()
    fn()  # TorchScript profiles the first calls
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--budget", type=float, default=330.0, help="seconds for the ED trajectories")
    ap.add_argument("--L", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cuda", help="cpu only to try the script out on a tiny lattice")
    ap.add_argument("--ml-sizes", default="40,100,200,1000")
    ap.add_argument("--try-magma", action="store_true",
                    help="also time MAGMA's eigh (on an H100 it took 43 s vs cuSOLVER's 0.16 s for 8 x 1600^2)")
    ap.add_argument("--train-budget", type=float, default=0.0, help="seconds to train a committee (0: skip)")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=48)
    args = ap.parse_args()
    dev = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = HolsteinParams()
    report("device", (torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"))
    report("torch", torch.__version__)

    Q, _ = hot_random_state(args.L, (args.batch,), 5.0, p, torch.Generator().manual_seed(0))
    H = hamiltonian(Q.to(dev), p)
    best = None
    for lib in ("cusolver", "magma") if args.try_magma else ("cusolver",):
        try:
            torch.backends.cuda.preferred_linalg_library(lib)
            t = sync_time(lambda: torch.linalg.eigh(H))
        except Exception as exc:  # a library missing from this build: keep the other
            report(f"eigh_{lib}_error", str(exc)[:200])
            continue
        report(f"eigh_fp64_L{args.L}_batch{args.batch}_{lib}_s", t)
        if best is None or t < best[1]:
            best = (lib, t)
    torch.backends.cuda.preferred_linalg_library(best[0])
    report("eigh_fp32_s", sync_time(lambda: torch.linalg.eigh(H.float())))
    for L in ((60, 80) if dev == "cuda" else ()):
        Hs = hamiltonian(torch.randn(1, L, L, dtype=torch.float64, device=dev) * 2, p)
        report(f"eigh_fp64_L{L}_single_s", sync_time(lambda: torch.linalg.eigh(Hs), reps=2))

    t_step = best[1] * 1.1  # eigh dominates one Langevin step
    total = int(args.budget / t_step)
    quench_steps = min(1200, int(0.72 * total) // 10 * 10)
    domain_steps = min(400, (total - quench_steps) // 8 * 8)
    report("planned_steps", {"quench": quench_steps, "domains": domain_steps, "t_step_est_s": t_step})
    t0 = time.perf_counter()
    data = generate(Path("/tmp/holstein-gpu-all.pt"), L=args.L, n_quench=args.batch, n_domain=args.batch,
                    quench_steps=quench_steps, domain_steps=domain_steps, stride=10, seed=40,
                    progress=False, device=dev)
    report("ed_generation_s", time.perf_counter() - t0)
    kinds = data["kind"]
    for kind in ("quench", "domains"):
        sel = torch.tensor([k == kind for k in kinds])
        part = {k: (v[sel].float() if k in ("Q", "f_el") else v[sel]) if isinstance(v, torch.Tensor) else v
                for k, v in data.items() if k != "kind"}
        part["kind"] = [k for k in kinds if k == kind]
        part["device"] = (torch.cuda.get_device_name(0) if dev == "cuda" else "cpu")
        torch.save(part, out / f"holstein-L{args.L}-{kind}.pt")
        report(f"snapshots_{kind}", int(sel.sum()))

    model = load("holstein-d4", device=dev)
    for L in [int(x) for x in args.ml_sizes.split(",")]:
        Qm = torch.randn(L, L, device=dev) * 3
        t = sync_time(lambda: model.module.compute_lattice(Qm, False), reps=5)
        tu = sync_time(lambda: model.module.compute_lattice(Qm, True), reps=5)
        report(f"ml_gpu_L{L}", {"s": t, "sites_per_s": L * L / t, "with_std_s": tu})
    L, steps = (200, 500) if dev == "cuda" else (20, 5)
    gen = torch.Generator().manual_seed(1)
    Q0, P0 = hot_random_state(L, (), 5.0, p, gen)
    integ = LangevinIntegrator(MLForces(model.module), p, Q0.to(dev), P0.to(dev), seed=2)
    integ.step(10)
    sync()
    t0 = time.perf_counter()
    integ.step(steps)
    sync()
    wall = time.perf_counter() - t0
    report(f"ml_langevin_L{L}", {"site_steps_per_s": L * L * steps / wall,
                                    "est_25k_steps_s": wall / steps * 25000})
    (out / "holstein_gpu.json").write_text(json.dumps(results, indent=1))
    if args.train_budget > 0:
        from mlpot_plugins.holstein.train import train

        name = f"holstein-d4-c{args.channels}h{args.hidden}"
        m = train("/tmp/holstein-gpu-all.pt", out / f"{name}.pt", ensemble_size=4, channels=args.channels,
                  hidden=args.hidden, epochs=100000, batch=16, lr=5e-3, seed=0, name=name, progress=False,
                  time_budget_s=args.train_budget, device=dev, state_dict_path=out / f"{name}.sd")
        report(f"train_{name}", m)
    (out / "holstein_gpu.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
