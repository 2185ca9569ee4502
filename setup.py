"""Build script beside pyproject.toml (which holds all metadata). It does two things TOML cannot:

* ships the repository's top-level ``lammps/`` and ``openmm/`` folders (the C++ sources and headers of the
  LAMMPS and OpenMM plugins, compiled on first use) as the data-only packages ``mlpot_plugins._lammps_src``
  and ``mlpot_plugins._openmm_src``, so wheels and sdists carry them while the folders stay where they are;
* stops a setuptools older than 77 (which cannot read the PEP 639 ``license = "MIT"`` string) with a
  message naming the version needed, instead of a schema-validation error.
"""
import setuptools
from setuptools import find_packages, setup

SETUPTOOLS_NEEDED = 77
if int(setuptools.__version__.split(".")[0]) < SETUPTOOLS_NEEDED:
    raise SystemExit(
        f"mlpot_plugins needs setuptools>={SETUPTOOLS_NEEDED} to build (pyproject.toml declares its license "
        f"as a PEP 639 string); this environment has setuptools {setuptools.__version__}. Build with build "
        f"isolation (plain `pip install .` or `python -m build`, which fetch it), or upgrade: "
        f"pip install 'setuptools>={SETUPTOOLS_NEEDED}'")

setup(packages=find_packages(include=["mlpot_plugins*"]) + ["mlpot_plugins._lammps_src", "mlpot_plugins._openmm_src"],
      package_dir={"mlpot_plugins._lammps_src": "lammps", "mlpot_plugins._openmm_src": "openmm"})
