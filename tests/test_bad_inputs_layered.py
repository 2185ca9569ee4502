"""Bad inputs around the layer-wise message-passing contract (contract.py, "Message passing layer by layer"):
malformed or contradictory metadata ``message_passing``, half-exported modules, bad calls of the mp_* methods
(Python: exception type + words naming the problem and the fix) and the same files / options in a real `lmp`
(an ERROR: line naming them, a non-zero exit, no crash)."""
from typing import Dict

import numpy as np
import pytest
import torch
from torch import Tensor

from lammps_util import cuau, plugin, run_lmp, write_data  # noqa: F401
from mlpot_plugins import export, load, pretrained_path
from mlpot_plugins.contract import ModelFormatError
from mlpot_plugins.models.equivariant import EquivariantPotential
from mlpot_plugins.models.reference import MorsePotential
from test_bad_inputs_lammps import DROP, meta, rewrite_metadata

CU_EMT = pretrained_path("cu-emt")
GOOD = {"layers": 2, "feature_dim": 432}


class DictEdges(EquivariantPotential):
    """mp_edges returns a dict, not the tensor or list of tensors of the contract."""

    @torch.jit.export
    def mp_edges(self, edge_vectors: Tensor) -> Dict[str, Tensor]:
        sh, basis = self.geometry(edge_vectors)
        return {"sh": sh, "basis": basis}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("layered")
    morse = export(MorsePotential(["Cu", "Au"], cutoff=5.0), d / "morse.pt")
    return {
        "mp-edges-dict": export(DictEdges(species=["Cu"], cutoff=3.0, channels=2), d / "dict.pt"),
        "mp-malformed": rewrite_metadata(CU_EMT, d / "a.pt", meta(message_passing={"layers": 0, "feature_dim": 432})),
        "mp-not-a-dict": rewrite_metadata(CU_EMT, d / "b.pt", meta(message_passing="yes")),
        "mp-dropped": rewrite_metadata(CU_EMT, d / "c.pt", meta(message_passing=DROP)),
        "mp-layers-wrong": rewrite_metadata(CU_EMT, d / "e.pt",
                                            meta(message_passing={"layers": 3, "feature_dim": 432})),
        "mp-width-wrong": rewrite_metadata(CU_EMT, d / "f.pt", meta(message_passing={"layers": 2, "feature_dim": 48})),
        "mp-without-methods": rewrite_metadata(morse, d / "g.pt", meta(message_passing=GOOD)),
        "morse": morse,
    }


LOAD_CASES = {
    "mp-malformed": "'message_passing' must be {'layers': int >= 1",
    "mp-not-a-dict": "'message_passing' must be {'layers': int >= 1",
    "mp-dropped": "metadata has no message_passing field",
    "mp-layers-wrong": "message_passing layers=3 contradicts the module's mp_layers=2",
    "mp-width-wrong": "message_passing feature_dim=48 contradicts the module's mp_feature_dim=432",
    "mp-without-methods": "exports none of",
}


@pytest.mark.parametrize("case", sorted(LOAD_CASES))
def test_load_rejects_bad_layerwise_metadata(files, case):
    with pytest.raises(ModelFormatError) as err:
        load(files[case])
    assert LOAD_CASES[case] in str(err.value) and "Re-export" in str(err.value)


def test_export_refuses_contradicting_message_passing(tmp_path):
    from mlpot_plugins.models.equivariant import EquivariantPotential

    model = EquivariantPotential(species=["Cu"], cutoff=3.0, channels=2)
    with pytest.raises(ModelFormatError, match="message_passing layers=3 contradicts the module's mp_layers=2"):
        export(model, tmp_path / "m.pt", message_passing={"layers": 3, "feature_dim": model.mp_feature_dim})


def _edges(module, n=4):
    pos = torch.tensor(np.random.default_rng(0).normal(scale=1.5, size=(n, 3)))
    ei = torch.tensor([[i, j] for i in range(n) for j in range(n) if i != j]).T
    attr = module.mp_edges((pos[ei[1]] - pos[ei[0]]).unsqueeze(0).expand(4, -1, -1).clone())
    return attr, ei, torch.zeros(n, dtype=torch.int64)


@pytest.mark.parametrize("layer, width, match", [
    (5, 48, "mp_layer: layer 5 does not exist (the model has 2, numbered from 0)"),
    (-1, 48, "mp_layer: layer -1 does not exist"),
    (1, 48, "features have 48 columns, the layer needs 432"),  # layer 0's features given to layer 1
])
def test_mp_layer_names_bad_calls(layer, width, match):
    module = load("cu-emt").module
    attr, ei, types = _edges(module)
    with pytest.raises(Exception) as err:
        module.mp_layer(layer, torch.zeros(4, width, dtype=torch.float64), attr, ei, types, 4)
    assert match in str(err.value)


def test_mp_layer_names_wrong_geometry():
    """mp_layer needs the two geometry tensors mp_edges returned (harmonics, radial basis), not a part of them."""
    module = load("cu-emt").module
    attr, ei, types = _edges(module)
    with pytest.raises(Exception) as err:
        module.mp_layer(0, torch.zeros(4, 48, dtype=torch.float64), attr[:1], ei, types, 4)
    assert "edge_attr must be the 2 tensors mp_edges returned (harmonics, radial basis), got 1" in str(err.value)


DECK = """units metal
atom_style atomic
boundary p p p
plugin load {plugin}
read_data system.data
pair_style mlpot {model}
pair_coeff * * Cu
run 0
"""

LMP_CASES = {
    "mp-layers-wrong": ("mp-layers-wrong", "", "metadata.json says message_passing.layers = 3 but the module's "
                                               "mp_layers is 2; re-export"),
    "mp-dropped": ("mp-dropped", "", "is half a layer-wise model"),
    "mp-without-methods": ("mp-without-methods", "", "has a message_passing field but the module exports none"),
    "layerwise-yes-without-methods": ("morse", "layerwise yes", "does not export the layer-wise methods (mp_*"),
    "layerwise-maybe": (CU_EMT, "layerwise maybe", "layerwise must be yes or no, got 'maybe'"),
    "images-wrap": (CU_EMT, "images wrap", "images must be fold or ghosts, got 'wrap'"),
    "images-missing": (CU_EMT, "images", "images: expected fold or ghosts after it"),
    "mp-edges-dict": ("mp-edges-dict", "images ghosts", "returned GenericDict, the contract needs a tensor or a "
                                                         "list of tensors; re-export"),
}


@pytest.mark.parametrize("case", sorted(LMP_CASES))
def test_lmp_names_bad_layerwise_input(tmp_path, plugin, files, case):
    which, extra, words = LMP_CASES[case]
    model = files.get(which, which) if isinstance(which, str) else which
    atoms = cuau((2, 2, 2))
    atoms.set_chemical_symbols(["Cu"] * len(atoms))
    write_data(tmp_path / "system.data", atoms, elements=("Cu",))
    res = run_lmp(DECK.format(plugin=plugin, model=f"{model} {extra}"), tmp_path, check=False, timeout=120)
    text = res.stdout + res.stderr
    assert res.returncode not in (0,) and res.returncode > 0, (res.returncode, text[-2000:])  # no signal
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert errors and words in errors[0], text[-2000:]
