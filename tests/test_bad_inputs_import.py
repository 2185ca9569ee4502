"""Bad inputs to `mlpot committee`, `mlpot import metatomic` and `mlpot export --to metatomic`: each ends in a
clear error naming the problem and the fix (exception class + key words; the CLI exits 2 with the message)."""
import json
import zipfile

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from mlpot_plugins import load
from mlpot_plugins.cli import main
from mlpot_plugins.committee import make_committee
from mlpot_plugins.contract import ModelFormatError
from mlpot_plugins.model_file import export
from mlpot_plugins.models.reference import MorsePotential


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    f = {"m5": str(export(MorsePotential(["Au", "Cu"], cutoff=5.0), d / "m5.pt")),
         "f32": str(export(MorsePotential(["Cu", "Au"], cutoff=5.0, dtype=torch.float32), d / "f32.pt")),
         "dir": d / "adir", "text": d / "text.pt"}
    f["dir"].mkdir()
    f["text"].write_text("not a model")
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    ase.io.write(d / "nolabel.extxyz", cu)
    f["nolabel"] = str(d / "nolabel.extxyz")
    ag = bulk("Ag", "fcc", a=4.1, cubic=True)
    ag.calc = EMT()
    ag.get_forces()
    ase.io.write(d / "ag.extxyz", ag)
    f["ag"] = str(d / "ag.extxyz")
    cu.rattle(0.1, seed=1)
    cu.calc = EMT()
    cu.get_forces()
    ase.io.write(d / "cu.extxyz", cu)
    f["cu"] = str(d / "cu.extxyz")
    nan = cu.copy()
    nan.calc = EMT()
    nan.get_forces()
    nan.calc.results["forces"] = np.full((len(cu), 3), np.nan)
    ase.io.write(d / "nan.extxyz", nan)
    f["nan"] = str(d / "nan.extxyz")
    torch.save({"state_dict": {}}, d / "checkpoint.pt")  # what `mlpot train` writes: a zip, not TorchScript
    f["d"] = d
    return f


COMMITTEE = [
    ("one-model", lambda f: (["morse-cuau"], {}), ValueError, ["at least 2", "two or more"]),
    ("species", lambda f: (["morse-cuau", "cu-emt"], {}), ValueError, ["species differ", "same elements"]),
    ("lattice", lambda f: (["morse-cuau", "holstein-d4"], {}), ValueError, ["'lattice' model", "atomistic"]),
    ("dtype", lambda f: (["morse-cuau", f["f32"]], {}), ValueError, ["dtypes differ", "--dtype", "not converted"]),
    ("missing-member", lambda f: (["morse-cuau", "nope.pt"], {}), FileNotFoundError, ["does not exist", "mlpot models"]),
    ("calibrate-missing", lambda f: (["morse-cuau", f["m5"]], {"calibrate": "nope.extxyz"}), FileNotFoundError,
     ["does not exist", "mlpot data emt"]),
    ("calibrate-unlabelled", lambda f: (["morse-cuau", f["m5"]], {"calibrate": f["nolabel"]}), ValueError,
     ["no reference forces", "calculator attached"]),
    ("calibrate-element", lambda f: (["morse-cuau", f["m5"]], {"calibrate": f["ag"]}), ValueError,
     ["['Ag']", "not in the model's species", "trained for them"]),
    ("calibrate-identical-members", lambda f: (["morse-cuau", "morse-cuau"], {"calibrate": f["cu"]}), ValueError,
     ["agree exactly", "drop --calibrate"]),
    ("calibrate-nan-labels", lambda f: (["morse-cuau", f["m5"]], {"calibrate": f["nan"]}), ValueError,
     ["non-finite scale", "NaN"]),
]


@pytest.mark.parametrize("case", COMMITTEE, ids=[c[0] for c in COMMITTEE])
def test_committee_bad_inputs(files, tmp_path, case):
    _, make, exc, words = case
    members, kw = make(files)
    with pytest.raises(exc) as info:
        make_committee(members, tmp_path / "c.pt", **kw)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert not (tmp_path / "c.pt").exists()  # nothing half-written


def test_committee_output_is_a_directory(files, capsys):
    assert main(["committee", "morse-cuau", files["m5"], "-o", str(files["dir"])]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "model.pt" in err


# --- metatomic import / export (need metatomic-torch) ---

def _metatomic_cases():
    return [
        ("missing-file", lambda f: "nope.pt", FileNotFoundError, ["does not exist", "AtomisticModel.save()"]),
        ("not-a-zip", lambda f: str(f["text"]), ModelFormatError, ["not a TorchScript archive", "AtomisticModel.save()"]),
        ("our-own-file", lambda f: f["m5"], ModelFormatError, ["not a loadable metatomic AtomisticModel",
                                                               "mlpot import mace/nequip"]),
        ("no-energy-unit", lambda f: _tiny(f, energy_unit=""), ModelFormatError, ["declares no energy unit",
                                                                                 "Re-export"]),
        ("no-length-unit", lambda f: _tiny(f, length_unit=""), ModelFormatError, ["declares no length unit",
                                                                                 "Re-export"]),
        ("system-energy-only", lambda f: _tiny(f, per_atom=False), ModelFormatError, ["per-atom energies",
                                                                                     "Re-export"]),
    ]


def _tiny(files, **kw):
    from metatomic_models import save_tiny_eam

    name = "-".join(f"{k}{v}" for k, v in kw.items()).replace("/", "") or "plain"
    return save_tiny_eam(files["d"] / f"tiny-{name}.pt", **kw)


@pytest.mark.filterwarnings("ignore:No length unit was provided")  # metatomic's own warning at save time
@pytest.mark.parametrize("case", _metatomic_cases(), ids=[c[0] for c in _metatomic_cases()])
def test_import_metatomic_bad_inputs(files, tmp_path, case):
    pytest.importorskip("metatomic.torch")
    from mlpot_plugins.importers.metatomic import import_metatomic

    _, make, exc, words = case
    with pytest.raises(exc) as info:
        import_metatomic(make(files), tmp_path / "out.pt")
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def _with_metadata(src, dst, edit):
    """Copy a model archive with its metadata.json edited."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/extra/metadata.json"):
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    return dst


@pytest.mark.parametrize("entry,words", [
    ([{"python_module": "os", "shared_libraries": []}], ["'os'", "not a known extension provider",
                                                         "unknown native code", "Re-import"]),
    ([{"python_module": "metatomic.torch", "shared_libraries": ["/tmp/libevil.so"]}],
     ["['/tmp/libevil.so']", "not a known extension provider"]),
    (["metatomic.torch"], ["'torch_libraries' must be a list of", "Re-import"]),
], ids=["unknown-module", "unknown-library", "malformed-entry"])
def test_torch_libraries_errors(files, tmp_path, entry, words):
    path = _with_metadata(files["m5"], tmp_path / "edited.pt", lambda m: m.update(torch_libraries=entry))
    with pytest.raises(ModelFormatError) as info:
        load(path)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_extension_not_installed(files, tmp_path):
    """A model needing metatomic-torch, loaded where it is not importable (blocked in a fresh interpreter)."""
    import subprocess
    import sys

    entry = [{"python_module": "metatomic.torch", "shared_libraries": []}]
    path = _with_metadata(files["m5"], tmp_path / "needs-metatomic.pt", lambda m: m.update(torch_libraries=entry))
    code = ("import sys; sys.modules['metatomic'] = None\n"
            "from mlpot_plugins.cli import main; sys.exit(main(['info', sys.argv[1]]))")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "needs the TorchScript extensions of Python module 'metatomic.torch'" in res.stderr
    assert "pip install metatomic-torch" in res.stderr


@pytest.mark.parametrize("argv,words", [
    (["export", "--to", "metatomic", "holstein-d4", "-o", "{d}/x.pt"], ["'lattice' model", "atomistic model"]),
    (["export", "--to", "metatomic", "morse-cuau"], ["no output file", "-o OUT"]),
    (["export", "--to", "metatomic", "nope.pt", "-o", "{d}/x.pt"], ["does not exist", "mlpot models"]),
    (["export", "--to", "metatomic", "morse-cuau", "-o", "{d}/adir"], ["is a directory", "model.pt"]),
    (["export", "--to", "metatomic", "{d}/checkpoint.pt", "-o", "{d}/x.pt"], ["not a loadable TorchScript",
                                                                              "mlpot export CHECKPOINT"]),
], ids=["lattice", "no-output", "missing-model", "output-is-directory", "training-checkpoint"])
def test_export_metatomic_bad_inputs(files, capsys, argv, words):
    pytest.importorskip("metatomic.torch")
    assert main([a.format(d=files["d"]) for a in argv]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)


def test_export_of_an_imported_model_is_refused(files, tmp_path):
    pytest.importorskip("metatomic.torch")
    from mlpot_plugins.exporters import export_to
    from mlpot_plugins.importers.metatomic import import_metatomic

    imported = import_metatomic(_tiny(files), tmp_path / "imported.pt")
    with pytest.raises(ValueError, match="imported from another format.*export the original model"):
        export_to("metatomic", imported, tmp_path / "back.pt")
    with pytest.raises(ValueError, match="unknown export format 'ase'"):
        export_to("ase", "morse-cuau", tmp_path / "x.pt")
