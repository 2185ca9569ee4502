"""``backend="native"``: the OpenMM plugin of the top-level ``openmm/`` folder (C++, libtorch), built on first
use and cached like the LAMMPS plugin (:mod:`mlpot_plugins.native_build`).

The plugin library ``libMLPotPlugin.so`` holds ``MLPotForce`` (an ``OpenMM::Force``), its XML serialization
proxy and the kernel of the Reference and CPU platforms; ``libMLPotPluginCUDA.so`` (built only where OpenMM's
CUDA platform, a CUDA toolkit's ``cuda.h`` and a CUDA torch are installed) the CUDA platform's kernel.
Python needs no SWIG wrapper: :func:`create_native_force` writes the force's XML form and
``openmm.XmlSerializer.deserialize`` turns it into an ``openmm.Force`` that a System can own; XmlSerializer,
``copy.deepcopy`` and ``CustomCVForce`` clone it through the same proxy.

Committee statistics come from the evaluation that drives the dynamics (no second pass): ask with
:func:`request_uncertainty` (the next evaluation, or every one), then :func:`read_uncertainty`; both go
through the plugin's ``extern "C"`` functions (ctypes), keyed by the force's tag and the Context.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import threading
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import units
from ..native_build import (NativePlugin, PluginBuildError, Target, file_hash, package, torch_config,
                            torch_flags, torch_link)

LIBRARY = "libMLPotPlugin.so"
CUDA_LIBRARY = "libMLPotPluginCUDA.so"
SOURCES = ("mlpot_force.cpp", "mlpot_reference.cpp")
CUDA_SOURCES = ("mlpot_cuda.cpp",)
HEADERS = ("MLPotForce.h", "MLPotKernels.h", "mlpot_model.h")
SHARED_HEADERS = ("mlpot_torch_util.h",)  # from the LAMMPS plugin's sources (one implementation)
TORCH_SOURCES = ("mlpot_reference.cpp", "mlpot_cuda.cpp")  # mlpot_reference.cpp: the one libtorch TU (~35 s)
XML_VERSION = 1
UNCERTAINTY_MODES = {"off": 0, "next": 1, "always": 2}


def source_dir() -> Path:
    """The C++ sources: ``mlpot_plugins/_openmm_src`` in an installed wheel, ``openmm/`` in a checkout."""
    here = Path(__file__).resolve().parent.parent
    candidates = (here / "_openmm_src", here.parent / "openmm")
    for path in candidates:  # (the openmm wheel's own folder in site-packages has no such files)
        if all((path / name).is_file() for name in SOURCES + CUDA_SOURCES + HEADERS):
            return path
    raise FileNotFoundError(
        f"the OpenMM plugin sources ({', '.join(SOURCES + CUDA_SOURCES + HEADERS)}) are in neither {candidates[0]} "
        f"(installed package) nor {candidates[1]} (source checkout); reinstall mlpot_plugins "
        "(pip install --force-reinstall mlpot_plugins, or pip install -e . in a checkout)")


def _shared_dir() -> Path:
    from ..lammps import source_dir as lammps_sources

    return lammps_sources()


def _cuda_include(torch_lib: Path) -> Optional[Path]:
    """A CUDA toolkit's include folder (``cuda.h`` and ``crt/host_defines.h``, which OpenMM's CUDA headers
    need): $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, the newest /usr/local/cuda-*; or None."""
    bases = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
             *sorted(Path("/usr/local").glob("cuda-*"), reverse=True)]
    for base in bases:
        inc = Path(base) / "include" if base else None
        if inc and (inc / "cuda.h").is_file() and (inc / "crt" / "host_defines.h").is_file():
            return inc
    return None


def cuda_problem(cfg: Optional[dict] = None) -> Optional[str]:
    """None when the CUDA kernel can be built here, else what is missing."""
    cfg = cfg or _build_config()
    missing = []
    if not (cfg["openmm_lib"] / "plugins" / "libOpenMMCUDA.so").is_file():
        missing.append("OpenMM's CUDA platform (pip install openmm[cuda12])")
    if not (cfg["openmm_include"] / "openmm" / "cuda" / "CudaContext.h").is_file():
        missing.append("OpenMM's CUDA platform headers")
    if cfg["cuda_include"] is None:
        missing.append("a CUDA toolkit's headers (cuda.h; set CUDA_HOME)")
    if not cfg["torch_cuda"]:
        missing.append("a CUDA build of torch")
    return "; ".join(missing) or None


def _build_config() -> dict:
    openmm_dir, openmm_version = package("openmm", "OpenMM plugin")
    libs = openmm_dir.parent / "OpenMM.libs"
    cfg = {**torch_config(), "engine_version": openmm_version, "openmm_include": libs / "include",
           "openmm_lib": libs / "lib", "pretrained": Path(__file__).resolve().parent.parent / "pretrained",
           }
    cfg["cuda_include"] = _cuda_include(cfg["torch_lib"])
    cfg["torch_cuda"] = (cfg["torch_lib"] / "libtorch_cuda.so").is_file()
    if not (cfg["openmm_include"] / "openmm" / "Force.h").is_file():
        raise PluginBuildError(f"the installed OpenMM has no C++ headers in {cfg['openmm_include']} (the openmm "
                               "wheel ships them); reinstall it: pip install --force-reinstall openmm")
    return cfg


def _compile_flags(cfg: dict, torch: bool) -> List[str]:
    flags = ["-std=c++17", "-O2", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=1", f"-I{cfg['openmm_include']}",
             f"-I{source_dir()}", f"-I{_shared_dir()}"]
    if torch:
        flags += torch_flags(cfg)
        flags += [f'-DMLPOT_PRETRAINED_DIR="{cfg["pretrained"]}"',
                  f"-DMLPOT_OPENMM_LENGTH_TO_MODEL={units.OPENMM_LENGTH_TO_MODEL!r}",
                  f"-DMLPOT_OPENMM_ENERGY_FROM_MODEL={units.OPENMM_ENERGY_FROM_MODEL!r}",
                  f"-DMLPOT_OPENMM_FORCE_FROM_MODEL={units.OPENMM_FORCE_FROM_MODEL!r}"]
        if cuda_problem(cfg) is None:
            flags.append(f"-I{cfg['cuda_include']}")
    return flags


def _targets(cfg: dict) -> List[Target]:
    lib = str(cfg["openmm_lib"])
    link = (f"-L{lib}", f"-Wl,-rpath,{lib}", "-lOpenMM", *torch_link(cfg))
    out = [Target(LIBRARY, SOURCES, TORCH_SOURCES, link)]
    if cuda_problem(cfg) is None:  # its Model symbols come from libMLPotPlugin.so, loaded first (RTLD_GLOBAL)
        plugins = str(cfg["openmm_lib"] / "plugins")
        out.append(Target(CUDA_LIBRARY, CUDA_SOURCES, TORCH_SOURCES,
                          (*link, f"-L{plugins}", f"-Wl,-rpath,{plugins}", "-l:libOpenMMCUDA.so", "-ltorch_cuda",
                           "-lc10_cuda", "-l:libcuda.so.1")))
    return out


PLUGIN = NativePlugin(
    title="OpenMM plugin", prefix="openmm", engine="OpenMM", source_dir=source_dir,
    hashed=lambda: ([source_dir() / n for n in SOURCES + CUDA_SOURCES + HEADERS]
                    + [_shared_dir() / n for n in SHARED_HEADERS]),
    config=_build_config, flags=_compile_flags, targets=_targets)

_LOCK = threading.Lock()
_LOADED: Dict[str, object] = {}


def plugin_path(build: bool = True) -> Path:
    """Path of ``libMLPotPlugin.so`` (built first, once, when missing or damaged; see native_build)."""
    return PLUGIN.path(build)


def load_plugin():
    """Build (once) and load the plugin into OpenMM; returns its ctypes handle. Tunes the allocator of the process
    as every engine does (engine_setup.tune_malloc): a process that only deserializes a System gets it too."""
    import openmm

    from ..engine_setup import tune_malloc

    tune_malloc()
    with _LOCK:
        if "lib" in _LOADED:
            return _LOADED["lib"]
        path = plugin_path()
        cuda = path.parent / CUDA_LIBRARY
        if cuda_problem() is None and PLUGIN.cached_problem(cuda) is not None:  # the CUDA kernel is checked
            PLUGIN.build(force=True)                                             # against the manifest too
        openmm.Platform.loadPluginLibrary(str(path))  # registers MLPotForce's proxy and the kernels
        if cuda.is_file() and any(openmm.Platform.getPlatform(i).getName() == "CUDA"
                                  for i in range(openmm.Platform.getNumPlatforms())):
            openmm.Platform.loadPluginLibrary(str(cuda))
        lib = ctypes.CDLL(str(path))  # the same loaded library: the committee statistics functions
        lib.mlpot_openmm_request_uncertainty.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        lib.mlpot_openmm_request_uncertainty.restype = ctypes.c_int
        dbl = ctypes.POINTER(ctypes.c_double)
        lib.mlpot_openmm_get_uncertainty.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, dbl, dbl, dbl]
        lib.mlpot_openmm_get_uncertainty.restype = ctypes.c_longlong
        lib.mlpot_openmm_request_uncertainty_at.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_longlong]
        lib.mlpot_openmm_request_uncertainty_at.restype = ctypes.c_int
        lib.mlpot_openmm_uncertainty_step.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        lib.mlpot_openmm_uncertainty_step.restype = ctypes.c_longlong
        _LOADED["lib"] = lib
        return lib


def native_available() -> Tuple[bool, str]:
    """(True, where the plugin is) when the native backend can be used here (building it first if needed,
    once, about a minute), else (False, why and the fix). Never raises."""
    try:
        if importlib.util.find_spec("openmm") is None:
            return False, "OpenMM is not installed: pip install openmm"
        if shutil.which((os.environ.get("CXX") or "g++").split()[0]) is None and PLUGIN.cached_problem() is not None:
            return False, "no C++ compiler to build the OpenMM plugin (install g++ or set CXX)"
        load_plugin()
        return True, f"native OpenMM plugin {plugin_path(build=False)}"
    except Exception as exc:  # noqa: BLE001 (the reason is the answer)
        return False, f"the native OpenMM plugin is unavailable: {exc}"


def model_sha1(path) -> str:
    """The content hash the plugin checks when a Context loads the model (c10::sha1 on the C++ side)."""
    return file_hash(path, "sha1")


def create_native_force(loaded, region, device: str = "cpu", name: Optional[str] = None):
    """An ``openmm.Force`` (an ``MLPotForce`` of the plugin) for a model loaded by ``load_for_openmm`` and an
    :class:`~mlpot_plugins.openmm.ml_region.MLRegion`. ``device`` is the torch device of the Reference and CPU
    platforms' kernel (the CUDA platform runs the model on the context's GPU)."""
    import openmm

    from ..model_file import resolve_device

    if loaded.kind != "atomistic":
        raise ValueError(f"{loaded.path}: a {loaded.kind!r} model cannot be an OpenMM force; use an atomistic model")
    if loaded.metadata.get("torch_libraries"):
        raise ValueError(f"{loaded.path}: the model needs TorchScript extension libraries "
                         f"({', '.join(e['python_module'] for e in loaded.metadata['torch_libraries'])}), which the "
                         "native OpenMM plugin does not load; use create_force(..., backend='python')")
    resolve_device(device, available=False)
    path = Path(loaded.path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} no longer exists, and the native OpenMM force loads it from "
                                "disk in each Context; put it back or export the model again")
    load_plugin()
    n = region.n_ml
    particles = np.arange(n) if region.indices is None else np.asarray(region.indices)
    meta = loaded.metadata
    root = ET.Element("Force", {
        "type": "MLPotForce", "version": str(XML_VERSION), "forceGroup": "0",
        "name": name or f"mlpot:{meta.get('name') or path.stem}", "modelPath": str(path),
        "modelSha1": model_sha1(path), "periodic": str(int(region.periodic)),
        "boxKnownDefault": str(int(region.box_known_default)), "precision": meta["dtype"], "device": str(device),
        "cutoff": repr(float(meta["cutoff"])), "ensembleSize": str(int(meta["ensemble_size"])),
        "numSpecies": str(len(meta["species"])), "tag": uuid.uuid4().hex})
    ET.SubElement(root, "Particles").text = "@PARTICLES@"  # filled as plain text: 10x faster for 1e5 atoms
    rows = "".join(f'<Particle index="{p}" type="{t}"/>' for p, t in zip(particles.tolist(),
                                                                         np.asarray(region.types).tolist()))
    head, tail = ET.tostring(root, encoding="unicode").rsplit("@PARTICLES@", 1)  # the last one: never a path's
    return openmm.XmlSerializer.deserialize(head + rows + tail)


def native_force_info(force) -> Optional[dict]:
    """The fields of an MLPotForce (from its XML form), or None for any other force."""
    import openmm

    root = ET.fromstring(openmm.XmlSerializer.serialize(force))
    if root.get("type") != "MLPotForce":
        return None
    info = dict(root.attrib)
    info["particles"] = [int(p.get("index")) for p in root.iter("Particle")]
    info["types"] = [int(p.get("type")) for p in root.iter("Particle")]
    return info


def _context_address(context) -> int:
    return int(context.this)


def request_uncertainty(tag: str, context, mode: str = "next") -> None:
    """Ask the MLPotForce with ``tag`` (see :func:`native_force_info`) to compute its committee statistics in
    ``context``'s next evaluation ("next"), in every one ("always"), or no more ("off")."""
    if mode not in UNCERTAINTY_MODES:
        raise ValueError(f"mode {mode!r} is not one of {list(UNCERTAINTY_MODES)}")
    load_plugin().mlpot_openmm_request_uncertainty(tag.encode(), _context_address(context), UNCERTAINTY_MODES[mode])


def request_uncertainty_at(tag: str, context, step: int) -> None:
    """Ask the MLPotForce with ``tag`` to compute its committee statistics in the evaluation at ``context``'s step
    count ``step`` (a State asked for at that step, or the integrator's next step: the Reference/CPU kernel reuses
    its last evaluation for identical positions, so a report step costs one model call)."""
    load_plugin().mlpot_openmm_request_uncertainty_at(tag.encode(), _context_address(context), int(step))


def read_uncertainty(tag: str, context, n_ml: int) -> Optional[dict]:
    """The committee statistics of the last evaluation that computed them (model units: ``forces_std`` [n_ml]
    eV/A, ``energies_std`` [n_ml] eV, ``energy_std`` eV, ``evaluation`` its number, ``step`` the Context's step count
    then), or None if none did."""
    fs, es, e = np.zeros(n_ml), np.zeros(n_ml), ctypes.c_double(0.0)
    dbl = ctypes.POINTER(ctypes.c_double)
    got = load_plugin().mlpot_openmm_get_uncertainty(tag.encode(), _context_address(context), int(n_ml),
                                                     fs.ctypes.data_as(dbl), es.ctypes.data_as(dbl), ctypes.byref(e))
    if got == 0:
        return None
    if got < 0:
        raise ValueError(f"the force's ML region has {-got} atoms, not {n_ml}")
    step = int(load_plugin().mlpot_openmm_uncertainty_step(tag.encode(), _context_address(context)))
    return {"forces_std": fs, "energies_std": es, "energy_std": e.value, "evaluation": int(got), "step": step}
