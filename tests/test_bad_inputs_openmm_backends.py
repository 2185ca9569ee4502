"""Bad backend choices and missing/broken optional backends: clear Python exceptions or a stated fallback."""
import json
import subprocess
import sys
import textwrap

import pytest

from mlpot_plugins.openmm import create_force
from mlpot_plugins.openmm.backends import backend_available
from openmm_systems import MODEL, cluster, topology_of

CHOICES = r"\['auto', 'native', 'torch', 'python'\]"


@pytest.mark.parametrize("backend", ["jax", "Python", "", "openmm-torch"])
def test_unknown_backend_names_the_choices(backend):
    with pytest.raises(ValueError, match=rf"backend {backend!r} is not one of {CHOICES}"):
        create_force(MODEL, ["Cu"], backend=backend)


@pytest.mark.skipif(backend_available("native")[0], reason="the native plugin is usable here")
def test_native_unavailable_names_the_reason_and_the_fix():
    with pytest.raises(RuntimeError, match=r"backend='native' is unavailable: .*use backend='auto'"):
        create_force(MODEL, ["Cu"], backend="native")


def test_cuda_graphs_with_the_python_backend():
    with pytest.raises(ValueError, match=r"cuda_graphs=True needs device='cuda'"):
        create_force(MODEL, ["Cu"], backend="python", cuda_graphs=True)


def test_interpolation_refuses_the_torch_backend():
    from openmmml import MLPotential

    from test_openmm_mlpotential import mm_system

    atoms = cluster()
    with pytest.raises(ValueError, match=r"CustomCVForce.*use backend='python' or 'native'"):
        MLPotential("mlpot", modelPath=MODEL).createMixedSystem(
            topology_of(atoms), mm_system(atoms), [0, 1], interpolate=True, backend="torch")


BLOCKED_OPENMMTORCH = textwrap.dedent("""
    import json, sys
    sys.modules["openmmtorch"] = None  # Python's own "this module cannot be imported"
    import torch, openmm
    import mlpot_plugins.openmm as mo
    out = {"torch": mo.backend_available("torch"), "available": mo.available_backends()}
    force = mo.create_force("morse-cuau", ["Cu", "Cu"])
    out["auto"] = [force.mlpot_backend, force.mlpot_backend_reason]
    try:
        mo.create_force("morse-cuau", ["Cu", "Cu"], backend="torch")
    except Exception as exc:
        out["torch_error"] = [type(exc).__name__, str(exc)]
    from openmmml import MLPotential
    import openmm.app as app
    top = app.Topology(); res = top.addResidue("X", top.addChain())
    for _ in range(2):
        top.addAtom("Cu", app.Element.getBySymbol("Cu"), res)
    system = MLPotential("mlpot", modelPath="morse-cuau").createSystem(top)
    out["openmmml_force"] = type(system.getForce(0)).__name__
    print(json.dumps(out))
""")


def test_missing_openmm_torch_falls_back_to_python_and_says_so():
    """openmm-torch absent (or failing to load next to another torch): the torch backend is reported
    unavailable with the fix, auto and openmm-ml fall back to the python backend, explicit torch raises."""
    run = subprocess.run([sys.executable, "-c", BLOCKED_OPENMMTORCH], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    ok, reason = out["torch"]
    assert not ok and "openmm-torch cannot be imported" in reason and "mlpot_plugins[openmm-torch]" in reason
    assert "torch" not in out["available"] and "python" in out["available"]
    backend, why = out["auto"]
    assert backend == out["available"][0]
    if backend == "python":
        assert "skipped" in why and "torch: openmm-torch cannot be imported" in why
    kind, msg = out["torch_error"]
    assert kind == "RuntimeError" and "backend='torch' is unavailable" in msg and "backend='auto'" in msg
    assert out["openmmml_force"] == ("PythonForce" if backend == "python" else out["openmmml_force"])
    assert out["openmmml_force"] != "TorchForce"
