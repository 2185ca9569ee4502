"""Bad inputs to the model loader, the ASE calculator and the shared geometry checks: each case is a clear
exception naming the problem and the fix (never a crash, a NaN or a misleading message).

Extend it: add a row to a table below; ``bad_model_file(tmp_path, **metadata_changes)`` makes a real
exported file whose metadata.json is rewritten inside the zip.
"""
import json
import zipfile

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

from mlpot_plugins import ModelFormatError, export, load
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.model_file import NotAModelFileError
from mlpot_plugins.models import MorsePotential


def exported(tmp_path, name="m.pt", **kwargs) -> str:
    return str(export(MorsePotential(["Cu", "Au"], **kwargs), tmp_path / name))


def rewrite_metadata(src, dst, **changes):
    """Copy a model file, changing fields of its metadata.json (None deletes a field)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("extra/metadata.json"):
                meta = json.loads(data)
                meta.update(changes)
                meta = {k: v for k, v in meta.items() if v is not None}
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    return str(dst)


def bad_model_file(tmp_path, committee=False, **changes) -> str:
    src = exported(tmp_path, "src.pt", ensemble_size=3 if committee else 1)
    return rewrite_metadata(src, tmp_path / "bad.pt", **changes)


# (id, how to make the bad model argument, exception, regex of problem + fix)
MODEL_CASES = [
    ("missing", lambda t: str(t / "nope.pt"), FileNotFoundError, r"does not exist and is not a shipped model name.*Give a path"),
    ("directory", lambda t: str(t), NotAModelFileError, r"is a directory, not a model file\. Give the path of an exported \.pt"),
    ("directory-with-models", lambda t: (exported(t, "inside.pt"), str(t))[1], NotAModelFileError,
     r"is a directory.*holds inside\.pt"),
    ("not-zip", lambda t: (t / "x.pt").write_text("hello") and str(t / "x.pt"), ModelFormatError,
     r"not a TorchScript archive \(not a zip file\)\. Export the model"),
    ("truncated", lambda t: _truncated(t), ModelFormatError, r"not a (loadable )?TorchScript archive"),
    ("no-metadata", lambda t: _no_metadata(t), ModelFormatError, r"has no metadata\.json.*re-export"),
    ("cutoff", lambda t: bad_model_file(t, cutoff=5.0), ModelFormatError,
     r"metadata cutoff=5\.0 contradicts the module's cutoff=6\.0\. Re-export"),
    ("species-count", lambda t: bad_model_file(t, species=["Cu", "Au", "Ag"]), ModelFormatError,
     r"metadata n_species=3 contradicts the module's n_species=2"),
    ("ensemble-size", lambda t: bad_model_file(t, committee=True, ensemble_size=4), ModelFormatError,
     r"metadata ensemble_size=4 contradicts the module's ensemble_size=3"),
    ("uncertainty-scale", lambda t: bad_model_file(t, committee=True, uncertainty_scale=2.5), ModelFormatError,
     r"uncertainty_scale=2\.5 contradicts"),
    ("dtype", lambda t: bad_model_file(t, dtype="float32"), ModelFormatError,
     r"metadata dtype float32 contradicts the module's tensor\(s\) D \(torch\.float64\).*\.to\(dtype\)"),
    ("kind", lambda t: bad_model_file(t, kind="lattice", length_unit="lattice", energy_unit="t",
                                      outputs=["forces"]), ModelFormatError,
     r"kind 'lattice' but the module has no exported compute_lattice\(\) method"),
    ("bad-json", lambda t: _bad_json(t), ModelFormatError, r"metadata\.json is not valid JSON.*Re-export"),
    ("missing-field", lambda t: bad_model_file(t, cutoff=None), ModelFormatError, r"missing metadata field\(s\) \['cutoff'\]"),
    ("format-version", lambda t: bad_model_file(t, format_version=99), ModelFormatError,
     r"unsupported format_version 99.*Upgrade mlpot_plugins or re-export"),
]


def _truncated(t):
    src = exported(t, "full.pt")
    data = open(src, "rb").read()
    (t / "cut.pt").write_bytes(data[: len(data) // 2])
    return str(t / "cut.pt")


def _no_metadata(t):
    torch.jit.save(torch.jit.script(MorsePotential(["Cu", "Au"])), str(t / "plain.pt"))
    return str(t / "plain.pt")


def _bad_json(t):
    torch.jit.save(torch.jit.script(MorsePotential(["Cu", "Au"])), str(t / "j.pt"),
                   _extra_files={"metadata.json": "{not json"})
    return str(t / "j.pt")


@pytest.mark.parametrize("make, err, match", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
@pytest.mark.parametrize("entry", ["load", "ase"])
def test_bad_model_file(tmp_path, make, err, match, entry):
    model = make(tmp_path)
    with pytest.raises(err, match=match):
        load(model) if entry == "load" else MLPotCalculator(model)


def test_mixed_dtype_module_is_refused_at_export_and_load(tmp_path):
    """Regression: the dtype check used to stop at the first tensor, so a float32 tensor after it passed."""
    model = MorsePotential(["Cu", "Au"])
    model.r0 = model.r0.to(torch.float32)  # D and alpha stay float64: the first tensor agrees
    with pytest.raises(ModelFormatError, match=r"dtype float64 contradicts the module's tensor\(s\) r0 \(torch\.float32\)"):
        export(model, tmp_path / "mixed.pt")
    scripted = torch.jit.script(model)
    good = load(exported(tmp_path))
    torch.jit.save(scripted, str(tmp_path / "mixed.pt"), _extra_files={"metadata.json": json.dumps(good.metadata)})
    with pytest.raises(ModelFormatError, match=r"r0 \(torch\.float32\)"):
        load(tmp_path / "mixed.pt")


DEVICE_CASES = [
    ("banana", ValueError, r"device 'banana' is not a torch device.*Use 'cpu', 'cuda' or 'cuda:N'"),
    ("mps", ValueError, r"device 'mps' is not supported by mlpot models\. Use 'cpu' or 'cuda\[:N\]'"),
]
if not torch.cuda.is_available():
    DEVICE_CASES += [("cuda", RuntimeError, r"CUDA is not available.*Use device='cpu'"),
                     ("cuda:1", RuntimeError, r"CUDA is not available")]


@pytest.mark.parametrize("device, err, match", DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
@pytest.mark.parametrize("entry", ["load", "ase"])
def test_bad_device(device, err, match, entry):
    with pytest.raises(err, match=match):
        load("morse-cuau", device=device) if entry == "load" else MLPotCalculator("morse-cuau", device=device)


def test_pretrained_dir_pointing_nowhere_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPOT_PRETRAINED_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"\$MLPOT_PRETRAINED_DIR=.*missing' is not a directory.*unset it"):
        load("morse-cuau")
    # a real path still loads, whatever the variable says
    assert load(exported(tmp_path)).cutoff == 6.0


def test_pretrained_dir_is_used_for_names(tmp_path, monkeypatch):
    exported(tmp_path, "my-model.pt")
    monkeypatch.setenv("MLPOT_PRETRAINED_DIR", str(tmp_path))
    assert load("my-model").path == tmp_path / "my-model.pt"


def _cu(positions, cell=None, pbc=False):
    return Atoms(["Cu"] * len(positions), positions=positions, cell=cell, pbc=pbc)


# (id, atoms, regex of problem + fix)
GEOMETRY_CASES = [
    ("coincident-pair", lambda: _cu([[0, 0, 0], [0, 0, 0], [2.5, 0, 0]]),
     r"coincident atoms: two atoms \(indices 0 and 1\).*remove the duplicate atom"),
    ("coincident-image", lambda: _cu([[0, 0, 0], [4.0, 0, 0]], cell=np.eye(3) * 4.0, pbc=True),
     r"coincident atoms: two atoms \(indices [01] and [01]\)"),
    ("nearly-coincident", lambda: _cu([[0, 0, 0], [0, 0, 5e-5]]), r"coincident atoms.*5e-05 A apart"),
    ("nan-position", lambda: _cu([[0, 0, 0], [np.nan, 0, 0]]), r"position of atom 1 is not finite.*smaller time step"),
    ("inf-position", lambda: _cu([[0, 0, np.inf], [2.5, 0, 0]], cell=np.eye(3) * 5, pbc=True),
     r"position of atom 0 is not finite"),
    ("flat-cell", lambda: _cu([[0, 0, 0]], cell=[[4, 0, 0], [0, 4, 0], [0, 0, 0.01]], pbc=True),
     r"periodic cell is flat or degenerate: its height along lattice vector 2 is 0\.01.*give a proper cell or switch off periodicity"),
    ("sheared-flat-cell", lambda: _cu([[0, 0, 0]], cell=[[4, 0, 0], [4, 0.001, 0], [0, 0, 4]], pbc=True),
     r"flat or degenerate: its height along lattice vector [01]"),
    ("zero-cell", lambda: _cu([[0, 0, 0], [2.5, 0, 0]], cell=np.zeros((3, 3)), pbc=True),
     r"flat or degenerate.*volume 0\.0"),
    ("nan-cell", lambda: _cu([[0, 0, 0]], cell=np.eye(3) * np.nan, pbc=True), r"periodic cell is not finite"),
]


@pytest.mark.parametrize("make, match", [c[1:] for c in GEOMETRY_CASES], ids=[c[0] for c in GEOMETRY_CASES])
def test_bad_geometry(make, match):
    atoms = make()
    atoms.calc = MLPotCalculator("morse-cuau")
    with pytest.raises(ValueError, match=match):
        atoms.get_forces()


def test_thin_but_valid_cell_is_fine():
    """A cell thinner than twice the cutoff (many images) is physics, not an error."""
    atoms = _cu([[0, 0, 0]], cell=[[2.6, 0, 0], [0, 2.6, 0], [0, 0, 2.6]], pbc=True)
    atoms.calc = MLPotCalculator("morse-cuau")
    assert np.isfinite(atoms.get_potential_energy()) and np.abs(atoms.get_forces()).max() < 1e-10


PROPERTY_CASES = [
    ("stress-of-cluster", "morse-cuau", lambda: _cu([[0, 0, 0], [2.5, 0, 0]]), "stress",
     r"stress needs a 3D cell with periodic boundaries"),
    ("std-of-single-model", "morse-cuau", lambda: bulk("Cu", cubic=True), "forces_std", r"forces_std"),
]


@pytest.mark.parametrize("model, make, prop, match", [c[1:] for c in PROPERTY_CASES],
                         ids=[c[0] for c in PROPERTY_CASES])
def test_unavailable_property(model, make, prop, match):
    atoms = make()
    atoms.calc = MLPotCalculator(model)
    with pytest.raises(PropertyNotImplementedError, match=match):
        atoms.calc.get_property(prop, atoms)


def test_torchscript_error_shows_the_models_message_first():
    """A failure inside the scripted model surfaces its own message, not "failed in the TorchScript interpreter"."""
    model = load("morse-cuau")
    pos = torch.zeros((2, 3), dtype=torch.float64)
    pos[1, 0] = 2.5
    edges = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(Exception) as info:
        model.compute(pos, torch.tensor([0, 7]), edges, torch.zeros((2, 3), dtype=torch.float64))
    text = str(info.value)
    assert not text.startswith("The following operation failed")
    assert "index" in text.splitlines()[0].lower() or "out of" in text.splitlines()[0].lower(), text
    assert "TorchScript traceback" in text  # the details are kept, after the message


def test_cli_names_a_directory_given_as_model(tmp_path, capsys):
    from mlpot_plugins.cli import main

    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory, not a model file" in err and "Traceback" not in err


def test_slab_with_a_zero_non_periodic_vector_is_fine():
    """Only periodic directions need a height: a 2D-periodic slab may leave its third vector zero."""
    from ase.build import fcc111

    slab = fcc111("Cu", (2, 2, 3), a=3.61, vacuum=5.0)
    slab.rattle(0.05, seed=4)
    flat = slab.copy()
    flat.pbc = [True, True, False]
    flat.cell[2] = 0.0
    slab.pbc = [True, True, False]
    for a in (slab, flat):
        a.calc = MLPotCalculator("morse-cuau")
    assert flat.get_potential_energy() == pytest.approx(slab.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(flat.get_forces(), slab.get_forces(), atol=1e-12)


def test_single_model_uncertainty_says_it_needs_a_committee():
    from ase.build import bulk
    from ase.calculators.calculator import PropertyNotImplementedError

    from mlpot_plugins.ase import MLPotCalculator

    atoms = bulk("Cu", "fcc", a=3.8, cubic=True)
    atoms.calc = MLPotCalculator("morse-cuau")
    with pytest.raises(PropertyNotImplementedError, match=r"not a committee.*mlpot committee"):
        atoms.calc.get_property("forces_std", atoms)
