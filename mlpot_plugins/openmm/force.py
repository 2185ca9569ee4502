"""``create_force``: an exported model as an OpenMM Force, in two lines.

>>> force = create_force("model.pt", topology)
>>> system.addForce(force)
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch  # before openmmtorch: its extension links against the loaded libtorch

from .ml_region import MLRegion, resolve_region
from ..model_file import resolve_device
from ..engine_setup import engine_setup
from .model_loading import load_for_openmm

BACKENDS = ("torch", "python")


def create_force(model, topology_or_elements, atoms: Optional[Iterable[int]] = None, device: str = "cpu",
                 dtype: Union[None, str, torch.dtype] = None, backend: str = "torch",
                 periodic: Optional[bool] = None, cuda_graphs: bool = False, fallback: Optional[float] = None,
                 threads: Optional[int] = None):
    """Return an OpenMM Force computing the model's energy and forces.

    model: path to an exported .pt file, a shipped model name, or a :class:`~mlpot_plugins.LoadedModel`.
    topology_or_elements: an ``openmm.app.Topology`` or one element symbol per particle.
    atoms: indices of the particles the model acts on (the ML region); None for all of them.
    device: torch device for the python backend; for the torch backend OpenMM's platform decides
        (CUDA platform -> cuda) and ``device`` only selects the CUDA-graph properties.
    dtype: None (the model's own), "float32" or "float64".
    backend: "torch" -> ``openmmtorch.TorchForce`` (fast, TorchScript in OpenMM's C++ loop);
        "python" -> ``openmm.PythonForce`` (any torch build, model run from Python each step).
    periodic: default: periodic when the topology has a box (an element list: not periodic).
    cuda_graphs: with a cuda device, ask openmm-torch to capture the model in a CUDA graph.
    fallback: lattice models only: the force-std threshold above which a site gets the exact force of the
        model's own solver (:mod:`mlpot_plugins.openmm.lattice`, where the lattice topology and units are).
    threads: torch intra-op threads for this process (None: MLPOT_THREADS, OMP_NUM_THREADS, else 1); the
        allocator is tuned too (mlpot_plugins.engine_setup, docs/equivariant.md "Speed").
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    # a bad device name fails here; a missing GPU too for the python backend (the torch backend's
    # device follows OpenMM's platform, so a force built on a CPU machine may run on a GPU one)
    resolve_device(device, available=backend == "python")
    engine_setup(threads)
    loaded = load_for_openmm(model, device if backend == "python" else "cpu", dtype)
    if loaded.kind == "lattice":  # particle k = lattice site k, Q = z (mlpot_plugins/openmm/lattice.py)
        from .lattice import create_lattice_force

        return create_lattice_force(loaded, topology_or_elements, atoms, backend, fallback)
    if fallback is not None:
        loaded.check_fallback(fallback)  # names why: the fallback is for lattice models
    if backend == "torch" and loaded.metadata.get("torch_libraries"):
        raise ValueError(f"{loaded.path}: the model holds TorchScript extension objects "
                         f"({', '.join(e['python_module'] for e in loaded.metadata['torch_libraries'])}) that "
                         "openmm-torch's TorchForce cannot freeze; use create_force(..., backend='python')")
    region = resolve_region(loaded.species, topology_or_elements, atoms, periodic)
    if backend == "python":
        return _python_force(loaded, region)
    return _torch_force(loaded, region, device, cuda_graphs)


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
    elif cuda_graphs:
        raise ValueError("cuda_graphs=True needs device='cuda' (and OpenMM's CUDA platform)")
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
