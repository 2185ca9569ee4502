"""Make sure openmm-torch's platform plugins are loaded, whatever the import order.

OpenMM loads its plugins when ``openmm`` is first imported. If that happens before ``torch`` is
imported, openmm-torch's kernels fail to load (the libraries libtorch brings, e.g. libnvrtc, are not
there yet) and every Context with a TorchForce fails with "does not support all required kernels".
Retrying those plugin libraries once torch is loaded fixes it.
"""
from __future__ import annotations

import re

import torch  # noqa: F401  (the point: libtorch and its libraries are loaded before the retry)

_done = False


def ensure_torch_plugins() -> None:
    global _done
    if _done:
        return
    import openmm
    import openmmtorch  # noqa: F401

    for failure in openmm.Platform.getPluginLoadFailures():
        match = re.search(r"Error loading library (\S*OpenMMTorch\S*\.(?:so|dylib|dll))", failure)
        if match:
            try:
                openmm.Platform.loadPluginLibrary(match.group(1))
            except Exception:  # e.g. the OpenCL plugin without libOpenCL: that platform stays unavailable
                pass
    _done = True
