"""`cu-emt` against an imported MACE small on one GPU, through the ASE calculator (issue 12: "on a GPU when one is
available"). Prepared for a device session; it needs only torch and mlpot_plugins there (the MACE file is an mlpot
TorchScript file written by `mlpot import mace`, so mace-torch is not needed on the GPU machine).

    python benchmarks/device/side_by_side_cuda.py OUT MACE.pt [--sizes 6 10 16 20] [--budget 300] [--device cuda]

MACE.pt: the MACE small trained on `cu-emt`'s EMT data (`benchmarks/data/mace-small-cu-emt.model`, from
`benchmarks/mace_side_by_side.py`) imported before the session on a machine with the MACE side environment,
`mlpot import mace benchmarks/data/mace-small-cu-emt.model -o out/mace-small.pt`; carry `out/mace-small.pt`.

For every dtype (float32, float64) and size (fcc Cu, 4 n^3 atoms: 864, 4000, 16k, 32k), the models one after the
other at each size, best of 3 rounds of 3 calls after 3 warm-up calls (`ase_times` of
`benchmarks/mace_side_by_side.py`, fcc Cu rattled 0.05 A; each call ends with the copy of the outputs to the
host, so the GPU work is done when it returns):

* `cu-emt` (K = 4) with forces and per-atom std in one call, and forces only;
* the imported MACE (one model), and a 4-member committee of that file (`mlpot committee`), the cost of a MACE
  committee of the size of ours.

Prints one JSON line per measurement (atom-steps/s, seconds per call, peak GPU memory) and writes
OUT/side_by_side_cuda.json after each. A model that runs out of GPU memory at a size is recorded as an error
and the sweep goes on; each dtype gets half of the budget (seconds of measurement), checked between sizes.
`--device cpu --sizes 3` tries it out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mace_side_by_side import ase_times  # noqa: E402  the CPU benchmark's timing of one calculator

results = []


def emit(out: Path, **rec) -> None:
    results.append(rec)
    print(json.dumps(rec), flush=True)
    (out / "side_by_side_cuda.json").write_text(json.dumps(results, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("mace", help="the imported MACE file (mlpot import mace)")
    p.add_argument("--sizes", type=int, nargs="+", default=[6, 10, 16, 20])
    p.add_argument("--budget", type=float, default=300.0, help="seconds of measurement")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from mlpot_plugins.ase import MLPotCalculator
    from mlpot_plugins.committee import make_committee
    from mlpot_plugins.pretrained import pretrained_path

    committee = out / "mace-x4.pt"
    make_committee([Path(args.mace)] * 4, committee, name="mace-small x4")
    emit(out, what="machine", device=args.device, torch=torch.__version__,
         gpu=torch.cuda.get_device_name(0) if args.device == "cuda" else None)
    for dtype in ("float32", "float64"):
        t_start = time.perf_counter()
        calcs = {"cu-emt": MLPotCalculator(str(pretrained_path("cu-emt")), device=args.device, dtype=dtype),
                 "MACE": MLPotCalculator(args.mace, device=args.device, dtype=dtype),
                 "MACE x4": MLPotCalculator(str(committee), device=args.device, dtype=dtype)}
        for n in args.sizes:
            if time.perf_counter() - t_start > args.budget / 2:
                emit(out, what="stopped", reason=f"half of the budget of {args.budget} s spent", dtype=dtype, n=n)
                break
            atoms = 4 * n ** 3
            row = {}
            for label, calc, with_std in (("cu-emt", calcs["cu-emt"], True),
                                          ("cu-emt, no std", calcs["cu-emt"], False),
                                          ("MACE", calcs["MACE"], False), ("MACE x4", calcs["MACE x4"], False)):
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                try:
                    s = ase_times(calc, n, 3, 3, with_std)
                except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                    row[label] = {"error": str(exc).splitlines()[0][:200]}
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
                    continue
                row[label] = {"s_per_call": s, "atom_steps_per_s": atoms / s,
                              "peak_gib": (torch.cuda.max_memory_allocated() / 2 ** 30
                                           if args.device == "cuda" else None)}
            ratios = {key: row[mace]["s_per_call"] / row["cu-emt"]["s_per_call"]
                      for key, mace in (("ours_vs_one_mace", "MACE"), ("ours_vs_mace_x4", "MACE x4"))
                      if "s_per_call" in row[mace] and "s_per_call" in row["cu-emt"]}
            emit(out, what="size", dtype=dtype, atoms=atoms, **row, **ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
