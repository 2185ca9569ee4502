"""Bad inputs of the native OpenMM backend (mlpot_plugins/openmm/native.py + the openmm/ plugin): each is a
Python exception naming the problem and the fix, never a crash. Cases that reach the C++ kernel surface as
openmm.OpenMMException from Context creation or evaluation."""
import shutil

import numpy as np
import openmm
import pytest

from mlpot_plugins.openmm import native
from mlpot_plugins.openmm.ml_region import resolve_region
from mlpot_plugins.openmm.model_loading import load_for_openmm
from mlpot_plugins.pretrained import pretrained_dir
from openmm_systems import MODEL, COMMITTEE, context_for, empty_system, energy_forces, periodic_cubic, topology_of


@pytest.fixture(scope="module")
def plugin():
    ok, why = native.native_available()
    assert ok, why


def force_for(model, atoms, region=None, device="cpu", loaded=None):
    loaded = loaded or load_for_openmm(model)
    return native.create_native_force(loaded, resolve_region(loaded.species, topology_of(atoms), region), device)


def xml_of(force, particle_index=None, **attrs):
    """The force's XML with ``attrs`` replaced (and particle 1's index set to ``particle_index``)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(openmm.XmlSerializer.serialize(force))
    root.attrib.update(attrs)
    if particle_index is not None:
        list(root.iter("Particle"))[1].set("index", str(particle_index))
    return ET.tostring(root, encoding="unicode")


def _fewer_particles(tmp_path):
    atoms = periodic_cubic()
    force = force_for(MODEL, atoms, region=[0, 5, 31])
    system = empty_system(atoms[:10])
    system.addForce(force)
    context_for(system, periodic_cubic()[:10])


def _model_file_then(tmp_path, action):
    """A force on a copy of the Morse model; ``action(model_file)``; then a Context."""
    atoms = periodic_cubic()
    model = tmp_path / "m.pt"
    shutil.copy(pretrained_dir() / f"{MODEL}.pt", model)
    system = empty_system(atoms)
    system.addForce(force_for(model, atoms))
    action(model)
    context_for(system, atoms)


def _moved_model(tmp_path):
    _model_file_then(tmp_path, lambda model: model.unlink())


def _changed_model(tmp_path):
    _model_file_then(tmp_path, lambda model: shutil.copy(pretrained_dir() / f"{COMMITTEE}.pt", model))


def _deleted_before_creation(tmp_path):
    model = tmp_path / "m.pt"
    shutil.copy(pretrained_dir() / f"{MODEL}.pt", model)
    loaded = load_for_openmm(model)
    model.unlink()
    force_for(None, periodic_cubic(), loaded=loaded)


def _no_box_set(tmp_path):
    atoms = periodic_cubic()
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(m)
    system.addForce(force_for(MODEL, atoms))
    energy_forces(context_for(system, atoms))


def _evaluated_with(change):
    """Evaluate the Morse force on the periodic system after ``change(positions)``."""
    atoms = periodic_cubic()
    system = empty_system(atoms)
    system.addForce(force_for(MODEL, atoms))
    pos = atoms.positions.copy()
    change(pos)
    energy_forces(context_for(system, pos))


def _nan_position(tmp_path):
    _evaluated_with(lambda pos: pos.__setitem__((4, 1), np.nan))


def _coincident_atoms(tmp_path):
    _evaluated_with(lambda pos: pos.__setitem__(7, pos[3]))


def _xml_version(tmp_path):
    openmm.XmlSerializer.deserialize(xml_of(force_for(MODEL, periodic_cubic()), version="99"))


def _xml_precision(tmp_path):
    openmm.XmlSerializer.deserialize(xml_of(force_for(MODEL, periodic_cubic()), precision="float16"))


def _context_of_edited_xml(**edit):
    atoms = periodic_cubic()
    system = empty_system(atoms)
    system.addForce(openmm.XmlSerializer.deserialize(xml_of(force_for(MODEL, atoms), **edit)))
    context_for(system, atoms)


def _xml_type_out_of_range(tmp_path):
    _context_of_edited_xml(numSpecies="1")


def _xml_repeated_particle(tmp_path):
    _context_of_edited_xml(particle_index=0)


def _xml_negative_particle(tmp_path):
    _context_of_edited_xml(particle_index=-3)


def _bad_device(tmp_path):
    force_for(MODEL, periodic_cubic(), device="tpu")


def _cuda_device_without_gpu(tmp_path):
    atoms = periodic_cubic()
    system = empty_system(atoms)
    system.addForce(force_for(MODEL, atoms, device="cuda"))
    context_for(system, atoms)


def _lattice_model(tmp_path):
    from mlpot_plugins.model_file import load

    native.create_native_force(load("holstein-d4"), None)


def _read_wrong_size(tmp_path):
    atoms = periodic_cubic()
    force = force_for(COMMITTEE, atoms)
    tag = native.native_force_info(force)["tag"]
    system = empty_system(atoms)
    system.addForce(force)
    ctx = context_for(system, atoms)
    native.request_uncertainty(tag, ctx)
    energy_forces(ctx)
    native.read_uncertainty(tag, ctx, 5)


def _bad_mode(tmp_path):
    atoms = periodic_cubic()
    system = empty_system(atoms)
    system.addForce(force_for(COMMITTEE, atoms))
    native.request_uncertainty("x", context_for(system, atoms), "sometimes")


CASES = {
    "region-beyond-system": (_fewer_particles, openmm.OpenMMException, ["ML region refers to particle 31", "10 particles"]),
    "model-moved": (_moved_model, openmm.OpenMMException, ["no longer exists", "MLPOT_MODEL_DIR", "Put the model file back"]),
    "model-changed": (_changed_model, openmm.OpenMMException, ["changed since the force was created", "re-create"]),
    "model-deleted-before-creation": (_deleted_before_creation, FileNotFoundError, ["no longer exists", "put it back"]),
    "periodic-without-box": (_no_box_set, openmm.OpenMMException, ["default 2 nm cube", "setDefaultPeriodicBoxVectors"]),
    "nan-position": (_nan_position, openmm.OpenMMException, ["not finite", "smaller time step"]),
    "coincident-atoms": (_coincident_atoms, openmm.OpenMMException, ["coincident atoms", "3 and 7", "remove the duplicate"]),
    "xml-version": (_xml_version, openmm.OpenMMException, ["XML version 99", "upgrade mlpot_plugins"]),
    "xml-precision": (_xml_precision, openmm.OpenMMException, ["precision must be float32 or float64", "create_force"]),
    "xml-repeated-particle": (_xml_repeated_particle, openmm.OpenMMException, ["particle 0 is listed twice",
                                                                              "list each particle once"]),
    "xml-negative-particle": (_xml_negative_particle, openmm.OpenMMException, ["refers to particle -3", "0..31"]),
    "xml-type-out-of-range": (_xml_type_out_of_range, openmm.OpenMMException, ["species index 1", "1 species"]),
    "bad-device": (_bad_device, ValueError, ["not a torch device name", "'cpu'"]),
    "cuda-without-gpu": (_cuda_device_without_gpu, openmm.OpenMMException, ["sees no CUDA GPU", "device='cpu'"]),
    "lattice-model": (_lattice_model, ValueError, ["'lattice' model cannot be an OpenMM force", "atomistic"]),
    "read-wrong-size": (_read_wrong_size, ValueError, ["has 32 atoms, not 5"]),
    "bad-uncertainty-mode": (_bad_mode, ValueError, ["'sometimes'", "'next'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_clear_exception(plugin, tmp_path, case):
    make, exc_type, words = CASES[case]
    with pytest.raises(exc_type) as err:
        make(tmp_path)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_unwritable_cache_is_a_reason_not_a_crash(tmp_path):
    """native_available() answers (False, why + fix) when the plugin cannot be built; it never raises."""
    import os
    import subprocess
    import sys

    (tmp_path / "a-file").write_text("")
    env = dict(os.environ, MLPOT_CACHE_DIR=str(tmp_path / "a-file" / "cache"))
    code = "from mlpot_plugins.openmm import native; print(native.native_available())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("(False, ") and "cannot write the OpenMM plugin cache" in res.stdout
    assert "MLPOT_CACHE_DIR" in res.stdout
