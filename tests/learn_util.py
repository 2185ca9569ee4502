"""A tiny `mlpot learn` setup for the tests: 4-atom Cu cells labelled by ASE EMT, a K=2 committee."""
import copy

import yaml

from test_equivariant_training import TINY_MODEL, tiny_dataset

LEARN_CONFIG = {
    "reference": {"calculator": "emt"},
    "data": {"train": "init.extxyz"},
    "model": dict(TINY_MODEL, lmax=1, n_layers=1),
    "training": {"epochs": 2, "lr": 1e-2, "batch_size": 4, "val_fraction": 0.25, "threads": 1},
    "explore": {"engine": "ase", "walkers": 2, "steps": 12, "check_every": 3, "temperatures": [600, 1200],
                "timestep_fs": 2.0},
    "select": {"mode": "threshold", "threshold": 1e-4, "per_iteration": 3},
    "stop": {"label_budget": 3, "max_iterations": 3},
    "output": {"dir": "run"},
}


def learn_folder(folder):
    """``folder`` with init.extxyz (8 EMT-labelled 4-atom Cu cells) for the configs below."""
    tiny_dataset(folder / "init.extxyz", n=8)
    return folder


def write_learn_config(folder, name="learn.yaml", change=None, base=None, **sections):
    """The tiny config (or ``base``) with ``sections`` merged in (section -> dict of options) and
    ``change(cfg)`` applied."""
    cfg = copy.deepcopy(LEARN_CONFIG if base is None else base)
    for section, options in sections.items():
        cfg[section] = dict(cfg.get(section) or {}, **options)
    if change is not None:
        change(cfg)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg) if isinstance(cfg, dict) else cfg)
    return path


def put(section, key, value):
    """A config change for the bad-input cases: ``section.key = value``."""
    return lambda c: c.setdefault(section, {}).update({key: value})


def check_bad_config(folder, capsys, change, words, out, base=None):
    """``mlpot learn`` on the tiny config (or ``base``) changed by ``change`` (a function, or raw text for the
    whole file) is a clear error naming ``words`` and starts nothing (no output folder ``out``)."""
    from cli_util import assert_clear_error

    def apply(c):
        c["output"]["dir"] = out
        change(c)
    path = write_learn_config(folder, name="bad.yaml", change=None if isinstance(change, str) else apply, base=base)
    if isinstance(change, str):
        path.write_text(change)
    assert_clear_error(["learn", path, "--no-progress"], capsys, "learn", words)
    assert not (folder / out).exists()  # nothing started
