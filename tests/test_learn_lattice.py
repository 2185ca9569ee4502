"""`mlpot learn` on a Holstein lattice model with exact diagonalisation as the reference: a tiny D4 committee
explores with its own Langevin dynamics, the most uncertain fields are labelled by ED (checked against an
independent ED solve), the retrained committee fits what it was taught, SIGTERM during labelling resumes
without repeating a label, and bad lattice configs are clear errors (exit 2, nothing started)."""
import os
import signal

import numpy as np
import pytest
import torch
import yaml

from mlpot_plugins.holstein.data import generate
from mlpot_plugins.holstein.ed import ed_solve
from mlpot_plugins.holstein.learn import EDReference, read_frames
from mlpot_plugins.holstein.params import HolsteinParams
from mlpot_plugins.learn.loop import run
from mlpot_plugins.model_file import load
from mlpot_plugins.runsafe import RunInterrupted

from learn_util import check_bad_config, put, write_learn_config

CONFIG = {
    "reference": {"calculator": "holstein-ed"},
    "data": {"train": "train.pt", "ood": {"domains": "ood.pt"}},
    "model": {"radius2": 2, "channels": 4, "hidden": 8, "ensemble_size": 3},
    "training": {"epochs": 4, "batch": 8, "lr": 3e-3},
    "explore": {"walkers": 2, "steps": 60, "check_every": 10, "temperatures": [0.1, 0.3]},
    "select": {"mode": "topk", "per_iteration": 3},
    "stop": {"label_budget": 6},
    "output": {"dir": "run"},
}


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hl")
    generate(folder / "train.pt", L=6, n_quench=2, n_domain=2, quench_steps=60, domain_steps=30, stride=6,
             seed=0, progress=False)
    generate(folder / "ood.pt", L=6, n_quench=0, n_domain=2, quench_steps=0, domain_steps=30, stride=6, seed=7,
             progress=False)
    generate(folder / "other-g.pt", L=6, n_quench=0, n_domain=2, quench_steps=0, domain_steps=12, stride=6,
             seed=7, p=HolsteinParams(g=2.0), progress=False)
    return folder


def write_config(folder, name="learn.yaml", change=None, **sections):
    return write_learn_config(folder, name, change, base=CONFIG, **sections)


class CountingED(EDReference):
    """Real ED that records every field it labels (and can SIGTERM its own process after n labels)."""

    def __init__(self, p, kill_after=None):
        super().__init__(p)
        self.seen, self.kill_after = [], kill_after

    def __call__(self, Q):
        self.seen.append(tuple(np.round(Q.numpy().ravel(), 9)))
        if self.kill_after is not None and len(self.seen) == self.kill_after:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__call__(Q)


def ed_error(frames, p):
    return max(float((ed_solve(f.Q.double(), p)["electronic_forces"] - f.f_el).abs().max()) for f in frames)


@pytest.fixture(scope="module")
def two_iterations(data_folder):
    report = run(write_config(data_folder), progress=False, log=lambda *a: None)
    return data_folder / "run", report


def test_lattice_loop_labels_the_most_uncertain_fields_by_exact_diagonalisation(two_iterations, data_folder):
    out, report = two_iterations
    p = HolsteinParams.from_dict(torch.load(data_folder / "train.pt", weights_only=False)["params"])
    assert report["stop_reason"].startswith("label budget spent (6 of 6)")
    assert [r["iteration"] for r in report["iterations"]] == [0, 1, 2]
    for k in (1, 2):
        labelled = read_frames(out / f"iter_{k:03d}" / "labelled.pt")
        assert len(labelled) == 3 and ed_error(labelled, p) < 1e-12
        explored = read_frames(out / f"iter_{k:03d}" / "explored.pt")
        assert len(explored) == 2 * 6 and report["iterations"][k]["explore"]["md_steps"] == 2 * 60
        # top-k labels the fields with the largest per-site σ, and σ was the committee's on that very field
        top = sorted((f.info["sigma_max"] for f in explored), reverse=True)[:3]
        assert sorted(f.info["sigma_max"] for f in labelled) == pytest.approx(sorted(top))
        model = load(out / f"iter_{k - 1:03d}" / "model.pt")
        res = model.module.compute_lattice(labelled[0].Q, True)
        assert float(res["forces_std"].max()) == pytest.approx(labelled[0].info["sigma_max"], rel=1e-5)
        assert model.metadata["kind"] == "lattice" and model.metadata["ensemble_size"] == 3
    assert len(read_frames(out / "labels.pt")) == 6
    # the labelled fields join the training data as kind "learn" and are never held out
    train2 = torch.load(out / "iter_002" / "train.pt", weights_only=False)
    assert train2["kind"].count("learn") == 6
    rows = report["iterations"]
    assert rows[2]["n_train"] == rows[0]["n_train"] + 6
    ood = rows[-1]["metrics"]["domains"]
    assert np.isfinite(ood["force_rmse"]) and 0 < ood["median_force_std"] and "spearman_sigma_vs_abs_error" in ood
    assert (out / "learning_curve.png").stat().st_size > 1000 and (out / "sigma_vs_error.png").is_file()


def test_retrained_committee_fits_the_fields_it_was_taught(two_iterations, data_folder):
    out, _ = two_iterations
    for k in (1, 2):
        fields = read_frames(out / f"iter_{k:03d}" / "labelled.pt")
        Q = torch.stack([f.Q for f in fields])
        target = torch.stack([f.f_el for f in fields])
        p = HolsteinParams.from_dict(torch.load(data_folder / "train.pt", weights_only=False)["params"])
        from mlpot_plugins.holstein.params import elastic_force

        def error(model_k):
            f = load(out / f"iter_{model_k:03d}" / "model.pt").module.compute_lattice(Q, False)["forces"].double()
            return float((f - elastic_force(Q, p) - target).pow(2).mean().sqrt())
        assert error(k) < error(k - 1), k


def test_sigterm_during_labelling_resumes_without_repeating_labels(data_folder, tmp_path):
    for name in ("train.pt", "ood.pt"):
        (tmp_path / name).write_bytes((data_folder / name).read_bytes())
    cfg = write_config(tmp_path, stop={"label_budget": 3})
    p = HolsteinParams.from_dict(torch.load(tmp_path / "train.pt", weights_only=False)["params"])
    first = CountingED(p, kill_after=2)
    with pytest.raises(RunInterrupted, match="--resume") as exc:
        run(cfg, progress=False, log=lambda *a: None, reference=first)
    assert exc.value.exit_code == 128 + signal.SIGTERM and len(first.seen) == 2
    second = CountingED(p)
    report = run(cfg, resume=True, progress=False, log=lambda *a: None, reference=second)
    assert len(second.seen) == 1 and not set(second.seen) & set(first.seen)
    labelled = read_frames(tmp_path / "run" / "iter_001" / "labelled.pt")
    assert len(labelled) == 3 and report["n_labels"] == 3 and ed_error(labelled, p) < 1e-12


CASES = [
    (put("reference", "options", {"g": 2.0}), ["takes no options", "params of data.train", "--param"]),
    (put("data", "train", "absent.pt"), ["data.train", "does not exist", "mlpot holstein generate"]),
    (put("data", "train", "learn.yaml"), ["data.train", "not readable Holstein training data"]),
    (put("data", "ood", {"other": "other-g.pt"}), ["another Hamiltonian", "g=2.0 vs 3.5", "--param"]),
    (put("model", "radius2", 13), ["smaller than the model's patch", "radius2=13", "L >= 7"]),
    (put("model", "ensemble_size", 1), ["ensemble_size must be >= 2"]),
    (put("model", "arch", "mace"), ["model.arch='mace'", "conv", "irreps"]),
    (put("model", "cutoff", 4.0), ["unknown model option", "cutoff"]),
    (put("explore", "start", ["quench", "liquid"]), ["explore.start ['liquid']", "quench", "domains"]),
    (put("explore", "temperatures", [0.1, -1]), ["explore.temperatures", "units of t"]),
    (put("explore", "engine", "lammps"), ["unknown explore option", "engine"]),
    (put("explore", "check_every", 100), ["larger than explore.steps"]),
    (put("training", "lr_schedule", "cosine"), ["unknown training option", "lr_schedule"]),
    (put("select", "mode", "bald"), ["select.mode='bald'"]),
]


@pytest.mark.parametrize("change,words", CASES, ids=[str(i) for i in range(len(CASES))])
def test_bad_lattice_config_is_a_clear_error(data_folder, capsys, change, words, request):
    check_bad_config(data_folder, capsys, change, words, f"run-bad-{request.node.callspec.id}", base=CONFIG)


def test_shipped_lattice_example_config_is_valid(tmp_path):
    """examples/learn_holstein_ed.yaml validates (tiny generated data standing in for its files)."""
    from pathlib import Path

    from mlpot_plugins.learn.config import load_learn_config

    example = Path(__file__).resolve().parents[1] / "examples" / "learn_holstein_ed.yaml"
    (tmp_path / "learn.yaml").write_text(example.read_text())
    raw = yaml.safe_load(example.read_text())
    generate(tmp_path / raw["data"]["train"], L=8, n_quench=2, n_domain=2, quench_steps=12, domain_steps=12,
             stride=6, progress=False)
    for name in raw["data"]["ood"].values():
        (tmp_path / name).write_bytes((tmp_path / raw["data"]["train"]).read_bytes())
    cfg = load_learn_config(tmp_path / "learn.yaml")
    assert cfg["system"] == "lattice" and cfg["reference"]["calculator"] == "holstein-ed"
    assert cfg["explore"]["L"] == 8 and cfg["model"]["ensemble_size"] >= 2
