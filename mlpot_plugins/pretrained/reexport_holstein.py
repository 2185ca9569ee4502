"""Re-export Holstein lattice committees with the current model code, keeping their weights and metadata:
``python -m mlpot_plugins.pretrained.reexport_holstein`` rewrites the shipped ones, ``... reexport_holstein
MODEL.pt [...]`` rewrites files you trained (in place). Use it after speed-only changes to model.py, or to give a
file exported before ``compute_lattice_block`` existed that method (contract, Lattice).

Checked before the old file is replaced: ``compute_lattice`` gives bit-identical results (after a warm-up call), the metadata is
unchanged except ``interaction_range`` (now the block halo), and the block method equals ``compute_lattice``."""
import argparse
import os
from pathlib import Path

import torch

from ..holstein.params import HolsteinParams
from ..holstein.train import build_model
from ..model_file import export, load

HERE = Path(__file__).resolve().parent


def eager_model(old) -> torch.nn.Module:
    """The eager (nn.Module) model of a loaded Holstein lattice file, with its weights and calibration (in the
    file's dtype; ``.double()`` of it gives a float64 twin for fp64 parity checks)."""
    meta, extra = old.metadata, old.metadata["extra"]
    if meta["kind"] != "lattice" or "architecture" not in extra or "holstein" not in extra:
        raise ValueError(f"{old.path} is not a Holstein lattice model written by `mlpot holstein train` (kind "
                         f"{meta['kind']!r}, extra {sorted(extra)}); only those can be re-exported from their weights")
    arch = extra["architecture"]
    m = build_model(HolsteinParams.from_dict(extra["holstein"]), arch.get("arch", "conv"), extra["patch"]["radius2"],
                    arch["channels"], arch["hidden"], meta["ensemble_size"], arch["energy_based"])
    m = m.to(old.dtype)
    m.load_state_dict(old.module.state_dict())
    m.uncertainty_scale = meta["uncertainty_scale"]
    return m


def reexport(model: str) -> dict:
    """Re-export a shipped model name or a model file in place; returns what was checked."""
    old = load(model)
    target = Path(model) if Path(model).is_file() else HERE / f"{model}.pt"
    meta, extra = old.metadata, old.metadata["extra"]
    m = eager_model(old)
    gen = torch.Generator().manual_seed(0)
    fields = [torch.randn(2, 12, 12, generator=gen) * 3, torch.randn(24, 24, generator=gen) * 3]
    # compare after one warm-up pass: the TorchScript executor's first (profiling) call of an energy model may
    # round differently (1 float32 ulp) from its later calls, in the old file as in the new one
    refs = [old.module.compute_lattice(Q, True) for Q in fields + fields][len(fields):]
    tmp = target.with_name(f".{target.name}.reexport.pt")
    try:
        export(m, tmp, kind="lattice", name=meta["name"], description=meta["description"],
               references=meta["references"], extra=extra)
        new = load(tmp)
        outs = [new.module.compute_lattice(Q, True) for Q in fields + fields][len(fields):]
        for out, ref in zip(outs, refs):
            assert set(out) == set(ref), (sorted(out), sorted(ref))
            for k in ref:
                assert torch.equal(ref[k], out[k]), f"compute_lattice {k} changed by re-export"
        changed = {k for k in set(meta) | set(new.metadata) if meta.get(k) != new.metadata.get(k)}
        assert changed <= {"interaction_range"}, f"metadata changed: {sorted(changed)}"
        halo = int(new.metadata["interaction_range"])
        Q = fields[1]
        block = torch.cat([Q[-halo:], Q, Q[:halo]], 0)
        block = torch.cat([block[:, -halo:], block, block[:, :halo]], 1)  # the whole lattice as one block
        out = new.compute_lattice_block(block, halo, True)
        block_err = {k: (out[k] - refs[1][k]).abs().max().item() / (1.0 + refs[1][k].abs().max().item())
                     for k in refs[1]}  # relative: the energy is a sum over 576 sites in float32
        assert max(block_err.values()) < 1e-5, f"block method differs from compute_lattice by {block_err}"
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    report = {"file": str(target), "interaction_range": [meta["interaction_range"], new.metadata["interaction_range"]],
              "compute_lattice_bit_identical": True, "block_vs_full_max_rel": block_err}
    print("re-exported", report)
    return report


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["holstein-d4", "holstein-d4-energy"],
                    help="model files or shipped names (default: the shipped Holstein models)")
    for name in ap.parse_args(argv).models:
        reexport(name)


if __name__ == "__main__":
    main()
