"""Frame selection of `mlpot learn` (select.py) on explored frames with known per-atom σ: the order of each
mode, the max-σ and separation rules, and round-robin balance over walkers."""
import numpy as np
import pytest
from ase import Atoms

from mlpot_plugins.learn.select import round_robin, select

SETTINGS = dict(mode="topk", threshold=0.1, max_sigma=0.0, per_iteration=8, score="max", min_separation=1,
                balance="none")


def frame(walker, check, sigma):
    a = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]])
    a.arrays["forces_std"] = np.array([sigma, sigma / 3])
    a.info.update(walker=walker, check=check, sigma_max=sigma)
    return a


@pytest.fixture
def frames():
    # walker 0 is hot (every frame above walker 1's and walker 2's best), walker 2 is the quietest
    sig = {0: [1.0, 1.2, 1.1, 1.3, 1.4], 1: [0.5, 0.7, 0.6], 2: [0.2, 0.3]}
    return [frame(w, c, s) for w, row in sig.items() for c, s in enumerate(row)]


def label(frames, idx):
    return [(frames[i].info["walker"], frames[i].info["check"]) for i in idx]


def test_topk_takes_the_largest_sigma_first_and_respects_separation(frames):
    assert label(frames, select(frames, SETTINGS, 4, 0.1, 0)) == [(0, 4), (0, 3), (0, 1), (0, 2)]
    two_apart = dict(SETTINGS, min_separation=2)  # (0,3) is next to (0,4); (0,2), (0,0) next to (0,1); ...
    assert label(frames, select(frames, two_apart, 4, 0.1, 0)) == [(0, 4), (0, 1), (1, 1), (2, 1)]
    got = label(frames, select(frames, two_apart, 10, 0.1, 0))
    for (w1, c1) in got:
        assert all(abs(c1 - c2) >= 2 for (w2, c2) in got if w2 == w1 and c2 != c1)


def test_balance_walkers_interleaves_each_walkers_best(frames):
    bal = dict(SETTINGS, balance="walkers")
    assert label(frames, select(frames, bal, 3, 0.1, 0)) == [(0, 4), (1, 1), (2, 1)]
    assert label(frames, select(frames, bal, 6, 0.1, 0)) == [(0, 4), (1, 1), (2, 1), (0, 3), (1, 2), (2, 0)]
    # more labels than walkers x frames: everything, each walker still in its own score order
    got = label(frames, select(frames, bal, 20, 0.1, 0))
    assert len(got) == len(frames) and [c for w, c in got if w == 0] == [4, 3, 1, 2, 0]


def test_max_sigma_and_threshold_filter_before_balance(frames):
    capped = dict(SETTINGS, balance="walkers", max_sigma=1.25)  # walker 0's 1.3 and 1.4 are not labelled
    assert label(frames, select(frames, capped, 3, 0.1, 0)) == [(0, 1), (1, 1), (2, 1)]
    over = dict(SETTINGS, mode="threshold", threshold=0.55, balance="walkers")  # walker 2 has nothing over
    assert label(frames, select(frames, over, 4, 0.1, 0)) == [(0, 4), (1, 1), (0, 3), (1, 2)]


def test_random_balanced_is_stratified_and_seeded(frames):
    rnd = dict(SETTINGS, mode="random", balance="walkers")
    a, b = select(frames, rnd, 3, 0.1, 7), select(frames, rnd, 3, 0.1, 7)
    assert a == b and sorted(frames[i].info["walker"] for i in a) == [0, 1, 2]
    plain = [select(frames, dict(rnd, balance="none"), 3, 0.1, s) for s in range(40)]
    assert any(len({frames[i].info["walker"] for i in p}) < 3 for p in plain)  # uniform draws are not stratified


def test_round_robin_keeps_order_within_groups():
    assert round_robin([5, 1, 4, 2, 3], ["a", "a", "b", "a", "c"]) == [5, 4, 3, 1, 2]
    assert round_robin([], []) == []


def test_a_state_without_a_later_option_resumes_at_its_default(tmp_path):
    """A loop state written before select.balance / explore.stop_after existed resumes when they are at their
    defaults, and refuses (naming the option) when they are not."""
    import torch

    from mlpot_plugins.learn.config import LATER_OPTIONS
    from mlpot_plugins.runsafe import RunError, resume_state

    old = {"select": {"mode": "topk", "per_iteration": 8}, "explore": {"walkers": 4}, "data": "train.extxyz"}
    torch.save({"kind": "learn", "config": old}, tmp_path / "state.pt")
    now = {"select": dict(old["select"], balance="none"), "explore": dict(old["explore"], stop_after=0),
           "data": "train.extxyz"}
    assert resume_state(tmp_path / "state.pt", "learn", now, True, "mlpot learn", later=LATER_OPTIONS)["config"] == old
    for section, name, value in (("select", "balance", "walkers"), ("explore", "stop_after", 3)):
        changed = {k: dict(v) if isinstance(v, dict) else v for k, v in now.items()}
        changed[section][name] = value
        with pytest.raises(RunError, match=f"{name}.*{value}"):
            resume_state(tmp_path / "state.pt", "learn", changed, True, "mlpot learn", later=LATER_OPTIONS)
    with pytest.raises(RunError, match="balance"):  # without the defaults the old state does not match
        resume_state(tmp_path / "state.pt", "learn", now, True, "mlpot learn")
