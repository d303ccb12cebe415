"""Traffic policies: sticky assignment, canary shares, shadow mirroring and file validation."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from streaminfer.monitoring.experiments.splits import check_split
from streaminfer.workers.errors import PolicyInvalid
from streaminfer.workers.routing.traffic import (
    Arm,
    Canary,
    Shadow,
    TrafficPolicy,
    assign,
    load_policy,
    mirrored,
    parse_policy,
    save_policy,
)

KEYS = [f"user-{n}".encode() for n in range(20_000)]
ABC = (Arm("a", "1.0.0", 50), Arm("b", "1.1.0", 30), Arm("c", "1.2.0", 20))

_ASSIGN_IN_A_NEW_PROCESS = """
import json, sys
from streaminfer.workers.routing.traffic import Arm, assign
arms = (Arm("a", "1.0.0", 50), Arm("b", "1.1.0", 30), Arm("c", "1.2.0", 20))
print(json.dumps([assign(arms, f"user-{n}".encode(), "exp-1").name for n in range(2000)]))
"""


def test_the_same_key_gets_the_same_arm_in_another_process():
    """``hash()`` would differ per process (PYTHONHASHSEED); the stable hash must not."""
    here = [assign(ABC, key, "exp-1").name for key in KEYS[:2000]]
    there = subprocess.run([sys.executable, "-c", _ASSIGN_IN_A_NEW_PROCESS], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "12345"}, cwd=Path(__file__).parents[2])
    assert json.loads(there.stdout) == here


def test_a_split_matches_its_weights_with_no_sample_ratio_mismatch():
    counts = Counter(assign(ABC, key, "exp-1").name for key in KEYS)
    check = check_split(dict(counts), {a.name: a.weight for a in ABC})
    assert not check.mismatch, check.describe()


def test_experiments_with_different_names_assign_independently():
    first = [assign(ABC, key, "exp-1").name == "a" for key in KEYS]
    second = [assign(ABC, key, "exp-2").name == "a" for key in KEYS]
    both = sum(x and y for x, y in zip(first, second)) / len(KEYS)
    assert both == pytest.approx(0.25, abs=0.02)  # 0.5 * 0.5: not the same half of the keys


def test_a_growing_canary_keeps_the_keys_already_on_the_candidate():
    def on_candidate(step: int) -> set[bytes]:
        policy = TrafficPolicy("c", canary=Canary(control="production", candidate="1.1.0", step=step))
        return {key for key in KEYS if assign(policy.weighted_arms(), key, "c").name == "candidate"}

    shares = [on_candidate(step) for step in range(4)]
    assert [round(len(s) / len(KEYS), 2) for s in shares] == [0.01, 0.05, 0.25, 1.0]
    assert shares[0] <= shares[1] <= shares[2] <= shares[3]


def test_a_rolled_back_canary_sends_nothing_to_the_candidate():
    policy = TrafficPolicy("c", canary=Canary(control="production", candidate="1.1.0", step=2, status="rolled-back"))
    assert {assign(policy.weighted_arms(), key, "c").name for key in KEYS[:2000]} == {"control"}


def test_shadow_mirrors_its_share_of_keys_and_always_the_same_ones():
    shadow = Shadow("1.1.0", share=0.3)
    chosen = [mirrored(shadow, key, "s") for key in KEYS]
    assert sum(chosen) / len(KEYS) == pytest.approx(0.3, abs=0.015)
    assert chosen == [mirrored(shadow, key, "s") for key in KEYS]


def test_a_policy_round_trips_through_its_file(tmp_path):
    policy = TrafficPolicy("exp", arms=ABC, shadow=Shadow("1.2.0", 0.5))
    save_policy(tmp_path, policy)
    assert load_policy(tmp_path) == policy
    save_policy(tmp_path, None)
    assert load_policy(tmp_path) is None


@pytest.mark.parametrize(("body", "problem"), [
    ({"experiment": "", "arms": []}, "name the experiment"),
    ({"experiment": "e", "arms": [{"name": "a", "version": "1", "weight": 1}, {"name": "a", "version": "2"}]},
     "arm names must differ"),
    ({"experiment": "e", "arms": [{"name": "a", "version": "1", "weight": -1}]}, "weights must be >= 0"),
    ({"experiment": "e", "canary": {"control": "p", "candidate": "c", "steps": [5, 1, 100]}}, "must rise"),
    ({"experiment": "e", "canary": {"control": "p", "candidate": "c", "steps": [1, 50]}}, "end at 100"),
    ({"experiment": "e", "shadow": {"version": "1", "share": 30}}, "fraction"),
    ({"experiment": "e", "arms": "all"}, "Expected `array`"),
])
def test_a_bad_policy_file_names_the_problem(tmp_path, body, problem):
    with pytest.raises(PolicyInvalid, match=problem):
        parse_policy(json.dumps(body).encode(), tmp_path / "traffic.json")
