"""``create_force``: an exported model as an OpenMM Force, in two lines.

>>> force = create_force("model.pt", topology)
>>> system.addForce(force)
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch  # before openmmtorch: its extension links against the loaded libtorch

from .backends import check_choice, choose_backend, tag
from .ml_region import MLRegion, resolve_region
from ..model_file import resolve_device
from ..engine_setup import engine_setup
from .model_loading import load_for_openmm


def create_force(model, topology_or_elements, atoms: Optional[Iterable[int]] = None, device: str = "cpu",
                 dtype: Union[None, str, torch.dtype] = None, backend: str = "auto",
                 periodic: Optional[bool] = None, cuda_graphs: bool = False, fallback: Optional[float] = None,
                 threads: Optional[int] = None):
    """Return an OpenMM Force computing the model's energy and forces.

    model: path to an exported .pt file, a shipped model name, or a :class:`~mlpot_plugins.LoadedModel`.
    topology_or_elements: an ``openmm.app.Topology`` or one element symbol per particle.
    atoms: indices of the particles the model acts on (the ML region); None for all of them.
    device: torch device for the python backend; for the torch backend OpenMM's platform decides
        (CUDA platform -> cuda) and ``device`` only selects the CUDA-graph properties.
    dtype: None (the model's own), "float32" or "float64".
    backend: "auto" (default) -> the best usable of "native" (the C++ OpenMM plugin), "torch"
        (``openmmtorch.TorchForce``, TorchScript in OpenMM's C++ loop; the optional extra
        ``mlpot_plugins[openmm-torch]``) and "python" (``openmm.PythonForce``: any torch build, serializable,
        same-call uncertainty); see :mod:`mlpot_plugins.openmm.backends`. The returned force says which:
        ``force.mlpot_backend`` and ``force.mlpot_backend_reason`` (also logged at INFO).
    periodic: default: periodic when the topology has a box (an element list: not periodic).
    cuda_graphs: with a cuda device, ask openmm-torch to capture the model in a CUDA graph.
    fallback: lattice models only: the force-std threshold above which a site gets the exact force of the
        model's own solver (:mod:`mlpot_plugins.openmm.lattice`, where the lattice topology and units are).
    threads: torch intra-op threads for this process (None: MLPOT_THREADS, OMP_NUM_THREADS, else 1); the
        allocator is tuned too (mlpot_plugins.engine_setup, docs/equivariant.md "Speed").
    """
    check_choice(backend)  # before anything is loaded
    # a bad device name fails here; a missing GPU too for the python backend (the torch backend's
    # device follows OpenMM's platform, so a force built on a CPU machine may run on a GPU one)
    resolve_device(device, available=backend == "python")
    engine_setup(threads)
    if cuda_graphs and torch.device(device).type != "cuda":
        raise ValueError("cuda_graphs=True needs device='cuda' (and OpenMM's CUDA platform)")
    loaded = load_for_openmm(model, device if backend == "python" else "cpu", dtype)
    if loaded.kind == "lattice":  # particle k = lattice site k, Q = z (mlpot_plugins/openmm/lattice.py)
        from .lattice import create_lattice_force

        backend, reason = choose_backend(backend, loaded, allowed=("torch", "python"))
        return tag(create_lattice_force(loaded, topology_or_elements, atoms, backend, fallback), backend, reason)
    if fallback is not None:
        loaded.check_fallback(fallback)  # names why: the fallback is for lattice models
    backend, reason = choose_backend(backend, loaded)
    if cuda_graphs and backend == "python":
        raise ValueError("cuda_graphs=True is not available with the python backend (it runs the model from "
                         "Python each step); use backend='torch' or 'native', or cuda_graphs=False")
    if backend == "python" and torch.device(device) != loaded.device:
        resolve_device(device, available=True)
        loaded = load_for_openmm(loaded, device, dtype)
    region = resolve_region(loaded.species, topology_or_elements, atoms, periodic)
    if backend == "native":
        from .native import create_native_force

        return tag(create_native_force(loaded, region, device), backend, reason)
    if backend == "python":
        return tag(_python_force(loaded, region), backend, reason)
    return tag(_torch_force(loaded, region, device, cuda_graphs), backend, reason)


def _torch_force(loaded, region: MLRegion, device: str, cuda_graphs: bool):
    import openmmtorch

    from .torch_module import OpenMMModelWrapper
    from .torch_plugins import ensure_torch_plugins

    ensure_torch_plugins()

    atoms = None if region.indices is None else torch.as_tensor(region.indices)
    wrapper = OpenMMModelWrapper(loaded.module, torch.as_tensor(region.types), atoms, loaded.cutoff,
                                 region.periodic, loaded.dtype, region.box_known_default)
    force = openmmtorch.TorchForce(torch.jit.script(wrapper))
    force.setOutputsForces(True)  # forces come from the model's compute: no second autograd pass
    force.setUsesPeriodicBoundaryConditions(region.periodic)
    force.setName(f"mlpot:{loaded.metadata.get('name') or loaded.path.stem}")
    if torch.device(device).type == "cuda":
        force.setProperty("useCUDAGraphs", "true" if cuda_graphs else "false")
        force.setProperty("CUDAGraphWarmupSteps", "10")
    return force


def _python_force(loaded, region: MLRegion):
    import openmm

    from .python_force import PythonForceComputation

    force = openmm.PythonForce(PythonForceComputation(loaded, region.types, region.periodic,
                                                      region.box_known_default))
    if region.indices is not None:
        if region.n_ml == 0:
            # PythonForce reads an empty particle list as "all particles": give it nothing to act on
            force = openmm.PythonForce(_zero_force)
            force.setName(f"mlpot:{loaded.metadata.get('name') or loaded.path.stem} (empty ML region)")
            return force
        force.setParticles([int(i) for i in region.indices])
    force.setUsesPeriodicBoundaryConditions(region.periodic)
    force.setName(f"mlpot:{loaded.metadata.get('name') or loaded.path.stem}")
    return force


def _zero_force(state):
    import numpy as np

    return 0.0, np.zeros((len(state.getPositions()), 3))
