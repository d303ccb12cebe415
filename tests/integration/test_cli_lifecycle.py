"""The registry and experiment commands, as a user runs them: each change lands in the files the
consumers poll and in the audit log, and a mistake is one line that says what to fix."""

from __future__ import annotations

import json

import msgspec

from streaminfer.monitoring.experiments.evidence import ExperimentEvidence
from streaminfer.workers.models.registry import ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.routing.traffic import Arm, TrafficPolicy, load_policy
from tests.integration.test_cli import assert_one_line_error, streaminfer
from tests.support.models import EXPERIMENT_MODEL, write_table_model


def repository(tmp_path) -> ModelRepository:
    repo = ModelRepository(tmp_path / "models")
    for version in ("1.0.0", "1.1.0", "1.1.0-fp16"):
        write_table_model(repo, version)
    return repo


def test_promote_rollback_and_history_from_the_command_line(tmp_path):
    repo = repository(tmp_path)
    root = str(repo.root)
    assert streaminfer("models", "promote", EXPERIMENT_MODEL, "1.0.0", "--model-repo", root, "--who", "ana").returncode == 0
    promoted = streaminfer("models", "promote", EXPERIMENT_MODEL, "1.1.0", "--model-repo", root, "--why", "better recall")
    assert promoted.returncode == 0 and "production 1.0.0 -> 1.1.0" in promoted.stdout
    rolled = streaminfer("models", "rollback", EXPERIMENT_MODEL, "--model-repo", root, "--why", "latency")
    assert rolled.returncode == 0 and "1.1.0 -> 1.0.0" in rolled.stdout
    listed = streaminfer("models", "list", "--model-repo", root)
    assert "1.0.0 [production]" in listed.stdout
    history = streaminfer("models", "history", EXPERIMENT_MODEL, "--model-repo", root)
    assert all(word in history.stdout for word in ("ana", "promote", "rollback", "better recall", "latency"))
    assert [e.action for e in ModelRegistry(repo).history(EXPERIMENT_MODEL)] == ["promote", "promote", "rollback"]


def test_a_split_with_an_fp16_arm_is_written_validated_and_audited(tmp_path):
    repo = repository(tmp_path)
    result = streaminfer("experiments", "split", EXPERIMENT_MODEL, "--name", "fp16-ab", "--arm", "control=production:50",
                         "--arm", "fp16=1.1.0-fp16:50", "--model-repo", str(repo.root))
    assert result.returncode == 0, result.stderr
    assert load_policy(repo.root / EXPERIMENT_MODEL) == TrafficPolicy(
        "fp16-ab", arms=(Arm("control", "production", 50), Arm("fp16", "1.1.0-fp16", 50)))
    assert ModelRegistry(repo).history(EXPERIMENT_MODEL)[-1].action == "traffic"
    assert streaminfer("experiments", "stop", EXPERIMENT_MODEL, "--model-repo", str(repo.root)).returncode == 0
    assert load_policy(repo.root / EXPERIMENT_MODEL) is None


def test_mistakes_in_experiment_commands_say_what_to_fix(tmp_path):
    repo = repository(tmp_path)
    root = str(repo.root)
    assert_one_line_error(streaminfer("experiments", "canary", EXPERIMENT_MODEL, "9.9.9", "--name", "c", "--model-repo", root),
                          "no version or alias '9.9.9'", "1.0.0")
    assert_one_line_error(streaminfer("experiments", "canary", EXPERIMENT_MODEL, "1.1.0", "--name", "c", "--steps", "5,1",
                                      "--model-repo", root), "must rise")
    assert_one_line_error(streaminfer("models", "rollback", EXPERIMENT_MODEL, "--model-repo", root),
                          "no earlier version", "models promote")
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({"experiment": "x", "arms": [{"name": "a", "version": "1.0.0", "weight": -2}]}))
    assert_one_line_error(streaminfer("experiments", "set", EXPERIMENT_MODEL, "--file", str(bad), "--model-repo", root),
                          "weights must be >= 0")
    assert load_policy(repo.root / EXPERIMENT_MODEL) is None


def test_report_writes_html_with_plots_and_prints_the_verdict(tmp_path):
    policy = TrafficPolicy("ab", arms=(Arm("control", "1.0.0", 50), Arm("b", "1.1.0", 50)))
    evidence = ExperimentEvidence(EXPERIMENT_MODEL, policy)
    looks = []
    for step in range(5):
        for n in range(200):
            rid = f"{step}-{n}"
            arm = "control" if n % 2 else "b"
            evidence.answered(rid, arm, "v", 10.0 + n % 7, [1], [0.5])
            evidence.labelled(rid, [1 if (arm == "control" or n % 10) else 0])
        looks.append(msgspec.json.encode(evidence.look(1_700_000_000_000 + step * 1000)))
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    (snapshots / "ab.jsonl").write_bytes(b"\n".join(looks) + b"\n")
    result = streaminfer("experiments", "report", "ab", env={"STREAMINFER_EXPERIMENTS__SNAPSHOTS_DIR": str(snapshots)})
    assert result.returncode == 0, result.stderr
    assert "b - control, accuracy" in result.stdout and "split: as configured" in result.stdout
    html = (snapshots / "ab.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    missing = streaminfer("experiments", "report", "ab", env={"STREAMINFER_EXPERIMENTS__SNAPSHOTS_DIR": str(tmp_path)})
    assert_one_line_error(missing, "no looks recorded", "EXPERIMENTS__SNAPSHOTS_DIR")
