"""Get an exported model onto the device and dtype an OpenMM force will run it with."""
from __future__ import annotations

from typing import Union

import torch

from ..model_file import LoadedModel, convert_dtype, load, resolve_dtype


def load_for_openmm(model, device: str = "cpu", dtype: Union[None, str, torch.dtype] = None,
                    kinds=("atomistic", "lattice")) -> LoadedModel:
    """A LoadedModel on ``device`` in ``dtype`` (None: the model's) of one of ``kinds``. Never changes the caller's
    object."""
    dtype = resolve_dtype(dtype)
    if isinstance(model, LoadedModel):
        if torch.device(device) == model.device and dtype in (None, model.dtype):
            return model
        model = model.path
    loaded = load(model, device=device)
    if loaded.kind not in kinds:
        raise ValueError(f"{loaded.path}: a {loaded.kind!r} model cannot be used here; use an "
                         f"{' or '.join(kinds)} model")
    return convert_dtype(loaded, dtype)  # a fresh copy from disk, so this is private
