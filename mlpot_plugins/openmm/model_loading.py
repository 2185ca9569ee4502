"""Get an exported model onto the device and dtype an OpenMM force will run it with."""
from __future__ import annotations

from typing import Optional, Union

import torch

from ..model_file import LoadedModel, load

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def as_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.replace("torch.", "") in DTYPES:
        return DTYPES[dtype.replace("torch.", "")]
    raise ValueError(f"dtype {dtype!r} is not supported; use None (the model's own), 'float32' or 'float64'")


def load_for_openmm(model, device: str = "cpu", dtype: Union[None, str, torch.dtype] = None,
                    kinds=("atomistic", "lattice")) -> LoadedModel:
    """A LoadedModel on ``device`` in ``dtype`` (None: the model's) of one of ``kinds``. Never changes the caller's
    object."""
    dtype = as_dtype(dtype)
    if isinstance(model, LoadedModel):
        if torch.device(device) == model.device and dtype in (None, model.dtype):
            return model
        model = model.path
    loaded = load(model, device=device)
    if loaded.kind not in kinds:
        raise ValueError(f"{loaded.path}: a {loaded.kind!r} model cannot be used here; use an "
                         f"{' or '.join(kinds)} model")
    if dtype is not None and dtype != loaded.dtype:
        loaded.module = loaded.module.to(dtype)  # a fresh copy from disk, so this is private
        loaded.metadata = dict(loaded.metadata, dtype=str(dtype).replace("torch.", ""))
    return loaded
