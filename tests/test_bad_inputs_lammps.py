"""Bad inputs to pair_style mlpot / compute mlpot/atom: each case is a real `lmp` run that must end with
an ERROR: line naming the problem (and the fix), a non-zero exit and no crash (no signal, no terminate,
no raw JSON-library text). Extend CASES when a new input is added to the plugin.

Bad model files are built here: a model exported with mlpot_plugins.export(), then its metadata.json
rewritten inside the zip (or the archive damaged)."""
import json
import zipfile
from pathlib import Path
from typing import Dict

import pytest
import torch

from lammps_util import cuau, plugin, run_lmp, write_data  # noqa: F401
from mlpot_plugins import export
from mlpot_plugins.models.reference import MorsePotential


class RaisingModel(MorsePotential):
    """A model whose compute() raises (as a model meeting an input it cannot handle would)."""

    @torch.jit.export
    def compute(self, positions: torch.Tensor, types: torch.Tensor, edge_index: torch.Tensor,
                shifts: torch.Tensor, n_local: int, need_virial: bool,
                need_uncertainty: bool) -> Dict[str, torch.Tensor]:
        if n_local > 0:
            raise RuntimeError("deliberate model failure for the test")
        return self.evaluate(positions, types, edge_index, shifts, n_local, need_virial, need_uncertainty, False)


class ShortForces(MorsePotential):
    """A model breaking the contract: forces of one row only (would be read out of bounds)."""

    @torch.jit.export
    def compute(self, positions: torch.Tensor, types: torch.Tensor, edge_index: torch.Tensor,
                shifts: torch.Tensor, n_local: int, need_virial: bool,
                need_uncertainty: bool) -> Dict[str, torch.Tensor]:
        out = self.evaluate(positions, types, edge_index, shifts, n_local, need_virial, need_uncertainty, False)
        out["forces"] = out["forces"][:1]
        return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Models exported once for the whole suite: a single model, a K=2 committee, two broken ones."""
    d = tmp_path_factory.mktemp("models")
    return {"single": export(MorsePotential(["Cu", "Au"], cutoff=5.0), d / "single.pt"),
            "committee": export(MorsePotential(["Cu", "Au"], cutoff=5.0, ensemble_size=2, seed=1),
                                d / "committee.pt"),
            "raises": export(RaisingModel(["Cu", "Au"], cutoff=5.0), d / "raises.pt"),
            "short": export(ShortForces(["Cu", "Au"], cutoff=5.0), d / "short.pt")}


def rewrite_metadata(src: Path, dst: Path, edit) -> Path:
    """Copy a model archive, replacing metadata.json by edit(dict) (a dict, or raw text)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("extra/metadata.json"):
                new = edit(json.loads(data))
                data = (new if isinstance(new, str) else json.dumps(new)).encode()
            zout.writestr(item, data)
    return dst


def meta(**changes):
    def edit(m):
        for k, v in changes.items():
            if v is DROP:
                m.pop(k)
            else:
                m[k] = v
        return m
    return edit


DROP = object()


def bad_model(which="single", edit=None, damage=None):
    """A factory of the model path argument: (tmp_path, models) -> str."""
    def make(tmp_path, models):
        src = models[which]
        if edit is not None:
            return str(rewrite_metadata(src, tmp_path / "bad.pt", edit))
        if damage is not None:
            return str(damage(src, tmp_path))
        return str(src)
    return make


def truncated(src, tmp):
    data = Path(src).read_bytes()
    (tmp / "cut.pt").write_bytes(data[: len(data) // 2])
    return tmp / "cut.pt"


def not_a_zip(src, tmp):
    (tmp / "junk.pt").write_bytes(b"this is not a model" * 10)
    return tmp / "junk.pt"


def without_metadata(src, tmp):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp / "nometa.pt", "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith("extra/metadata.json"):
                zout.writestr(item, zin.read(item.filename))
    return tmp / "nometa.pt"


def directory(src, tmp):
    (tmp / "model_dir").mkdir()
    return tmp / "model_dir"


def missing(src, tmp):
    return tmp / "nowhere.pt"


# id: (model factory, pair_style options, pair_coeff, deck pieces, expected words in the ERROR line)
CASES = {
    # the model file
    "missing file": (bad_model(damage=missing), "", None, {}, ["nowhere.pt", "does not exist"]),
    "directory": (bad_model(damage=directory), "", None, {}, ["model_dir", "is a directory", ".pt"]),
    "not a zip": (bad_model(damage=not_a_zip), "", None, {}, ["junk.pt", "corrupt", "not a zip"]),
    "truncated": (bad_model(damage=truncated), "", None, {}, ["cut.pt", "corrupt", "re-export"]),
    "no metadata": (bad_model(damage=without_metadata), "", None, {}, ["no metadata.json", "re-export"]),
    # metadata.json: field names and expected types, never the JSON library's text
    "metadata not json": (bad_model(edit=lambda m: "{cutoff: 5"), "", None, {},
                          ["metadata.json", "not a valid JSON object", "re-export"]),
    "metadata a list": (bad_model(edit=lambda m: "[1, 2]"), "", None, {}, ["not a valid JSON object"]),
    "cutoff a string": (bad_model(edit=meta(cutoff="five")), "", None, {},
                        ["field 'cutoff' must be a number", "got string", "re-export"]),
    "species missing": (bad_model(edit=meta(species=DROP)), "", None, {},
                        ["no field 'species'", "list of element names"]),
    "species not strings": (bad_model(edit=meta(species=[29, 79])), "", None, {},
                            ["field 'species' must be a list of element names"]),
    "ensemble_size float": (bad_model(edit=meta(ensemble_size=1.5)), "", None, {},
                            ["field 'ensemble_size' must be an integer"]),
    "format_version 2": (bad_model(edit=meta(format_version=2)), "", None, {}, ["format_version 2", "reads 1"]),
    "kind lattice": (bad_model(edit=meta(kind="lattice")), "", None, {}, ["lattice model", "must use lattice and t"]),
    "kind unknown": (bad_model(edit=meta(kind="molecule")), "", None, {}, ["kind 'molecule'", "atomistic or a lattice"]),
    "units kcal": (bad_model(edit=meta(energy_unit="kcal/mol")), "", None, {}, ["angstrom and eV"]),
    "negative cutoff": (bad_model(edit=meta(cutoff=-1.0, interaction_range=-1.0)), "", None, {},
                        ["invalid values", "cutoff > 0"]),
    # torch_libraries (contract): only the allowlisted providers' files, dlopened before torch::jit::load
    "extension library missing": (bad_model(edit=meta(torch_libraries=[
        {"python_module": "metatomic.torch", "shared_libraries": ["/no/such/dir/libmetatensor.so"]}])), "", None, {},
        ["bad.pt", "/no/such/dir/libmetatensor.so", "No such file", "'metatomic.torch'",
         "pip install metatomic-torch", "mlpot import"]),
    "extension module not allowed": (bad_model(edit=meta(torch_libraries=[
        {"python_module": "evil.torch", "shared_libraries": ["/tmp/libevil.so"]}])), "", None, {},
        ["bad.pt", "asks to load 'evil.torch'", "not a known extension provider", "libmetatomic_torch.so",
         "unknown native code", "mlpot import"]),
    "extension library not allowed": (bad_model(edit=meta(torch_libraries=[
        {"python_module": "metatomic.torch", "shared_libraries": ["/tmp/libevil.so"]}])), "", None, {},
        ["asks to load 'metatomic.torch' [/tmp/libevil.so]", "not a known extension provider"]),
    "torch_libraries not a list": (bad_model(edit=meta(torch_libraries="metatomic.torch")), "", None, {},
                                   ["field 'torch_libraries' must be a list of", "mlpot import"]),
    # metadata.json against the module itself (the rule of mlpot_plugins.model_file.load)
    "cutoff vs module": (bad_model(edit=meta(cutoff=4.0, interaction_range=4.0)), "", None, {},
                         ["cutoff = 4", "module has cutoff = 5", "re-export"]),
    "ensemble_size vs module": (bad_model("committee", edit=meta(ensemble_size=3)), "", None, {},
                                ["ensemble_size = 3", "module has ensemble_size = 2"]),
    "uncertainty_scale vs module": (bad_model("committee", edit=meta(uncertainty_scale=2.0)), "", None, {},
                                    ["uncertainty_scale = 2", "module has uncertainty_scale = 1"]),
    "n_species vs module": (bad_model(edit=meta(species=["Cu", "Au", "Ag"])), "", "pair_coeff * * Cu Au", {},
                            ["n_species = 3", "module has n_species = 2"]),
    "dtype vs module": (bad_model(edit=meta(dtype="float32")), "", None, {},
                        ["dtype float32", "is float64", "re-export"]),
    # failures while running: one LAMMPS error naming the step and the model's own message
    "model raises": (bad_model("raises"), "", None, {},
                     ["failed in its compute() method", "deliberate model failure for the test"]),
    "output of wrong shape": (bad_model("short"), "", None, {},
                              ["returned 'forces' of shape [1, 3]", "the contract needs ["]),
    # pair_style options
    "unknown option": (bad_model(), "frobnicate 3", None, {}, ["Unknown pair_style mlpot option 'frobnicate'"]),
    "uncertainty often": (bad_model("committee"), "uncertainty often", None, {},
                          ["expected 'every N' after it, got 'often'"]),
    "uncertainty every 0": (bad_model("committee"), "uncertainty every 0", None, {}, ["N >= 1, got 0"]),
    "device gpu": (bad_model(), "device gpu", None, {}, ["device must be cpu or cuda", "'gpu'"]),
    "edges gpu": (bad_model(), "edges gpu", None, {}, ["edges must be host or device", "'gpu'"]),
    "edges without value": (bad_model(), "edges", None, {}, ["edges: expected host or device after it"]),
    "coincident atoms, edges device": (bad_model(), "edges device", None,
                                       {"before_pair": "create_atoms 1 single 0.0 0.0 0.0 units box"},
                                       ["33", "are at the same position", "duplicate"]),
    "model_devi single model": (bad_model(), "model_devi devi.out every 10", None, {},
                                ["need a committee model", "ensemble_size 1"]),
    "model_devi unwritable": (bad_model("committee"), "model_devi no/such/dir/devi.out every 1", None, {},
                              ["cannot open model_devi file", "no/such/dir/devi.out"]),
    # pair_coeff
    "element not in model": (bad_model(), "", "pair_coeff * * Cu Ag", {},
                             ["element Ag", "atom type 2", "Cu Au"]),
    "too few elements": (bad_model(), "", "pair_coeff * * Cu", {}, ["needs 2 element names", "got 1"]),
    "all types NULL": (bad_model(), "", "pair_coeff * * NULL NULL", {}, ["every atom type is NULL"]),
    "pair_coeff not * *": (bad_model(), "", "pair_coeff 1 1 Cu Au", {}, ["must start with * *"]),
    # the simulation around it
    "units lj": (bad_model(), "", None, {"units": "lj"}, ["units lj", "metal, real"]),
    "newton off": (bad_model(), "", None, {"before": "newton off"}, ["newton_pair on"]),
    "coincident atoms": (bad_model(), "", None, {"before_pair": "create_atoms 1 single 0.0 0.0 0.0 units box"},
                         ["33", "are at the same position", "duplicate"]),
    "compute without committee": (bad_model(), "", None,
                                  {"after": "compute u all mlpot/atom\nthermo_style custom step c_u[1]"},
                                  ["compute mlpot/atom needs a committee"]),
    "compute without pair mlpot": (None, "zero 5.0", "pair_coeff * *",
                                   {"after": "compute u all mlpot/atom\nthermo_style custom step c_u[1]"},
                                   ["requires pair_style mlpot"]),
    "compute extra words": (bad_model("committee"), "", None, {"after": "compute u all mlpot/atom 5"},
                            ["Illegal compute mlpot/atom command"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_gives_lammps_error(tmp_path, plugin, models, case):
    make, options, coeff, pieces, words = CASES[case]
    atoms = cuau((2, 2, 2), rattle=0.0)    # 32 atoms, atom 1 at the origin
    write_data(tmp_path / "system.data", atoms)
    style = f"mlpot {make(tmp_path, models)} {options}" if make else options
    deck = f"""units {pieces.get('units', 'metal')}
{pieces.get('before', '')}
atom_style atomic
atom_modify map array
plugin load {plugin}
read_data system.data
{pieces.get('before_pair', '')}
pair_style {style}
{coeff or 'pair_coeff * * Cu Au'}
{pieces.get('after', '')}
run 0
"""
    res = run_lmp(deck, tmp_path, nprocs=2 if case == "newton off" else 1, check=False, timeout=60)
    out = res.stdout + res.stderr
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert res.returncode not in (0,) and res.returncode > 0, f"exit {res.returncode}:\n{out[-2000:]}"
    assert errors, f"no ERROR line:\n{out[-3000:]}"
    for bad in ("terminate called", "Segmentation", "signal", "nlohmann", "json.exception", "parse_error"):
        assert bad not in out, f"{bad!r} in the output:\n{out[-3000:]}"
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"


def test_device_cuda_without_gpu(tmp_path, plugin, models):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot be exercised")
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    deck = f"""units metal
atom_style atomic
plugin load {plugin}
read_data system.data
pair_style mlpot {models['single']} device cuda
pair_coeff * * Cu Au
run 0
"""
    res = run_lmp(deck, tmp_path, check=False, timeout=60)
    err = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("ERROR")]
    assert res.returncode > 0 and err and "CUDA is not available" in err[0] and "device cpu" in err[0]


def test_pretrained_dir_pointing_nowhere_is_named(tmp_path, plugin):
    """A shipped name with $MLPOT_PRETRAINED_DIR set to a missing folder names the variable (as Python does)."""
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    deck = f"""units metal
atom_style atomic
plugin load {plugin}
read_data system.data
pair_style mlpot morse-cuau
pair_coeff * * Cu Au
run 0
"""
    res = run_lmp(deck, tmp_path, check=False, timeout=60, env={"MLPOT_PRETRAINED_DIR": str(tmp_path / "nowhere")})
    err = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("ERROR")]
    assert res.returncode > 0 and err, res.stdout[-2000:]
    assert "MLPOT_PRETRAINED_DIR" in err[0] and "nowhere" in err[0] and "unset it" in err[0], err[0]
