#!/usr/bin/env python
"""Reliability fuzz of every mlpot_plugins entry point (issue 10): a measurement, not a test.

Runs ~140 bad inputs and faults, each as a real subprocess with a timeout, against the checkout given by
``--tree DIR`` (PYTHONPATH=DIR, the shared venv's ``python``/``mlpot``/``lmp``/``mpiexec`` first on PATH,
a per-tree MLPOT_CACHE_DIR under /tmp), and classifies each outcome:

  crash   killed by a signal / exit >= 128 / "Segmentation fault" / hang (timeout)
  silent  exit 0 although the input was bad, or a wrong / lost result (each case says how it detects that)
  raw     a Python traceback, a message that does not contain the case's words (problem + fix),
          a message starting with forbidden boilerplate, a refusal of a valid input, or an error only
          after the work was done
  clear   non-zero exit (or LAMMPS ERROR:) whose message contains all the case's words
  ok      the correct behaviour for cases where success (or a warning) is right

Expectations describe what a *user* should get (the problem and how to fix it named), not what any
version of the code does. Usage:

  python tools/fuzz_entry_points.py --tree /work/main --json out.json [--only REGEX] [--jobs 2]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path

VENV_BIN = Path(os.environ.get("MLPOT_FUZZ_VENV", "/work/main/.venv")) / "bin"
CLASSES = ["crash", "silent", "raw", "clear", "ok"]

# ---------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------
A_FCC = 3.7


def cuau_positions(n=2, a=A_FCC, coincident=False, flat=False):
    """32 atoms of a slightly distorted fcc Cu/Au cell (pure python, deterministic)."""
    basis = [(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    pos, typ = [], []
    k = 0
    for i in range(n):
        for j in range(n):
            for l in range(n):
                for b in basis:
                    d = 0.07 * math.sin(1.7 * k + 0.3), 0.07 * math.cos(2.3 * k), 0.07 * math.sin(0.9 * k + 1)
                    pos.append([(i + b[0]) * a + d[0], (j + b[1]) * a + d[1], (l + b[2]) * a + d[2]])
                    typ.append(2 if k % 3 == 0 else 1)
                    k += 1
    if coincident:
        pos[1] = list(pos[0])
    return pos, typ, n * a


def write_lammps_data(path, coincident=False):
    pos, typ, L = cuau_positions(coincident=coincident)
    lines = ["fuzz system", "", f"{len(pos)} atoms", "2 atom types", "",
             f"0 {L} xlo xhi", f"0 {L} ylo yhi", f"0 {L} zlo zhi", "", "Masses", "", "1 63.546", "2 196.96657",
             "", "Atoms # atomic", ""]
    for i, (x, t) in enumerate(zip(pos, typ)):
        lines.append(f"{i + 1} {t} {x[0]:.10f} {x[1]:.10f} {x[2]:.10f}")
    Path(path).write_text("\n".join(lines) + "\n")


def rewrite_zip(src: Path, dst: Path, meta_fn=None, drop_meta=False):
    """Copy a TorchScript archive, rewriting (meta_fn(dict) -> dict or bytes) or dropping metadata.json."""
    zin = zipfile.ZipFile(src)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("extra/metadata.json"):
                if drop_meta:
                    continue
                if meta_fn is not None:
                    new = meta_fn(json.loads(data))
                    data = new if isinstance(new, bytes) else json.dumps(new, indent=1).encode()
            zout.writestr(item.filename, data)


def meta_set(**kv):
    def fn(m):
        m = dict(m)
        for k, v in kv.items():
            if v is DELETE:
                m.pop(k, None)
            else:
                m[k] = v
        return m
    return fn


DELETE = object()

SETUP_PY = r'''
import os, sys, json
from pathlib import Path
import numpy as np, yaml, ase.io
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
F = Path(sys.argv[1])
def tiny(path, n, seed, symbols=None):
    rng = np.random.default_rng(seed); frames = []
    for _ in range(n):
        a = bulk("Cu", "fcc", a=3.61 * rng.uniform(0.98, 1.02), cubic=True)
        if symbols: a.symbols[[0]] = symbols
        a.positions += rng.normal(0.0, 0.1, a.positions.shape)
        a.calc = EMT()
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces(), stress=a.get_stress())
        frames.append(a)
    ase.io.write(path, frames, format="extxyz")
tiny(F / "train.extxyz", 6, 0); tiny(F / "test.extxyz", 3, 1); tiny(F / "train_au.extxyz", 4, 2, "Au")
model = dict(species=["Cu"], cutoff=3.0, lmax=2, n_layers=2, channels=4, n_basis=6, readout_hidden=4,
             ensemble_size=2, dtype="float64")
training = dict(epochs=2, lr=1e-2, batch_size=2, val_fraction=0.34, stress_weight=1.0, threads=1)
def cfg(name, run_dir, **over):
    c = {"data": {"train": str(F / "train.extxyz"), "test": str(F / "test.extxyz")}, "model": dict(model),
         "training": dict(training), "output": {"dir": str(run_dir), "name": "tiny"}}
    for sec, val in over.items():
        c[sec].update(val)
    (F / name).write_text(yaml.safe_dump(c))
cfg("train_ok.yaml", F / "run_ok")
json.dump({"model": model, "training": training}, open(F / "train_parts.json", "w"))
'''


def make_fixtures(F: Path, tree: Path, env: dict, log) -> dict:
    """Everything the cases read, made once per fuzz run."""
    F.mkdir(parents=True, exist_ok=True)
    pre = tree / "mlpot_plugins" / "pretrained"
    shutil.copy(pre / "morse-cuau.pt", F / "morse.pt")
    shutil.copy(pre / "morse-cuau-committee.pt", F / "committee.pt")
    shutil.copy(pre / "holstein-d4.pt", F / "lattice.pt")
    variants = {
        "meta_cutoff.pt": ("morse.pt", meta_set(cutoff=3.0, interaction_range=3.0)),
        "meta_cutoff_big.pt": ("morse.pt", meta_set(cutoff=9.0, interaction_range=9.0)),
        "meta_ens_small.pt": ("committee.pt", meta_set(ensemble_size=2)),
        "meta_ens_big.pt": ("committee.pt", meta_set(ensemble_size=8)),
        "meta_ens_one.pt": ("committee.pt", meta_set(ensemble_size=1)),
        "meta_species1.pt": ("morse.pt", meta_set(species=["Cu"])),
        "meta_species3.pt": ("morse.pt", meta_set(species=["Cu", "Au", "Ag"])),
        "meta_dtype.pt": ("morse.pt", meta_set(dtype="float32")),
        "meta_dtype_bad.pt": ("morse.pt", meta_set(dtype="float16")),
        "meta_version.pt": ("morse.pt", meta_set(format_version=99)),
        "meta_kind.pt": ("morse.pt", meta_set(kind="lattice")),
        "meta_units.pt": ("morse.pt", meta_set(length_unit="bohr")),
        "meta_nocutoff.pt": ("morse.pt", meta_set(cutoff=DELETE)),
        "meta_negcutoff.pt": ("morse.pt", meta_set(cutoff=-1.0, interaction_range=-1.0)),
        "meta_species_str.pt": ("morse.pt", meta_set(species="CuAu")),
        "meta_badjson.pt": ("morse.pt", lambda m: b'{"cutoff": 6.0, "species": ["Cu", '),
        "meta_notobj.pt": ("morse.pt", lambda m: b'[1, 2, 3]'),
    }
    for name, (src, fn) in variants.items():
        rewrite_zip(F / src, F / name, fn)
    rewrite_zip(F / "morse.pt", F / "nometa.pt", drop_meta=True)
    data = (F / "morse.pt").read_bytes()
    (F / "truncated.pt").write_bytes(data[: len(data) // 2])
    (F / "truncated_tail.pt").write_bytes(data[:-200])
    (F / "junk.pt").write_bytes(b"this is not a model\n" * 20)
    (F / "empty.pt").write_bytes(b"")
    (F / "dir.pt").mkdir(exist_ok=True)
    (F / "a_dir").mkdir(exist_ok=True)
    (F / "modèle_ü").mkdir(exist_ok=True)
    shutil.copy(F / "morse.pt", F / "modèle_ü" / "modèle.pt")
    (F / "with space").mkdir(exist_ok=True)
    shutil.copy(F / "morse.pt", F / "with space" / "m.pt")
    (F / "a_file").write_text("I am a file, not a folder\n")
    write_lammps_data(F / "cuau.data")
    write_lammps_data(F / "coincident.data", coincident=True)
    (F / "bad.yaml").write_text("data: {train: [unclosed\nmodel: : :\n")
    (F / "list.yaml").write_text("- 1\n- 2\n")
    (F / "junk.extxyz").write_text("3\nnot an extxyz comment line =\nCu 0 0 x\n")
    (F / "junk_ckpt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (F / "observables_junk.json").write_text("{not json")
    (F / "obs_dir").mkdir(exist_ok=True)
    (F / "obs_short").mkdir(exist_ok=True)
    (F / "obs_short" / "observables.json").write_text(json.dumps(
        {"t": [0.0], "s_pi_pi": [0.0], "s_pi_pi_per_sample": [[0.0]], "domain_length": [1.0],
         "params": {}, "L": 8, "batch": 1, "seed": 0}))
    (F / "h_out_file").write_text("a file where a folder is expected\n")

    # slow fixtures in parallel: plugin build, training data + a checkpoint, Holstein data
    jobs = {
        "plugin": ["mlpot", "lammps-plugin"],
        "setup_py": ["python", "-c", SETUP_PY, str(F)],
        "hdata": ["mlpot", "holstein", "generate", "--out", str(F / "hdata.pt"), "--L", "8", "--quench", "2",
                  "--domains", "2", "--steps", "8", "--domain-steps", "8", "--stride", "4", "--param", "kT=0.2"],
    }
    procs = {k: subprocess.Popen(v, cwd=F, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, v in jobs.items()}
    out = {}
    for k, p in procs.items():
        so, se = p.communicate(timeout=900)
        if p.returncode:
            log(f"fixture {k} failed ({p.returncode}):\n{so[-2000:]}\n{se[-3000:]}")
        out[k] = so.strip().splitlines()[-1] if so.strip() else ""
    # a training checkpoint for `mlpot export` and resume cases
    p = subprocess.run(["mlpot", "train", "--no-progress", str(F / "train_ok.yaml")], cwd=F, env=env,
                       capture_output=True, text=True, timeout=600)
    if p.returncode:
        log(f"fixture train failed:\n{p.stderr[-3000:]}")
    plugin = Path(out.get("plugin", ""))
    return {"plugin": str(plugin)}


# ---------------------------------------------------------------------------------------------------------
# case table
# ---------------------------------------------------------------------------------------------------------
CASES: list = []


def case(id, entry, expect, words=(), forbid=(), timeout=90, **kw):
    """expect: 'error' | 'ok' | 'ok_or_error' | 'warn_or_error'.  words: regexes that must ALL be in the
    message (problem and fix); forbid: regexes that make the message misleading."""
    assert expect in ("error", "ok", "ok_or_error", "warn_or_error")
    assert not any(c["id"] == id for c in CASES), id
    CASES.append(dict(id=id, entry=entry, expect=expect, words=list(words), forbid=list(forbid),
                      timeout=timeout, **kw))


# -- helpers for the checks ---------------------------------------------------------------------------
def result_of(ctx):
    for line in ctx["stdout"].splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return None


def finite_result(ctx):
    r = result_of(ctx)
    if r is None:
        return "no RESULT line"
    vals = r if isinstance(r, list) else list(r.values()) if isinstance(r, dict) else [r]
    flat = []
    for v in vals:
        flat += v if isinstance(v, list) else [v]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in flat):
        return f"non-finite result {str(r)[:80]}"
    return None


def lmp_finite(ctx):
    """LAMMPS thermo lines: every number finite."""
    text = ctx["stdout"]
    if re.search(r"(?<![A-Za-z])(-?nan|-?inf)(?![A-Za-z])", text, re.I):
        return "nan/inf in LAMMPS output"
    return None


# -- common python prelude for API cases ------------------------------------------------------------------
PRELUDE = r'''
import os, sys, json, math, shutil
from pathlib import Path
F = Path(os.environ["FUZZ_FIX"]); W = Path.cwd()
def cuau(n=2, rattle=0.05, seed=3, pbc=True):
    from ase.build import bulk
    a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((n, n, n))
    a.symbols[[0, 3, 6, 9]] = "Au"; a.rattle(rattle, seed=seed); a.pbc = pbc
    if not pbc: a.cell = [[0, 0, 0]] * 3
    return a
def ase_energy(model, atoms, **kw):
    from mlpot_plugins.ase import MLPotCalculator
    atoms.calc = MLPotCalculator(str(model), **kw)
    return atoms.get_potential_energy()
def omm_system(atoms, box=True):
    import torch, openmm, openmm.unit as u
    s = openmm.System()
    for m in atoms.get_masses(): s.addParticle(float(m))
    if box and atoms.pbc.any():
        c = atoms.cell.array / 10.0
        s.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*r) for r in c])
    return s
def omm_energy(system, atoms):
    import openmm, openmm.unit as u
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(atoms.positions / 10.0)
    st = ctx.getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    return e, f
def result(x):
    print("RESULT " + json.dumps(x)); sys.stdout.flush()
'''


def wrap_py(body):
    return PRELUDE + "try:\n" + textwrap.indent(textwrap.dedent(body), "    ") + textwrap.dedent(r'''
except BaseException as exc:
    import traceback
    if isinstance(exc, SystemExit):
        raise
    msg = str(exc)
    sys.stderr.write(f"EXC {type(exc).__name__}: {msg}\n")
    sys.exit(1)
''')


# ================================ CLI: info / models / demo / export / data ============================
case("cli-noargs", "mlpot", "error", ["usage|command"], cli=["mlpot"])
case("cli-unknown-cmd", "mlpot", "error", ["bogus", "choose|invalid"], cli=["mlpot", "bogus"])
case("info-ok", "mlpot info", "ok", cli=["mlpot", "info", "{F}/committee.pt"])
case("info-missing", "mlpot info", "error", ["nowhere.pt", "does not exist|not found"],
     cli=["mlpot", "info", "{F}/nowhere.pt"])
case("info-dir", "mlpot info", "error", ["director"], forbid=["does not exist"], cli=["mlpot", "info", "{F}/dir.pt"])
case("info-junk", "mlpot info", "error", ["junk.pt", "not a|corrupt|invalid"], cli=["mlpot", "info", "{F}/junk.pt"])
case("info-empty", "mlpot info", "error", ["empty.pt", "empty|not a|corrupt"], cli=["mlpot", "info", "{F}/empty.pt"])
case("info-truncated", "mlpot info", "error", ["truncated_tail", "corrupt|truncat|not a|incomplete"],
     cli=["mlpot", "info", "{F}/truncated_tail.pt"])
case("info-nometa", "mlpot info", "error", ["metadata"], cli=["mlpot", "info", "{F}/nometa.pt"])
case("info-badjson", "mlpot info", "error", ["metadata", "export|json"], cli=["mlpot", "info", "{F}/meta_badjson.pt"])
case("info-notobj", "mlpot info", "error", ["metadata"], cli=["mlpot", "info", "{F}/meta_notobj.pt"])
case("info-meta-cutoff", "mlpot info", "error", ["cutoff"], cli=["mlpot", "info", "{F}/meta_cutoff.pt"])
case("info-meta-ens", "mlpot info", "error", ["ensemble"], cli=["mlpot", "info", "{F}/meta_ens_small.pt"])
case("info-meta-species", "mlpot info", "error", ["species"], cli=["mlpot", "info", "{F}/meta_species1.pt"])
case("info-meta-dtype", "mlpot info", "error", ["dtype|float"], cli=["mlpot", "info", "{F}/meta_dtype.pt"])
case("info-meta-version", "mlpot info", "error", ["version"], cli=["mlpot", "info", "{F}/meta_version.pt"])
case("info-meta-nocutoff", "mlpot info", "error", ["cutoff"], cli=["mlpot", "info", "{F}/meta_nocutoff.pt"])
case("info-json-junk", "mlpot info --json", "error", ["junk.pt"], cli=["mlpot", "info", "--json", "{F}/junk.pt"])
case("info-unknown-name", "mlpot info", "error", ["no-such-model", "mlpot models|shipped"],
     cli=["mlpot", "info", "no-such-model"])
case("models-ok", "mlpot models", "ok", cli=["mlpot", "models"],
     check=lambda c: None if "morse-cuau" in c["stdout"] else "shipped models not listed")
case("demo-bad-stage", "mlpot demo", "error", ["bogus", "stage"], cli=["mlpot", "demo", "--stage", "bogus",
                                                                      "--out", "{W}/d"])
case("demo-out-file", "mlpot demo", "error", ["a_file|not a director|exists"],
     cli=["mlpot", "demo", "--quick", "--stage", "ase", "--out", "{F}/a_file"])

case("export-missing", "mlpot export", "error", ["nope.pt", "does not exist|not found"],
     cli=["mlpot", "export", "{F}/nope.pt", "{W}/out.pt"])
case("export-junk", "mlpot export", "error", ["junk_ckpt.pt", "checkpoint"], cli=["mlpot", "export",
                                                                                  "{F}/junk_ckpt.pt", "{W}/o.pt"])
case("export-model-not-ckpt", "mlpot export", "error", ["checkpoint"],
     cli=["mlpot", "export", "{F}/committee.pt", "{W}/o.pt"])
case("export-dir", "mlpot export", "error", ["director|checkpoint"], cli=["mlpot", "export", "{F}/dir.pt",
                                                                          "{W}/o.pt"])
case("export-ok-float32", "mlpot export", "ok", cli=["mlpot", "export", "--dtype", "float32",
                                                     "{F}/run_ok/best.pt", "{W}/o.pt"],
     check=lambda c: None if (Path(c["W"]) / "o.pt").is_file() else "no output file")
case("export-out-missing-dir", "mlpot export", "ok_or_error", ["no_dir|director|exist"],
     cli=["mlpot", "export", "{F}/run_ok/best.pt", "{W}/no_dir/sub/o.pt"],
     check=lambda c: None if (Path(c["W"]) / "no_dir/sub/o.pt").is_file() else "exit 0 but no file")
case("data-bad-system", "mlpot data emt", "error", ["Xx|system"], cli=["mlpot", "data", "emt", "--system", "Xx",
                                                                         "--out", "{W}/d.extxyz"])
case("data-bad-set", "mlpot data emt", "error", ["bogus|set"], cli=["mlpot", "data", "emt", "--set", "bogus",
                                                                    "--out", "{W}/d.extxyz"])
case("data-out-is-dir", "mlpot data emt", "error", ["a_dir|director"], fast=20,
     cli=["mlpot", "data", "emt", "--out", "{F}/a_dir"], timeout=120)

# ================================ CLI: mlpot train ======================================================
TRAIN_CFG = r'''
import json, yaml, sys
from pathlib import Path
F = Path(sys.argv[1]); W = Path(sys.argv[2]); over = json.loads(sys.argv[3])
parts = json.load(open(F / "train_parts.json"))
c = {"data": {"train": str(F / "train.extxyz"), "test": str(F / "test.extxyz")}, "model": parts["model"],
     "training": parts["training"], "output": {"dir": str(W / "run"), "name": "tiny"}}
for sec, val in over.items():
    if val is None: c.pop(sec, None)
    elif isinstance(val, dict) and isinstance(c.get(sec), dict): c[sec].update(val)
    else: c[sec] = val
(W / "cfg.yaml").write_text(yaml.safe_dump(c))
'''


def train_case(id, expect, words, over, forbid=(), timeout=120, resume=False, **kw):
    case(id, "mlpot train", expect, words, forbid, timeout,
         prep=[["python", "-c", TRAIN_CFG, "{F}", "{W}", json.dumps(over)]],
         cli=["mlpot", "train", "--no-progress"] + (["--resume"] if resume else []) + ["{W}/cfg.yaml"], **kw)


case("train-missing-config", "mlpot train", "error", ["nope.yaml", "does not exist|not found"],
     cli=["mlpot", "train", "{F}/nope.yaml"])
case("train-bad-yaml", "mlpot train", "error", ["bad.yaml", "yaml|pars"], cli=["mlpot", "train", "{F}/bad.yaml"])
case("train-list-yaml", "mlpot train", "error", ["list.yaml", "mapping|section|dict"],
     cli=["mlpot", "train", "{F}/list.yaml"])
case("train-config-dir", "mlpot train", "error", ["a_dir", "director"], cli=["mlpot", "train", "{F}/a_dir"])
train_case("train-unknown-section", "error", ["bogus"], {"bogus": {"x": 1}})
train_case("train-unknown-option", "error", ["lrr"], {"training": {"lrr": 0.1}})
train_case("train-model-not-mapping", "error", ["model", "mapping|dict|section"], {"model": [1, 2]})
train_case("train-epochs-0", "error", ["epochs"], {"training": {"epochs": 0}})
train_case("train-batch-0", "error", ["batch_size"], {"training": {"batch_size": 0}})
train_case("train-lr-neg", "error", ["lr"], {"training": {"lr": -1.0}})
train_case("train-val-fraction", "error", ["val_fraction"], {"training": {"val_fraction": 1.5}})
train_case("train-diverge", "error", ["non-finite|nan|diverg", "lr|learning rate"], {"training": {"lr": 1.0e8, "epochs": 3}},
           timeout=150)
train_case("train-data-missing", "error", ["nowhere.extxyz", "does not exist|not found"],
           {"data": {"train": "/nonexistent/nowhere.extxyz"}})
train_case("train-data-junk", "error", ["junk.extxyz"], {"data": {"train": "__F__/junk.extxyz"}})
train_case("train-species-missing", "error", ["Au", "species"], {"data": {"train": "__F__/train_au.extxyz"}})
train_case("train-cutoff-neg", "error", ["cutoff"], {"model": {"cutoff": -2.0}})
train_case("train-ensemble-0", "error", ["ensemble_size"], {"model": {"ensemble_size": 0}})
train_case("train-out-is-file", "error", ["a_file|director|exists"], {"output": {"dir": "__F__/a_file/run"}},
           fast=20)
train_case("train-resume-nothing", "error", ["last.pt", "resume|not exist|no checkpoint"], {}, resume=True)
case("train-sigterm-checkpoint", "mlpot train", "ok", timeout=240,
     prep=[["python", "-c", TRAIN_CFG, "{F}", "{W}", json.dumps({"training": {"epochs": 400}})]],
     cli=["mlpot", "train", "--no-progress", "{W}/cfg.yaml"], send_signal=(signal.SIGTERM, r'"epoch"', 2.0),
     check=lambda c: None if (Path(c["W"]) / "run/last.pt").is_file() else "no run/last.pt after SIGTERM")

# ================================ CLI: mlpot holstein ==================================================
HRUN = ["mlpot", "holstein", "run", "--model", "holstein-d4", "--threads", "1"]


def hrun(id, expect, words, args, forbid=(), timeout=90, **kw):
    case(id, "mlpot holstein run", expect, words, forbid, timeout, cli=HRUN + args, **kw)


def obs(c, name="out"):
    p = Path(c["W"]) / name / "observables.json"
    return json.loads(p.read_text()) if p.is_file() else None


def check_blowup(c):
    o = obs(c)
    if o is None:
        return "no observables.json"
    vals = o["s_pi_pi"] + o["domain_length"]
    if not all(math.isfinite(v) and abs(v) < 1e6 for v in vals):
        return f"non-finite/runaway observables accepted (S={o['s_pi_pi'][-1]:.3g})"
    return None


hrun("hrun-ok", "ok", [], ["--L", "8", "--steps", "10", "--every", "5", "--out", "{W}/out"],
     check=lambda c: None if obs(c) and all(math.isfinite(v) for v in obs(c)["s_pi_pi"]) else "bad observables")
hrun("hrun-L-neg", "error", [r"--L|\bL\b", "positive|>= ?\d|at least|even"], ["--L", "-4", "--out", "{W}/out"])
hrun("hrun-L-0", "error", [r"--L|\bL\b", "positive|>= ?\d|at least|even"], ["--L", "0", "--out", "{W}/out"])
hrun("hrun-L-odd-ml", "error", ["odd|even"], ["--L", "7", "--steps", "2", "--out", "{W}/out"])
hrun("hrun-L-odd-ed", "error", ["odd|even"], ["--L", "5", "--steps", "2", "--engine", "ed", "--out", "{W}/out"])
hrun("hrun-L-odd-kpm", "error", ["odd|even"], ["--L", "7", "--steps", "2", "--engine", "kpm", "--out", "{W}/out"])
hrun("hrun-steps-neg", "error", ["steps"], ["--L", "8", "--steps", "-1", "--out", "{W}/out"])
hrun("hrun-batch-0", "error", ["batch"], ["--L", "8", "--steps", "2", "--batch", "0", "--out", "{W}/out"])
hrun("hrun-batch-neg", "error", ["batch"], ["--L", "8", "--steps", "2", "--batch", "-3", "--out", "{W}/out"])
hrun("hrun-threads-0", "error", ["threads"], ["--L", "8", "--steps", "2", "--threads", "0", "--out", "{W}/out"])
hrun("hrun-snapshots-neg", "error", ["snapshots"], ["--L", "8", "--steps", "2", "--snapshots", "-1", "--out",
                                                      "{W}/out"])
hrun("hrun-every-0", "error", ["every"], ["--L", "8", "--steps", "2", "--every", "0", "--out", "{W}/out"])
hrun("hrun-dt-blowup", "error", ["non-finite|diverg|blew|unstable|runaway|nan", "dt"],
     ["--L", "8", "--steps", "300", "--every", "50", "--param", "dt=5", "--out", "{W}/out"], timeout=120,
     check=check_blowup)
hrun("hrun-kT-neg", "error", ["kT"], ["--L", "8", "--steps", "2", "--param", "kT=-1", "--out", "{W}/out"])
hrun("hrun-gamma-neg", "error", ["gamma"], ["--L", "8", "--steps", "2", "--param", "gamma=-0.5", "--out",
                                              "{W}/out"])
hrun("hrun-dt-0", "error", ["dt"], ["--L", "8", "--steps", "2", "--param", "dt=0", "--out", "{W}/out"])
hrun("hrun-param-unknown", "error", ["bogus"], ["--L", "8", "--steps", "2", "--param", "bogus=1", "--out",
                                                 "{W}/out"])
hrun("hrun-param-nan", "error", ["kT", "nan|finite|number"], ["--L", "8", "--steps", "2", "--param", "kT=nan",
                                                               "--out", "{W}/out"])
hrun("hrun-param-mismatch-g", "warn_or_error", [r"g ?= ?3\.5", "warn|trained|differ"],
     ["--L", "8", "--steps", "2", "--param", "g=1.0", "--out", "{W}/out"])
hrun("hrun-param-mismatch-kT", "warn_or_error", [r"kT ?= ?0\.1\b", "warn|trained|differ"],
     ["--L", "8", "--steps", "2", "--param", "kT=0.5", "--out", "{W}/out"])
case("hrun-model-missing", "mlpot holstein run", "error", ["nope.pt", "does not exist|not found"],
     cli=["mlpot", "holstein", "run", "--model", "{F}/nope.pt", "--L", "8", "--steps", "2", "--out", "{W}/out"])
case("hrun-model-atomistic", "mlpot holstein run", "error", ["lattice|atomistic"],
     cli=["mlpot", "holstein", "run", "--model", "{F}/morse.pt", "--L", "8", "--steps", "2", "--out", "{W}/out"])
case("hrun-model-junk", "mlpot holstein run", "error", ["junk.pt"],
     cli=["mlpot", "holstein", "run", "--model", "{F}/junk.pt", "--L", "8", "--steps", "2", "--out", "{W}/out"])
hrun("hrun-threshold-neg", "error", ["threshold"], ["--engine", "ml+fallback", "--threshold", "-1", "--L", "8",
                                                     "--steps", "2", "--out", "{W}/out"])
hrun("hrun-restart-no-ckpt-arg", "error", ["--checkpoint"], ["--restart", "--L", "8", "--steps", "2", "--out",
                                                               "{W}/out"])
hrun("hrun-restart-missing-ckpt", "error", ["nope.ckpt", "not exist|not found|missing"],
     ["--restart", "--checkpoint", "{W}/nope.ckpt", "--L", "8", "--steps", "2", "--out", "{W}/out"])
hrun("hrun-restart-junk-ckpt", "error", ["junk_ckpt.pt", "checkpoint"],
     ["--restart", "--checkpoint", "{F}/junk_ckpt.pt", "--L", "8", "--steps", "2", "--out", "{W}/out"])
hrun("hrun-out-is-file", "error", ["h_out_file|director|exists"], ["--L", "8", "--steps", "2", "--out",
                                                                     "{F}/h_out_file"], fast=25)
hrun("hrun-ckpt-missing-dir", "ok_or_error", ["nodir|director|exist"],
     ["--L", "8", "--steps", "5", "--checkpoint", "{W}/nodir/sub/ck.pt", "--out", "{W}/out"], fast=25,
     check=lambda c: None if (Path(c["W"]) / "nodir/sub/ck.pt").is_file() else "exit 0 without the checkpoint")


def check_restart_append(c):
    o = obs(c)
    if o is None:
        return "no observables.json after restart"
    if not o["t"] or o["t"][0] > 0:
        return f"observables of the first run lost (t starts at {o['t'][0] if o['t'] else None})"
    return None


FIRST = HRUN + ["--L", "8", "--steps", "10", "--every", "5", "--checkpoint", "{W}/ck.pt", "--out", "{W}/out"]
hrun("hrun-restart-append", "ok_or_error", ["out|observables", "exist|overwrite|append"],
     ["--L", "8", "--steps", "10", "--every", "5", "--checkpoint", "{W}/ck.pt", "--restart", "--out", "{W}/out"],
     prep=[FIRST], check=check_restart_append, timeout=120)


def check_restart_param(c):
    """The restart with --param kT=5 must either apply it (trajectory differs from a plain restart) or refuse."""
    a, b = obs(c, "out_kT"), obs(c, "out_plain")
    if a is None or b is None:
        return "missing observables"
    if a["s_pi_pi"] == b["s_pi_pi"] and a["params"].get("kT") == 5.0:
        return "override recorded as kT=5 but trajectory identical to a plain restart (ignored)"
    return None


hrun("hrun-restart-param-ignored", "ok_or_error", ["kT", "restart|checkpoint"],
     ["--L", "8", "--steps", "10", "--every", "5", "--checkpoint", "{W}/ck.pt", "--restart", "--param", "kT=5",
      "--out", "{W}/out_kT"],
     prep=[HRUN + ["--L", "8", "--steps", "10", "--every", "5", "--checkpoint", "{W}/ck.pt", "--out", "{W}/out0"],
           ["cp", "{W}/ck.pt", "{W}/ck_plain.pt"],
           HRUN + ["--L", "8", "--steps", "10", "--every", "5", "--checkpoint", "{W}/ck_plain.pt", "--restart",
                   "--out", "{W}/out_plain"]],
     check=check_restart_param, timeout=150)


def check_sigterm_ckpt(c):
    W = Path(c["W"])
    lost = [n for n in ("ck.pt", "out/observables.json") if not (W / n).is_file()]
    return f"lost after the signal: {', '.join(lost)}" if lost else None


for sig, name in [(signal.SIGTERM, "sigterm"), (signal.SIGINT, "sigint")]:
    hrun(f"hrun-{name}-checkpoint", "ok", [], ["--L", "16", "--steps", "200000", "--every", "10", "--checkpoint",
                                               "{W}/ck.pt", "--out", "{W}/out"],
         send_signal=(sig, r"Langevin L=16.*\d+/200000", 4.0), check=check_sigterm_ckpt, timeout=120)

HGEN = ["mlpot", "holstein", "generate", "--L", "8", "--quench", "1", "--domains", "1", "--steps", "8",
        "--domain-steps", "8"]
case("hgen-stride-0", "mlpot holstein generate", "error", ["stride"], cli=HGEN + ["--stride", "0", "--out",
                                                                                  "{W}/d.pt"])
case("hgen-nothing", "mlpot holstein generate", "error", ["quench|domains"],
     cli=["mlpot", "holstein", "generate", "--L", "8", "--quench", "0", "--domains", "0", "--out", "{W}/d.pt"])
case("hgen-L-odd", "mlpot holstein generate", "error", ["odd|even"],
     cli=["mlpot", "holstein", "generate", "--L", "5", "--quench", "1", "--domains", "0", "--steps", "4",
          "--out", "{W}/d.pt"])
case("hgen-steps-0", "mlpot holstein generate", "error", ["steps"],
     cli=["mlpot", "holstein", "generate", "--L", "8", "--quench", "1", "--domains", "0", "--steps", "0",
          "--out", "{W}/d.pt"])
case("hgen-device-cuda", "mlpot holstein generate", "error", ["cuda"], forbid=["Traceback"],
     cli=HGEN + ["--device", "cuda", "--out", "{W}/d.pt"])
case("hgen-out-missing-dir", "mlpot holstein generate", "ok_or_error", ["nodir|director|exist"], fast=25,
     cli=HGEN + ["--out", "{W}/nodir/sub/d.pt"],
     check=lambda c: None if (Path(c["W"]) / "nodir/sub/d.pt").is_file() else "exit 0 without the data file")
case("hgen-dt-blowup", "mlpot holstein generate", "error", ["non-finite|diverg|blew|unstable|nan", "dt"],
     cli=HGEN + ["--steps", "200", "--domains", "0", "--param", "dt=5", "--out", "{W}/d.pt"], timeout=120)

HTRAIN = ["mlpot", "holstein", "train", "--data", "{F}/hdata.pt", "--channels", "4", "--hidden", "8",
          "--ensemble", "2"]
case("htrain-epochs-0", "mlpot holstein train", "error", ["epochs"], cli=HTRAIN + ["--epochs", "0", "--out",
                                                                                   "{W}/m.pt"])
case("htrain-batch-0", "mlpot holstein train", "error", ["batch"], cli=HTRAIN + ["--epochs", "1", "--batch", "0",
                                                                                 "--out", "{W}/m.pt"])
case("htrain-ensemble-0", "mlpot holstein train", "error", ["ensemble"],
     cli=["mlpot", "holstein", "train", "--data", "{F}/hdata.pt", "--ensemble", "0", "--epochs", "1", "--out",
          "{W}/m.pt"])
case("htrain-lr-nan", "mlpot holstein train", "error", ["lr|learning rate"], cli=HTRAIN + ["--epochs", "1", "--lr", "nan",
                                                                             "--out", "{W}/m.pt"])
case("htrain-out-missing-dir", "mlpot holstein train", "ok_or_error", ["nodir|director|exist"], fast=25,
     cli=HTRAIN + ["--epochs", "40", "--out", "{W}/nodir/x.pt"], timeout=150,
     check=lambda c: None if (Path(c["W"]) / "nodir/x.pt").is_file() else "exit 0 without the model")
case("htrain-data-missing", "mlpot holstein train", "error", ["nope.pt", "not exist|not found"],
     cli=["mlpot", "holstein", "train", "--data", "{F}/nope.pt", "--out", "{W}/m.pt"])
case("htrain-data-junk", "mlpot holstein train", "error", ["junk_ckpt.pt", "data|corrupt"],
     cli=["mlpot", "holstein", "train", "--data", "{F}/junk_ckpt.pt", "--out", "{W}/m.pt"])
case("htrain-data-is-model", "mlpot holstein train", "error", ["lattice.pt", "data|generate"],
     cli=["mlpot", "holstein", "train", "--data", "{F}/lattice.pt", "--out", "{W}/m.pt"])
case("htrain-device-cuda", "mlpot holstein train", "error", ["cuda"],
     cli=HTRAIN + ["--epochs", "1", "--device", "cuda", "--out", "{W}/m.pt"])
case("htrain-diverge", "mlpot holstein train", "error", ["non-finite|nan|diverg", "lr|learning rate"],
     cli=HTRAIN + ["--epochs", "3", "--lr", "1e8", "--out", "{W}/m.pt"], timeout=150)
case("hana-missing", "mlpot holstein analyze", "error", ["nowhere", "not exist|not found"],
     cli=["mlpot", "holstein", "analyze", "{W}/nowhere"])
case("hana-junk", "mlpot holstein analyze", "error", ["observables_junk.json", "json|corrupt|pars"],
     cli=["mlpot", "holstein", "analyze", "{F}/observables_junk.json"])
case("hana-dir-empty", "mlpot holstein analyze", "error", ["observables.json"],
     cli=["mlpot", "holstein", "analyze", "{F}/obs_dir"])
case("hana-too-short", "mlpot holstein analyze", "error", ["points|too few|short|longer"],
     cli=["mlpot", "holstein", "analyze", "{F}/obs_short"])
case("hana-tmin-gt-tmax", "mlpot holstein analyze", "error", ["t-min|t_min|t-max"],
     prep=[HRUN + ["--L", "8", "--steps", "20", "--every", "2", "--out", "{W}/out"]],
     cli=["mlpot", "holstein", "analyze", "{W}/out", "--t-min", "5", "--t-max", "1"])

# ================================ plugin build cache ===================================================
case("plugin-cache-under-file", "mlpot lammps-plugin", "error", ["MLPOT_CACHE_DIR"],
     cli=["mlpot", "lammps-plugin"], env={"MLPOT_CACHE_DIR": "{F}/a_file/cache"})
case("plugin-cache-under-file-lmp", "lmp (plugin cache)", "error", ["MLPOT_CACHE_DIR"],
     env={"MLPOT_CACHE_DIR": "{F}/a_file/cache"}, deck=dict())


def check_so_valid(c):
    so = Path(c["W"]) / "cache"
    files = list(so.rglob("mlpotplugin.so"))
    if not files:
        return "no plugin left in the cache"
    if files[0].stat().st_size != Path(c["plugin"]).stat().st_size:
        return "plugin in the cache is still truncated"
    return None


case("plugin-truncated-so-lmp", "lmp (plugin cache)", "ok_or_error", ["mlpotplugin.so|plugin", "rebuild"],
     cache_fault="truncate", env={"MLPOT_CACHE_DIR": "{W}/cache"}, deck=dict(), timeout=300,
     check=lambda c: lmp_finite(c) or check_so_valid(c))
case("plugin-truncated-so-cli", "mlpot lammps-plugin", "ok_or_error", ["mlpotplugin.so|plugin", "rebuild"],
     cache_fault="truncate", env={"MLPOT_CACHE_DIR": "{W}/cache"}, cli=["mlpot", "lammps-plugin"], timeout=300,
     check=check_so_valid)
case("plugin-empty-so-lmp", "lmp (plugin cache)", "ok_or_error", ["mlpotplugin.so|plugin", "rebuild"],
     cache_fault="empty", env={"MLPOT_CACHE_DIR": "{W}/cache"}, deck=dict(), nprocs=2, timeout=300,
     check=lambda c: lmp_finite(c) or check_so_valid(c))

# ================================ LAMMPS decks ===========================================================
# deck fields: model (pair_style args), coeff, units, data, extra (after pair_coeff), pre (before read_data),
# run; nprocs 1-3.  Every ok case also checks that LAMMPS printed no nan/inf.
def lcase(id, expect, words, forbid=(), nprocs=1, check=None, timeout=90, env=None, **deck):
    if expect in ("ok", "ok_or_error") and check is None:
        check = lmp_finite
    case(id, f"lmp{' (mpiexec -n %d)' % nprocs if nprocs > 1 else ''}", expect, words, forbid, timeout,
         deck=deck, nprocs=nprocs, check=check, env=env or {})


lcase("lmp-ok", "ok", [])
lcase("lmp-ok-3ranks-devi", "ok", [], nprocs=3, model="{F}/committee.pt model_devi devi.out every 2",
      extra="velocity all create 300 1\nfix 1 all nve", run="10",
      check=lambda c: lmp_finite(c) or (None if len([l for l in (Path(c["W"]) / "devi.out").read_text().splitlines()
                                                    if l.strip() and not l.startswith("#")]) >= 5
                                        else "model_devi file has too few rows"))
lcase("lmp-missing-model", "error", ["nowhere.pt", "does not exist|not found"], model="{F}/nowhere.pt")
lcase("lmp-missing-model-2r", "error", ["nowhere.pt", "does not exist|not found"], model="{F}/nowhere.pt",
      nprocs=2)
lcase("lmp-junk-model", "error", ["junk.pt", "corrupt|not a"], model="{F}/junk.pt")
lcase("lmp-junk-model-3r", "error", ["junk.pt", "corrupt|not a"], model="{F}/junk.pt", nprocs=3)
lcase("lmp-empty-model", "error", ["empty.pt", "empty|corrupt|not a"], model="{F}/empty.pt")
lcase("lmp-truncated-model", "error", ["truncated", "corrupt|truncat"], model="{F}/truncated.pt")
lcase("lmp-dir-model", "error", ["dir.pt", "director"], forbid=["corrupt"], model="{F}/dir.pt")
lcase("lmp-nometa", "error", ["nometa.pt", "metadata"], model="{F}/nometa.pt")
lcase("lmp-meta-badjson", "error", ["meta_badjson.pt", "metadata"], forbid=[r"json\.exception|parse_error"],
      model="{F}/meta_badjson.pt")
lcase("lmp-meta-notobj", "error", ["meta_notobj.pt", "metadata"], forbid=[r"json\.exception|type_error"],
      model="{F}/meta_notobj.pt")
lcase("lmp-meta-cutoff", "error", ["cutoff"], model="{F}/meta_cutoff.pt")
lcase("lmp-meta-cutoff-big", "error", ["cutoff"], model="{F}/meta_cutoff_big.pt")
lcase("lmp-meta-ens-small", "error", ["ensemble"], model="{F}/meta_ens_small.pt",
      extra="compute u all mlpot/atom\ndump d all custom 1 d.txt id {U}")
lcase("lmp-meta-ens-big", "error", ["ensemble"], model="{F}/meta_ens_big.pt",
      extra="compute u all mlpot/atom\ndump d all custom 1 d.txt id {U}")
lcase("lmp-meta-ens-big-2r", "error", ["ensemble"], model="{F}/meta_ens_big.pt model_devi devi.out every 1",
      nprocs=2)
lcase("lmp-meta-ens-one", "error", ["ensemble"], model="{F}/meta_ens_one.pt")
lcase("lmp-meta-species1", "error", ["species"], model="{F}/meta_species1.pt", coeff="* * Cu Cu")
lcase("lmp-meta-species3", "error", ["species"], model="{F}/meta_species3.pt", coeff="* * Cu Ag")
lcase("lmp-meta-species-str", "error", ["species"], forbid=[r"json\.exception|type_error"],
      model="{F}/meta_species_str.pt")
lcase("lmp-meta-dtype", "error", ["dtype|float"], model="{F}/meta_dtype.pt")
lcase("lmp-meta-dtype-bad", "error", ["dtype|float16"], model="{F}/meta_dtype_bad.pt")
lcase("lmp-meta-version", "error", ["format_version|version"], model="{F}/meta_version.pt")
lcase("lmp-meta-kind", "error", ["lattice|atomistic|kind"], model="{F}/meta_kind.pt")
lcase("lmp-lattice-model", "error", ["lattice|atomistic"], model="{F}/lattice.pt")
lcase("lmp-meta-units", "error", ["unit|angstrom"], model="{F}/meta_units.pt")
lcase("lmp-meta-nocutoff", "error", ["cutoff"], forbid=[r"json\.exception"], model="{F}/meta_nocutoff.pt")
lcase("lmp-meta-negcutoff", "error", ["cutoff"], model="{F}/meta_negcutoff.pt")
lcase("lmp-meta-cutoff-2r", "error", ["cutoff"], model="{F}/meta_cutoff.pt", nprocs=2)
# LAMMPS itself rewrites non-ASCII characters of input lines: running, or an error naming that, are both right
lcase("lmp-nonascii-path", "ok_or_error", ["ASCII"], model="{F}/modèle_ü/modèle.pt")
lcase("lmp-space-path", "ok", [], model='"{F}/with space/m.pt"')
lcase("lmp-unknown-shipped", "error", ["no-such-model", "does not exist|not found|shipped"],
      model="no-such-model")
lcase("lmp-pretrained-dir-nowhere", "warn_or_error", ["MLPOT_PRETRAINED_DIR"], model="morse-cuau",
      env={"MLPOT_PRETRAINED_DIR": "/nonexistent/pretrained"})
lcase("lmp-no-args", "error", ["pair_style mlpot", "model"], model="")
lcase("lmp-unknown-kw", "error", ["bogus"], model="{F}/morse.pt bogus 3")
lcase("lmp-device-cuda", "error", ["cuda"], forbid=["corrupt|not a loadable"], model="{F}/morse.pt device cuda")
lcase("lmp-device-bad", "error", ["tpu|device"], model="{F}/morse.pt device tpu")
lcase("lmp-devi-every-0", "error", ["every|N"], model="{F}/committee.pt model_devi devi.out every 0")
lcase("lmp-devi-noargs", "error", ["model_devi"], model="{F}/committee.pt model_devi")
lcase("lmp-devi-single-model", "error", ["committee|ensemble"], model="{F}/morse.pt model_devi devi.out every 1")
lcase("lmp-devi-unwritable", "error", ["devi.out|model_devi", "open|director|exist"],
      model="{F}/committee.pt model_devi /nonexistent/dir/devi.out every 1")
lcase("lmp-coeff-unknown-el", "error", ["Ag"], coeff="* * Cu Ag")
lcase("lmp-coeff-count", "error", ["pair_coeff", "2|type"], coeff="* * Cu")
lcase("lmp-coeff-not-star", "error", [r"\* \*"], coeff="1 2 Cu Au")
lcase("lmp-coeff-all-null", "error", ["NULL"], coeff="* * NULL NULL")
lcase("lmp-no-coeff", "error", ["pair_coeff|coeff"], coeff="")
lcase("lmp-units-real", "ok", [], units="real")
lcase("lmp-units-lj", "error", ["units", "metal|real"], units="lj")
lcase("lmp-units-si", "error", ["units", "metal|real"], units="si")
lcase("lmp-units-after", "error", ["units"], extra="units real")
lcase("lmp-newton-off", "error", ["newton"], pre="newton off")
lcase("lmp-coincident", "error", ["coincident|overlap|same position|too close|distance"], data="coincident.data")
lcase("lmp-coincident-2r", "error", ["coincident|overlap|same position|too close|distance"],
      data="coincident.data", nprocs=2)
lcase("lmp-compute-no-pair", "error", ["mlpot"], model="{F}/morse.pt", extra="pair_style zero 6.0\npair_coeff * *\n"
      "compute u all mlpot/atom\ndump d all custom 1 d.txt id {U}")
lcase("lmp-compute-single", "error", ["committee|ensemble"], model="{F}/morse.pt",
      extra="compute u all mlpot/atom\ndump d all custom 1 d.txt id {U}")
lcase("lmp-compute-before-run", "error", ["run"], model="{F}/committee.pt",
      extra="compute u all mlpot/atom\ncompute r all reduce max {U}\nvariable m equal c_r\nprint \"${m}\"",
      run="0")
# re-issued pair_style with a bigger committee (heap overflow in the first-K sized buffer)
lcase("lmp-reissue-bigger-K", "ok", [], model="{F}/morse.pt",
      extra="run 0\npair_style mlpot {F}/committee.pt model_devi devi.out every 1\npair_coeff * * Cu Au\n"
      "compute u all mlpot/atom\ndump d all custom 1 d.txt id {U}\nvelocity all create 600 2\nfix 1 all nve",
      run="20")
lcase("lmp-switch-pair-style", "ok", [], model="{F}/committee.pt",
      extra="run 0\npair_style lj/cut 2.5\npair_coeff * * 0.0 1.0\n", run="0")
lcase("lmp-nan-velocity-blowup", "error", ["lost|non-finite|nan|atom"],
      extra="velocity all create 1e9 3\nfix 1 all nve\ntimestep 0.01", run="50")


def check_devi_continued(c):
    """First deck writes devi.out (steps 0..10), restart deck continues (steps 10..20): rows of both."""
    p = Path(c["W"]) / "devi.out"
    if not p.is_file():
        return "no model_devi file"
    steps = [int(l.split()[0]) for l in p.read_text().splitlines() if l.strip() and not l.startswith("#")]
    if not steps or min(steps) > 0:
        return f"rows of the first run lost (steps {steps[:3]}...)"
    return None


lcase("lmp-devi-continued", "ok_or_error", ["devi.out|model_devi", "exist|append|overwrite"],
      model="{F}/committee.pt model_devi devi.out every 2", restart=True, check=check_devi_continued)
lcase("lmp-devi-two-runs", "ok", [], model="{F}/committee.pt model_devi devi.out every 2",
      extra="velocity all create 300 1\nfix 1 all nve\nrun 10", run="10",
      check=lambda c: None if len([l for l in (Path(c["W"]) / "devi.out").read_text().splitlines()
                                   if l.strip() and not l.startswith("#")]) >= 10 else "rows lost between runs")

# ================================ ASE calculator =========================================================
def acase(id, expect, words, body, forbid=(), **kw):
    case(id, "ASE MLPotCalculator", expect, words, forbid, py=body, **kw)


acase("ase-ok", "ok", [], "result(ase_energy(F / 'committee.pt', cuau()))", check=finite_result)
acase("ase-missing", "error", ["nowhere.pt", "does not exist|not found"], "ase_energy(F / 'nowhere.pt', cuau())")
acase("ase-dir", "error", ["dir.pt", "director"], "ase_energy(F / 'dir.pt', cuau())", forbid=["does not exist"])
acase("ase-junk", "error", ["junk.pt", "not a|corrupt"], "ase_energy(F / 'junk.pt', cuau())")
acase("ase-truncated", "error", ["truncated.pt", "corrupt|truncat|not a"], "ase_energy(F / 'truncated.pt', cuau())")
acase("ase-meta-cutoff", "error", ["cutoff"], "result(ase_energy(F / 'meta_cutoff.pt', cuau()))")
acase("ase-meta-ens", "error", ["ensemble"], "result(ase_energy(F / 'meta_ens_big.pt', cuau()))")
acase("ase-meta-species", "error", ["species"], "result(ase_energy(F / 'meta_species3.pt', cuau()))")
acase("ase-meta-dtype", "error", ["dtype|float"], "result(ase_energy(F / 'meta_dtype.pt', cuau()))")
acase("ase-meta-badjson", "error", ["metadata"], "result(ase_energy(F / 'meta_badjson.pt', cuau()))")
acase("ase-lattice-model", "error", ["lattice|atomistic"], "result(ase_energy(F / 'lattice.pt', cuau()))")
acase("ase-cuda", "error", ["cuda|gpu"], "result(ase_energy(F / 'morse.pt', cuau(), device='cuda'))",
      forbid=["not a loadable|Export the model"])
acase("ase-device-bad", "error", ["tpu|device"], "result(ase_energy(F / 'morse.pt', cuau(), device='tpu'))")
acase("ase-unknown-element", "error", ["H", "Cu"],
      "a = cuau(); a.symbols[[1]] = 'H'; result(ase_energy(F / 'morse.pt', a))")
acase("ase-coincident", "error", ["coincident|overlap|same position|too close|distance"],
      "a = cuau(); a.positions[1] = a.positions[0]; result([ase_energy(F / 'morse.pt', a)] + "
      "a.get_forces().ravel().tolist())")
acase("ase-flat-cell", "error", ["cell|volume|flat|degenerate"],
      "a = cuau(); a.cell[2] = [0, 0, 1e-7]; result(ase_energy(F / 'morse.pt', a))")
acase("ase-nan-position", "error", ["nan|finite"],
      "a = cuau(); a.positions[2, 0] = float('nan'); result(ase_energy(F / 'morse.pt', a))")
acase("ase-wrapped-equal", "ok", [],
      "a = cuau(); e0 = ase_energy(F / 'morse.pt', a); b = cuau(); b.positions[5] += b.cell[0] * 3 - b.cell[1]\n"
      "e1 = ase_energy(F / 'morse.pt', b); result({'e0': e0, 'e1': e1})",
      check=lambda c: finite_result(c) or (None if abs(result_of(c)['e0'] - result_of(c)['e1']) < 1e-8
                                           else "energy changes when an atom is shifted by a lattice vector"))
acase("ase-stress-cluster", "error", ["stress|periodic|cell"],
      "a = cuau(pbc=False); ase_energy(F / 'morse.pt', a); result(a.get_stress().tolist())")
acase("ase-uncertainty-single", "error", ["committee|ensemble"],
      "a = cuau(); ase_energy(F / 'morse.pt', a); result(a.calc.get_property('forces_std', a).tolist())")
acase("ase-small-cell-pbc", "ok", [],
      "from ase.build import bulk\na = bulk('Cu', 'fcc', a=3.61); a.rattle(0.02, seed=1)\n"
      "e1 = ase_energy(F / 'morse.pt', a) ; b = a.repeat((3, 3, 3)); e3 = ase_energy(F / 'morse.pt', b)\n"
      "result({'per_atom_1': e1, 'per_atom_27': e3 / 27})",
      check=lambda c: finite_result(c) or (None if abs(result_of(c)['per_atom_1'] - result_of(c)['per_atom_27'])
                                           < 1e-8 else "primitive cell energy differs from its 3x3x3 supercell"))

# ================================ OpenMM =================================================================
TS_BOILERPLATE = "^The following operation failed in the TorchScript interpreter"


def ocase(id, expect, words, body, forbid=(TS_BOILERPLATE,), **kw):
    case(id, "OpenMM create_force" if "Reporter" not in body else "OpenMM UncertaintyReporter", expect, words,
         forbid, py="import torch, openmm\nfrom mlpot_plugins.openmm import create_force, UncertaintyReporter\n"
         + textwrap.dedent(body), **kw)


for be in ("torch", "python"):
    ocase(f"omm-{be}-ok", "ok", [], f"""
        a = cuau(); s = omm_system(a); s.addForce(create_force(F / 'committee.pt', list(a.symbols), backend='{be}',
                                                               periodic=True))
        e, f = omm_energy(s, a); result([e] + f.ravel().tolist())""", check=finite_result)
    ocase(f"omm-{be}-missing", "error", ["nowhere.pt", "does not exist|not found"],
          f"create_force(F / 'nowhere.pt', ['Cu'], backend='{be}')")
    ocase(f"omm-{be}-dir", "error", ["dir.pt", "director"], f"create_force(F / 'dir.pt', ['Cu'], backend='{be}')",
          forbid=["does not exist"])
    ocase(f"omm-{be}-meta-cutoff", "error", ["cutoff"], f"create_force(F / 'meta_cutoff.pt', ['Cu'], backend='{be}')")
    ocase(f"omm-{be}-periodic-no-box", "error", ["box"], f"""
        a = cuau(); s = omm_system(a, box=False)
        s.addForce(create_force(F / 'morse.pt', list(a.symbols), backend='{be}', periodic=True))
        e, f = omm_energy(s, a); result(e)""")
    ocase(f"omm-{be}-coincident", "error", ["coincident|overlap|same position|too close|distance"], f"""
        a = cuau(pbc=False); a.positions[1] = a.positions[0]; s = omm_system(a)
        s.addForce(create_force(F / 'morse.pt', list(a.symbols), backend='{be}'))
        e, f = omm_energy(s, a); result([e] + f.ravel().tolist())""",
          )
    ocase(f"omm-{be}-xml-moved-model", "ok_or_error", ["m.pt", "exist|moved|not found"], f"""
        shutil.copy(F / 'committee.pt', W / 'm.pt')
        a = cuau(); s = omm_system(a); s.addForce(create_force(W / 'm.pt', list(a.symbols), backend='{be}',
                                                               periodic=True))
        xml = openmm.XmlSerializer.serialize(s)
        os.rename(W / 'm.pt', W / 'moved.pt')
        s2 = openmm.XmlSerializer.deserialize(xml)
        e, f = omm_energy(s2, a); result([e] + f.ravel().tolist())""", check=finite_result)
    ocase(f"omm-{be}-lattice-model", "error", ["lattice|atomistic"],
          f"create_force(F / 'lattice.pt', ['Cu'], backend='{be}')")
ocase("omm-python-cuda", "error", ["cuda|gpu"], "create_force(F / 'morse.pt', ['Cu'], backend='python', device='cuda')",
      forbid=["not a loadable|Export the model", TS_BOILERPLATE])
ocase("omm-bad-backend", "error", ["jax", "torch|python"], "create_force(F / 'morse.pt', ['Cu'], backend='jax')")
ocase("omm-bad-dtype", "error", ["float16|dtype"], "create_force(F / 'morse.pt', ['Cu'], dtype='float16')")
ocase("omm-unknown-element", "error", ["O", "Cu"], "create_force(F / 'morse.pt', ['Cu', 'O'])")
ocase("omm-atoms-out-of-range", "error", ["40", "range"], "create_force(F / 'morse.pt', ['Cu'] * 4, atoms=[0, 40])")
ocase("omm-xml-roundtrip-ok", "ok", [], """
    a = cuau(); s = omm_system(a); s.addForce(create_force(F / 'committee.pt', list(a.symbols), backend='python',
                                                           periodic=True))
    e0, _ = omm_energy(s, a); s2 = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(s))
    e1, _ = omm_energy(s2, a); result({'e0': e0, 'e1': e1})""",
      check=lambda c: finite_result(c) or (None if abs(result_of(c)['e0'] - result_of(c)['e1']) < 1e-9
                                           else "round-trip changes the energy"))
ocase("omm-small-box", "error", ["box|cutoff"], """
    from ase.build import bulk
    a = bulk('Cu', 'fcc', a=3.61, cubic=True); a.rattle(0.02, seed=1); s = omm_system(a)
    s.addForce(create_force(F / 'morse.pt', list(a.symbols), backend='torch', periodic=True))
    e, f = omm_energy(s, a); b = a.repeat((3, 3, 3))
    from mlpot_plugins.ase import MLPotCalculator
    b.calc = MLPotCalculator(str(F / 'morse.pt')); ref = b.get_potential_energy() / 27 * 96.485332
    result({'omm': e, 'ref': ref})""",
      check=None)
CASES[-1]["expect"] = "ok_or_error"
CASES[-1]["check"] = lambda c: finite_result(c) or (None if abs(result_of(c)["omm"] - result_of(c)["ref"]) < 1e-4
                                                    else "energy in a box smaller than 2x cutoff is wrong")


def rep_sim(extra_before="", reporter="UncertaintyReporter(F / 'committee.pt', str(W / 'unc.txt'), 2)", steps=4):
    return f"""
    import openmm.app as app, openmm.unit as u
    a = cuau(); s = omm_system(a)
    top = app.Topology(); ch = top.addChain(); res = top.addResidue('X', ch)
    for sym in a.symbols: top.addAtom(sym, app.Element.getBySymbol(sym), res)
    top.setPeriodicBoxVectors(a.cell.array / 10.0)
    s.addForce(create_force(F / 'committee.pt', top, backend='torch'))
    {extra_before}
    sim = app.Simulation(top, s, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName('Reference'))
    sim.context.setPositions(a.positions / 10.0)
    rep = {reporter}
    sim.reporters.append(rep); sim.step({steps}); rep.close(); result(1)"""


ocase("omm-reporter-ok", "ok", [], rep_sim(),
      check=lambda c: None if len((Path(c["W"]) / "unc.txt").read_text().splitlines()) >= 3 else "report rows lost")
ocase("omm-reporter-interval-0", "error", ["reportInterval"],
      "UncertaintyReporter(F / 'committee.pt', str(W / 'u.txt'), 0)")
ocase("omm-reporter-single", "error", ["committee|ensemble"],
      "UncertaintyReporter(F / 'morse.pt', str(W / 'u.txt'), 1)")
ocase("omm-reporter-bad-action", "error", ["explode", "action"],
      "UncertaintyReporter(F / 'committee.pt', str(W / 'u.txt'), 1, threshold=0.1, action='explode')")
ocase("omm-reporter-threshold-neg", "error", ["threshold"],
      "UncertaintyReporter(F / 'committee.pt', str(W / 'u.txt'), 1, threshold=-1)")
ocase("omm-reporter-missing-dir", "error", ["nodir|director|exist"],
      "UncertaintyReporter(F / 'committee.pt', str(W / 'nodir' / 'u.txt'), 1)")
ocase("omm-reporter-overwrite", "ok_or_error", ["unc.txt", "exist|append|overwrite"],
      "(W / 'unc.txt').write_text('# step max\\n0 0.5 0.1 1:0.5\\n2 0.6 0.2 1:0.6\\n')\n" + textwrap.dedent(rep_sim()),
      check=lambda c: None if "0 0.5 0.1 1:0.5" in (Path(c["W"]) / "unc.txt").read_text()
      else "existing report file truncated")
ocase("omm-reporter-stop", "error", ["threshold|uncertaint"],
      rep_sim(reporter="UncertaintyReporter(F / 'committee.pt', str(W / 'unc.txt'), 1, threshold=1e-9, "
              "action='stop')"))
ocase("omm-mlpotential-missing", "error", ["nowhere.pt", "does not exist|not found"], """
    from openmmml import MLPotential
    MLPotential('mlpot', modelPath=str(F / 'nowhere.pt'))""")


# Extended cases: more members of classes already covered above; run only with --all (keeps the default run
# near 10 minutes on a busy 2-core machine).
EXTENDED = {"info-empty", "info-notobj", "info-meta-species", "info-meta-version", "info-meta-nocutoff",
            "info-json-junk", "cli-unknown-cmd", "export-dir", "train-unknown-option", "train-ensemble-0",
            "train-lr-neg", "train-cutoff-neg", "hrun-L-0", "hrun-batch-neg", "hrun-gamma-neg", "hrun-dt-0",
            "hrun-param-nan", "hrun-L-odd-kpm", "omm-python-lattice-model", "omm-atoms-out-of-range",
            "omm-bad-backend", "ase-device-bad", "ase-truncated", "htrain-ensemble-0", "plugin-truncated-so-cli",
            "plugin-empty-so-lmp"}
assert EXTENDED <= {c["id"] for c in CASES}
ALL_IDS = [c["id"] for c in CASES]


# ---------------------------------------------------------------------------------------------------------
# running and classifying
# ---------------------------------------------------------------------------------------------------------
def subst(x, ctx):
    if isinstance(x, str):
        return x.replace("{F}", ctx["F"]).replace("{W}", ctx["W"]).replace("__F__", ctx["F"]).replace(
            "{U}", ctx["U"])
    if isinstance(x, list):
        return [subst(v, ctx) for v in x]
    if isinstance(x, dict):
        return {k: subst(v, ctx) for k, v in x.items()}
    return x


def deck_text(d, ctx):
    model = subst(d.get("model", "{F}/committee.pt"), ctx)
    coeff = d.get("coeff", "* * Cu Au")
    data = d.get("data", "cuau.data")
    lines = [f"units {d.get('units', 'metal')}", d.get("pre", ""), "atom_style atomic", "atom_modify map array",
             "boundary p p p", f"read_data {ctx['F']}/{data}", f"pair_style mlpot {model}".rstrip(),
             f"pair_coeff {coeff}" if coeff else "", "thermo_style custom step pe press", "thermo 1",
             subst(d.get("extra", ""), ctx), f"run {d.get('run', '0')}"]
    return "\n".join(lines) + "\n"


def run_proc(cmd, cwd, env, timeout, send_signal=None):
    """Run cmd; returns dict(rc, stdout, stderr, timeout, seconds).  send_signal=(sig, regex, delay): send sig
    `delay` s after regex first appears in the output."""
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    out, err = [], []

    def pump(stream, sink):
        for chunk in iter(lambda: stream.read1(4096), b""):
            sink.append(chunk)
    threads = [threading.Thread(target=pump, args=(p.stdout, out), daemon=True),
               threading.Thread(target=pump, args=(p.stderr, err), daemon=True)]
    for t in threads:
        t.start()
    timed_out, sent = False, False
    while p.poll() is None:
        if time.time() - t0 > timeout:
            timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            break
        if send_signal and not sent:
            sig, pattern, delay = send_signal
            text = b"".join(out + err).decode(errors="replace")
            if re.search(pattern, text):
                time.sleep(delay)
                if p.poll() is None:
                    p.send_signal(sig)
                sent = True
                t_sig = time.time()
        if sent and time.time() - t_sig > 60 and p.poll() is None:  # ignored the signal: a hang
            timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    p.wait()
    for t in threads:
        t.join(timeout=5)
    return dict(rc=p.returncode, stdout=b"".join(out).decode(errors="replace"),
                stderr=b"".join(err).decode(errors="replace"), timeout=timed_out, seconds=time.time() - t0,
                signal_sent=sent)


PROGRESS = re.compile(r"\d+%\||\d+/\d+ \[|it/s\]|step/s\]")


def clean_lines(text):
    out = []
    for raw in text.splitlines():
        line = raw.split("\r")[-1].strip()
        if PROGRESS.search(line):  # a message printed right after a progress bar (no newline) is kept
            line = re.sub(r"^.*(\d+%\||\d+/\d+ \[)[^\]]*\]", "", line).strip()
        if line and not PROGRESS.search(line) and not line.startswith("Warning: importing 'simtk"):
            out.append(line)
    return out


def message_of(c, res):
    """(message text judged against the words, its first line)."""
    if "deck" in c:
        lines = (res["stdout"] + "\n" + res["stderr"]).splitlines()
        errs, keep = [], False
        for l in lines:
            if l.startswith("ERROR"):
                keep = True
            elif keep and (not l.strip() or l.startswith("Last command")):
                keep = False
            if keep:
                errs.append(l)
        other = [l for l in clean_lines(res["stderr"]) if "ERROR" not in l]
        text = "\n".join(errs + other)
        first = errs[0] if errs else (other[0] if other else "")
        return text, first
    lines = clean_lines(res["stderr"])
    if "py" in c:
        exc = [l for l in res["stderr"].splitlines() if l.startswith("EXC ")]
        if exc:
            k = res["stderr"].index(exc[0])
            text = res["stderr"][k + 4:]
            return text, exc[0][4:]
    if "Traceback (most recent call last)" in res["stderr"]:
        last = [l for l in lines if re.match(r"^[A-Za-z_.]+(Error|Exception|Interrupt)\b", l)]
        return "\n".join(lines), (last[-1] if last else lines[-1])
    text = "\n".join(lines + clean_lines(res["stdout"])[-5:])
    plain = [l for l in lines if not re.search(r"Warning\b|warnings\.warn", l)]
    errs = [l for l in plain if re.search(r"error", l, re.I)]
    return text, (errs or plain or lines or clean_lines(res["stdout"])[-1:] or [""])[0]


def classify(c, res, ctx):
    """-> (class, reason)."""
    both = res["stdout"] + res["stderr"]
    sig = c.get("send_signal", (None,))[0]
    if res["timeout"]:
        return "crash", f"hang (no exit within {c['timeout']} s)" if not res.get("signal_sent") else \
            "did not stop within 60 s of the signal"
    rc = res["rc"]
    expected_sig = sig is not None and res.get("signal_sent") and rc in (-sig, 128 + sig)
    if not expected_sig and (rc < 0 or rc >= 128):
        return "crash", f"exit {rc} ({'signal ' + str(-rc) if rc < 0 else 'status'})"
    if re.search(r"Segmentation fault|core dumped|terminate called|BAD TERMINATION|Aborted|double free|"
                 r"corrupted size|stack smashing|munmap_chunk|free\(\): invalid", both):
        return "crash", "crash marker in output"
    lmp_error = "deck" in c and re.search(r"^ERROR", both, re.M)
    failed = rc != 0 or bool(lmp_error)
    text, first = message_of(c, res)
    if c.get("send_signal") and not res.get("signal_sent"):
        return ("raw", "ended before the signal could be sent: " + first) if failed else \
            ("silent", "ended before the signal could be sent")
    if not failed or expected_sig:
        if c["expect"] == "error":
            return "silent", "bad input accepted (exit 0)"
        if c["expect"] == "warn_or_error":
            warn = "\n".join(clean_lines(both))
            if all(re.search(w, warn, re.I) for w in c["words"]):
                return "clear", "warning names the problem"
            return "silent", "accepted without a warning"
        chk = c.get("check")
        if chk:
            try:
                reason = chk(ctx | res)
            except Exception as exc:  # noqa: BLE001 - a check failing to read its output means lost output
                reason = f"check could not read the output ({type(exc).__name__}: {exc})"
            if reason:
                return "silent", reason
        return "ok", "correct"
    # it failed
    if c["expect"] == "ok":
        return "raw", "refused a valid input: " + first
    if "Traceback (most recent call last)" in res["stderr"]:
        return "raw", "Python traceback"
    head = re.sub(r"^(EXC )?[A-Za-z_.]*(Error|Exception|Exceeded|Warning): ", "", first)  # drop "Type: "
    for f in c["forbid"]:
        if re.search(f, head if f.startswith("^") else text, re.I | re.M):
            return "raw", f"misleading ({f!r})"
    missing = [w for w in c["words"] if not re.search(w, text, re.I)]
    if missing:
        return "raw", f"message lacks {missing}"
    if c.get("fast") and res["seconds"] > c["fast"]:
        return "raw", f"error only after {res['seconds']:.0f} s of work"
    return "clear", "clear error"


def run_case(c, base_ctx, env0):
    W = Path(tempfile.mkdtemp(prefix=c["id"] + "-", dir=base_ctx["work"]))
    ctx = dict(base_ctx, W=str(W))
    env = dict(env0)
    env.update(subst(c.get("env", {}), ctx))
    if c.get("cache_fault"):
        cache = W / "cache"
        so = Path(base_ctx["plugin"])
        dst = cache / so.parent.name / so.name
        dst.parent.mkdir(parents=True)
        data = so.read_bytes()
        dst.write_bytes(data[: len(data) // 3] if c["cache_fault"] == "truncate" else b"")
    for step in c.get("prep", []):
        r = run_proc(subst(step, ctx), W, env, 180)
        if r["rc"] != 0:
            return dict(res=r, cls="raw", reason=f"preparation step failed ({r['rc']}): "
                        + (clean_lines(r["stderr"]) or [""])[-1][:200], first="", W=W)
    if "deck" in c:
        if c["deck"].get("restart"):
            d1 = dict(c["deck"], extra="velocity all create 300 1\nfix 1 all nve", run="10")
            (W / "in.first").write_text(deck_text(d1, ctx) + "write_restart r.restart\n")
            cmd0 = ["lmp", "-in", "in.first", "-log", "log.first"]
            r = run_proc(cmd0, W, env, 90)
            if r["rc"] != 0:
                return dict(res=r, cls="raw", reason="first run of the continuation failed", first="", W=W)
            model = subst(c["deck"].get("model"), ctx)
            (W / "in.deck").write_text(f"read_restart r.restart\npair_style mlpot {model}\npair_coeff * * Cu Au\n"
                                       "fix 1 all nve\nthermo_style custom step pe\nthermo 1\nrun 10\n")
        else:
            (W / "in.deck").write_text(deck_text(c["deck"], ctx))
        cmd = ["lmp", "-in", "in.deck", "-log", "log.lammps"]
        if c.get("nprocs", 1) > 1:
            cmd = ["mpiexec", "-n", str(c["nprocs"])] + cmd
    elif "py" in c:
        (W / "case.py").write_text(wrap_py(c["py"]))
        cmd = ["python", "case.py"]
    else:
        cmd = subst(c["cli"], ctx)
    res = run_proc(cmd, W, env, c["timeout"], c.get("send_signal"))
    cls, reason = classify(c, res, ctx)
    _, first = message_of(c, res)
    return dict(res=res, cls=cls, reason=reason, first=first, W=W)


def compare(paths) -> str:
    """Markdown: counts by class (and by entry point) for one or more result JSONs, then per-case changes."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    heads = [f"{Path(r['tree']).name} {r['commit']}" for r in runs]
    out = ["| class | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(runs)]
    for k in CLASSES:
        out.append(f"| {k} | " + " | ".join(str(r["counts"][k]) for r in runs) + " |")
    out.append("| total | " + " | ".join(str(len(r["cases"])) for r in runs) + " |")
    entries = sorted({e for r in runs for e in r["by_entry"]})
    out += ["", "| entry point | " + " | ".join(f"{h} (crash/silent/raw/clear/ok)" for h in heads) + " |",
            "|---|" + "---|" * len(runs)]
    for e in entries:
        out.append(f"| {e} | " + " | ".join("/".join(str(r["by_entry"].get(e, {}).get(k, 0)) for k in CLASSES)
                                            for r in runs) + " |")
    if len(runs) > 1:
        a, b = ({c["id"]: c for c in r["cases"]} for r in runs[-2:])
        out += ["", f"| case | {heads[-2]} | {heads[-1]} | first line now |", "|---|---|---|---|"]
        for cid in ALL_IDS:
            if cid in a and cid in b and a[cid]["cls"] != b[cid]["cls"]:
                line = b[cid]["first_line"][:110].replace("|", "\\|")
                out.append(f"| {cid} | {a[cid]['cls']} | {b[cid]['cls']} | {line} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", help="checkout whose code is measured (PYTHONPATH)")
    ap.add_argument("--json", help="write the per-case results here")
    ap.add_argument("--only", help="regex on case ids")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the work folders")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--all", action="store_true", help="also the extended cases")
    ap.add_argument("--update", action="store_true",
                    help="merge into an existing --json of the same commit (re-measure a subset with --only)")
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="print markdown tables of result files and exit")
    args = ap.parse_args(argv)
    if args.compare:
        print(compare(args.compare))
        return 0
    cases = [c for c in CASES if (args.all or c["id"] not in EXTENDED) and (not args.only or re.search(args.only, c["id"]))]
    if args.list:
        for c in cases:
            print(f"{c['id']:32s} {c['entry']:28s} {c['expect']:14s} {c['words']}")
        print(len(cases), "cases")
        return 0
    if not args.tree:
        ap.error("--tree DIR is required (the checkout to measure)")
    tree = Path(args.tree).resolve()
    tag = hashlib.sha1(str(tree).encode()).hexdigest()[:8]
    root = Path(tempfile.mkdtemp(prefix=f"mlpot-fuzz-{tree.name}-"))
    env = dict(os.environ)
    env.update(PYTHONPATH=str(tree), PATH=f"{VENV_BIN}:{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               MLPOT_CACHE_DIR=f"/tmp/mlpot-fuzz-cache-{tree.name}-{tag}", MPLBACKEND="Agg",
               FUZZ_FIX=str(root / "fix"), PYTHONUNBUFFERED="1")
    env.pop("MLPOT_PRETRAINED_DIR", None)
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    t0 = time.time()
    print(f"fuzz: tree {tree} at {commit}; {len(cases)} cases; work in {root}", flush=True)
    fx = make_fixtures(root / "fix", tree, env, lambda m: print(m, flush=True))
    print(f"fuzz: fixtures ready in {time.time() - t0:.0f} s (plugin {fx['plugin']})", flush=True)
    # `compute mlpot/atom` is a per-atom vector in the original code and a per-atom array (column 1 = force
    # std) later: each deck uses what that tree's docs/lammps.md documents
    doc = tree / "docs" / "lammps.md"
    U = "c_u[1]" if doc.is_file() and "per-atom array" in doc.read_text() else "c_u"
    base = dict(F=str(root / "fix"), work=str(root / "work"), plugin=fx["plugin"], U=U)
    Path(base["work"]).mkdir()
    results = []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        futs = {pool.submit(run_case, c, base, env): c for c in cases}
        for fut in cf.as_completed(futs):
            c = futs[fut]
            try:
                r = fut.result()
            except Exception as exc:  # noqa: BLE001 - the harness itself failed on this case
                r = dict(cls="raw", reason=f"harness error {type(exc).__name__}: {exc}", first="",
                         res=dict(rc=None, seconds=0.0))
            row = dict(id=c["id"], entry=c["entry"], expect=c["expect"], cls=r["cls"], reason=r["reason"],
                       first_line=(r["first"] or "")[:300], rc=r["res"]["rc"],
                       seconds=round(r["res"]["seconds"], 1))
            results.append(row)
            print(f"{row['cls']:6s} {row['id']:32s} {row['seconds']:6.1f}s  {row['reason'][:60]} | "
                  f"{row['first_line'][:90]}", flush=True)
    updated = []
    if args.update and args.json and Path(args.json).is_file():  # re-measured cases replace their old rows
        old = json.loads(Path(args.json).read_text())
        if old.get("commit") != commit:
            print(f"fuzz: --update refused: {args.json} measured commit {old.get('commit')}, not {commit}")
            return 2
        new_ids = {r["id"] for r in results}
        updated = sorted(new_ids)
        results += [r for r in old["cases"] if r["id"] not in new_ids and r["id"] in ALL_IDS]
        updated = sorted(set(old.get("updated", [])) | set(updated))
    results.sort(key=lambda r: ALL_IDS.index(r["id"]))
    counts = {k: sum(r["cls"] == k for r in results) for k in CLASSES}
    by_entry = {}
    for r in results:
        by_entry.setdefault(r["entry"].split(" (")[0], {k: 0 for k in CLASSES})[r["cls"]] += 1
    print(f"\nfuzz of {tree} at {commit}: {len(results)} cases"
          f"{f' ({len(updated)} re-measured)' if updated else ''} in {time.time() - t0:.0f} s")
    print(f"{'entry point':30s} " + " ".join(f"{k:>6s}" for k in CLASSES))
    for e, n in sorted(by_entry.items()):
        print(f"{e:30s} " + " ".join(f"{n[k]:6d}" for k in CLASSES))
    print(f"{'TOTAL':30s} " + " ".join(f"{counts[k]:6d}" for k in CLASSES))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(tree=str(tree), commit=commit, counts=counts, by_entry=by_entry,
                                                   seconds=round(time.time() - t0), updated=updated,
                                                   cases=results), indent=1))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
