"""mlpot_plugins: TorchScript machine-learned force fields in OpenMM, LAMMPS and ASE."""
from .contract import FORMAT_VERSION, ModelFormatError
from .export import LoadedModel, export, load
from .pretrained import pretrained_names, pretrained_path

__version__ = "0.1.0"
__all__ = ["export", "load", "LoadedModel", "ModelFormatError", "FORMAT_VERSION",
           "pretrained_names", "pretrained_path", "__version__"]
