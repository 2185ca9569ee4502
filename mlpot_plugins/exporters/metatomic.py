"""``mlpot export --to metatomic MODEL.pt -o OUT.pt``: an atomistic mlpot model as a metatomic AtomisticModel.

Outputs: ``energy`` (total or per atom), and for committees ``energy_uncertainty`` (calibrated per-atom or total
energy std, our ``energies_std``/``energy_std``) and ``energy_ensemble`` (member total energies). Length unit
angstrom, energy unit eV, dtype and atomic types from our metadata; one full neighbour list at our cutoff,
interaction range ours. Forces and stress come from metatomic's usual backward pass: the module feeds our
explicitly computed forces and virial back through zero-valued terms (see ``_metatomic_module``).
"""
from __future__ import annotations

from pathlib import Path


def export_model(model, out, name: str = "") -> Path:
    from ase.data import atomic_numbers

    from ..importers.metatomic import _metatomic
    from ..contract import ModelFormatError
    from ..model_file import load, output_path

    mta = _metatomic()
    from ._metatomic_module import ContractAsMetatomic

    try:
        loaded = load(model)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{exc}. --to converts an exported model file: for a `mlpot train` checkpoint run "
                               "`mlpot export CHECKPOINT model.pt` first") from None
    meta = loaded.metadata
    if meta["kind"] != "atomistic":
        raise ValueError(f"{loaded.path}: a {meta['kind']!r} model cannot be exported to metatomic, which "
                         "describes atoms; export an atomistic model")
    if meta.get("torch_libraries"):
        raise ValueError(f"{loaded.path}: this model was imported from another format and needs its "
                         "extensions; export the original model instead")
    if "virial" not in meta["outputs"]:
        raise ValueError(f"{loaded.path}: the model gives no virial, so metatomic engines would get a wrong "
                         "stress; re-export it with virial output (every AtomisticPotential has one)")
    numbers = [atomic_numbers[s] for s in meta["species"]]
    k = meta["ensemble_size"]
    module = ContractAsMetatomic(loaded.module, numbers, meta["cutoff"], k, True).eval()
    outputs = {"energy": mta.ModelOutput(unit="eV", sample_kind="atom")}
    if k > 1:
        outputs["energy_uncertainty"] = mta.ModelOutput(unit="eV", sample_kind="atom")
        outputs["energy_ensemble"] = mta.ModelOutput(unit="eV", sample_kind="system")
    caps = mta.ModelCapabilities(outputs=outputs, atomic_types=numbers, interaction_range=meta["interaction_range"],
                                 length_unit="angstrom", supported_devices=["cpu"], dtype=meta["dtype"])
    info = mta.ModelMetadata(name=name or meta.get("name") or loaded.path.stem,
                             description=meta["description"], references={"model": list(meta["references"])})
    out = output_path(out)
    mta.AtomisticModel(module, info, caps).save(str(out))
    return out
