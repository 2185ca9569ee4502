"""The exported-model contract: round trips and every bad input named clearly."""
import json
import zipfile

import pytest
import torch

import mlpot_plugins
from mlpot_plugins import ModelFormatError, contract, export, load
from mlpot_plugins.models import MorsePotential


def system():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand((6, 3), generator=gen, dtype=torch.float64) * 4.0
    types = torch.tensor([0, 1, 0, 1, 1, 0])
    src, dst = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    mask = src != dst
    edges = torch.stack([src[mask], dst[mask]])
    return pos, types, edges, torch.zeros((edges.shape[1], 3), dtype=torch.float64)


def test_round_trip_keeps_metadata_and_outputs_bit_identical(tmp_path):
    model = MorsePotential(["Cu", "Au"], ensemble_size=3, seed=1)
    path = export(model, tmp_path / "m.pt", description="test model", references=["ref"], extra={"a": 1})
    loaded = load(path)
    meta = loaded.metadata
    assert meta["species"] == ["Cu", "Au"] and meta["cutoff"] == 6.0 and meta["ensemble_size"] == 3
    assert meta["description"] == "test model" and meta["references"] == ["ref"] and meta["extra"] == {"a": 1}
    assert meta["format_version"] == contract.FORMAT_VERSION and meta["dtype"] == "float64"
    assert set(meta["outputs"]) >= {"energy", "forces", "virial", "forces_std"}
    args = system()
    eager = model.compute(*args, 6, True, True)
    scripted = loaded.compute(*args, need_virial=True, need_uncertainty=True)
    assert set(eager) == set(scripted)
    for key in eager:
        assert torch.equal(eager[key], scripted[key]), key
    # saving the loaded model again keeps everything
    again = load(export(loaded.module, tmp_path / "again.pt", **meta))
    assert again.metadata == meta


def test_outputs_follow_the_documented_shapes():
    model = MorsePotential(["Cu", "Au"], ensemble_size=2)
    pos, types, edges, shifts = system()
    ghosts = 2  # the last two atoms are ghosts: energies only for the first four
    out = model.compute(pos, types, edges, shifts, 6 - ghosts, True, True)
    assert out["energy"].shape == () and out["energies"].shape == (4,)
    assert out["forces"].shape == (6, 3) and out["virial"].shape == (3, 3)
    assert out["atom_virial"].shape == (6, 3, 3) and out["member_forces"].shape == (2, 6, 3)
    assert out["forces_std"].shape == (6,) and out["energies_std"].shape == (4,)
    torch.testing.assert_close(out["energy"], out["energies"].sum())
    torch.testing.assert_close(out["atom_virial"].sum(0), out["virial"])
    torch.testing.assert_close(model.force_uncertainty(out["member_forces"]), out["forces_std"])


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="does not exist and is not a shipped model name"):
        load("/nonexistent/model.pt")


def test_not_torchscript(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelFormatError, match="not a TorchScript archive"):
        load(bad)
    zipped = tmp_path / "zip.pt"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelFormatError, match="not a loadable TorchScript archive"):
        load(zipped)


def _save_with_metadata(tmp_path, text, model=None):
    scripted = torch.jit.script(model or MorsePotential(["Cu", "Au"]))
    path = tmp_path / "m.pt"
    extra = {} if text is None else {contract.METADATA_FILE: text}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


def _good_meta():
    return dict(mlpot_plugins.load("morse-cuau").metadata)


def test_missing_metadata(tmp_path):
    with pytest.raises(ModelFormatError, match="has no metadata.json"):
        load(_save_with_metadata(tmp_path, None))


def test_invalid_json(tmp_path):
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load(_save_with_metadata(tmp_path, "{species: Cu"))


@pytest.mark.parametrize("change, message", [
    ({"format_version": 99}, "unsupported format_version 99"),
    ({"cutoff": None}, "'cutoff' must be float"),
    ({"kind": "quantum"}, "kind 'quantum' is not one of"),
    ({"species": []}, "species must be a non-empty list"),
    ({"species": ["Cu", "Cu"]}, "duplicate species"),
    ({"interaction_range": 1.0}, "interaction_range 1.0 is smaller than cutoff"),
    ({"outputs": ["energy"]}, "must include 'forces'"),
    ({"ensemble_size": 4}, "forces_std=False but ensemble_size=4"),
    ({"dtype": "float16"}, "dtype 'float16' is not one of"),
    ({"energy_unit": "hartree"}, "units 'angstrom'/'hartree' are not supported"),
])
def test_invalid_metadata_fields(tmp_path, change, message):
    meta = _good_meta()
    meta.update(change)
    with pytest.raises(ModelFormatError, match=message):
        load(_save_with_metadata(tmp_path, json.dumps(meta)))


def test_missing_field(tmp_path):
    meta = _good_meta()
    del meta["species"]
    with pytest.raises(ModelFormatError, match=r"missing metadata field\(s\) \['species'\]"):
        load(_save_with_metadata(tmp_path, json.dumps(meta)))


@pytest.mark.parametrize("change, message", [
    ({"cutoff": 5.0, "interaction_range": 5.0}, "metadata cutoff=5.0 contradicts the module's cutoff=6.0"),
    ({"species": ["Cu", "Au", "Ag"]}, "metadata n_species=3 contradicts"),
    ({"dtype": "float32"}, "metadata dtype float32 contradicts"),
    ({"kind": "lattice", "outputs": ["forces"], "length_unit": "lattice", "energy_unit": "t"},
     "no exported compute_lattice"),
])
def test_metadata_contradicting_the_module(tmp_path, change, message):
    meta = _good_meta()
    meta.update(change)
    with pytest.raises(ModelFormatError, match=message):
        load(_save_with_metadata(tmp_path, json.dumps(meta)))


def test_shipped_models_by_name():
    names = mlpot_plugins.pretrained_names()
    assert {"morse-cuau", "morse-cuau-committee"} <= set(names)
    for name in names:
        assert load(name).metadata["name"] == name
        assert mlpot_plugins.pretrained_path(name).is_file()
    with pytest.raises(KeyError, match="no shipped model named 'nope'"):
        mlpot_plugins.pretrained_path("nope")


def test_shipped_reference_models_are_reproducible(tmp_path):
    from mlpot_plugins.pretrained.build import build_reference

    build_reference(tmp_path)
    args = system()
    for name in ("morse-cuau", "morse-cuau-committee"):
        shipped, rebuilt = load(name), load(tmp_path / f"{name}.pt")
        assert shipped.metadata == rebuilt.metadata
        a = shipped.compute(*args, need_uncertainty=True)
        b = rebuilt.compute(*args, need_uncertainty=True)
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make", [
    lambda: MorsePotential(["Cu", "Au"], ensemble_size=4, seed=2),
    lambda: __import__("mlpot_plugins.models.equivariant", fromlist=["x"]).EquivariantPotential(
        species=["Cu", "Au"], cutoff=6.0, channels=4, ensemble_size=3, ensemble="shallow", dtype="float64"),
], ids=["morse-committee", "shallow-ensemble"])
def test_mean_only_path_equals_per_member_path(make):
    """Models sharing geometry across members take one edge-vector copy when no uncertainty is asked."""
    model = make()
    assert model.members_share_geometry
    args = system()
    scripted = torch.jit.script(model)
    full = scripted.compute(*args, 5, True, True)
    mean_only = scripted.compute(*args, 5, True, False)
    assert "forces_std" in full and "forces_std" not in mean_only
    for key in ("energy", "energies", "forces", "virial", "atom_virial"):
        torch.testing.assert_close(mean_only[key], full[key], rtol=1e-12, atol=1e-13)
    assert full["forces_std"].max() > 0
