"""Reading `mlpot train` checkpoints with a clear error for anything else."""
from pathlib import Path
from typing import Any, Dict

import torch


def read_checkpoint(path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # pickle/zip errors of arbitrary files
        ck = None
    if not isinstance(ck, dict) or ck.get("kind") != "mlpot-equivariant-checkpoint":
        raise ValueError(f"{path} is not a checkpoint written by `mlpot train`; pass its best.pt or last.pt")
    return ck
