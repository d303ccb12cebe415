"""Version tags: set and removed on a version, audited like aliases, validated in one line, shown
by ``models list``, and selecting experiment arms (``--arm b=tag:env=candidate``)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streaminfer.cli.main import app as cli
from streaminfer.workers.errors import RegistryError, UnknownModel
from streaminfer.workers.models.registry import ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.models.tags import TAGS_FILE, parse_changes, parse_selector
from streaminfer.workers.routing.traffic import Arm, Canary, Shadow, TrafficPolicy, load_policy, with_versions
from tests.support.models import write_table_model


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    repository = ModelRepository(tmp_path)
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        write_table_model(repository, version, name="m")
    return ModelRegistry(repository)


def run(registry: ModelRegistry, *args: str):
    return CliRunner().invoke(cli, [*args, "--model-repo", str(registry.repository.root)], env={"COLUMNS": "200"})


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# the document and its audit ----------------------------------------------------------------


def test_tagging_writes_the_tags_document_beside_the_aliases_and_audits_who_why_and_what_changed(registry):
    entry = registry.tag("m", "1.2.0", parse_changes(["env=staging", "experiment=exp-12"]), who="ana", why="try it")
    assert registry.tags("m") == {"1.2.0": {"env": "staging", "experiment": "exp-12"}}
    assert json.loads((registry.repository.root / "m" / TAGS_FILE).read_text()) == registry.tags("m")
    assert (entry.action, entry.who, entry.why, entry.to_version) == ("tag", "ana", "try it", "1.2.0")
    assert entry.detail == "env: - -> staging; experiment: - -> exp-12"
    assert registry.history("m") == [entry]


def test_an_empty_value_or_remove_takes_a_tag_off_and_the_last_one_off_forgets_the_version(registry):
    registry.tag("m", "1.1.0", parse_changes(["env=dev", "owner=ana"]))
    changed = registry.tag("m", "1.1.0", parse_changes(["env=staging", "owner="]))
    assert registry.tags("m") == {"1.1.0": {"env": "staging"}}
    assert changed.detail == "env: dev -> staging; owner: ana -> -"
    registry.tag("m", "1.1.0", parse_changes([], removals=["env"]))
    assert registry.tags("m") == {}
    assert [e.action for e in registry.history("m")] == ["tag"] * 3


def test_tagging_a_version_that_does_not_exist_names_the_versions_there(registry):
    with pytest.raises(UnknownModel, match=r"version '9\.9\.9'.*1\.2\.0"):
        registry.tag("m", "9.9.9", parse_changes(["env=x"]))
    assert registry.history("m") == []


@pytest.mark.parametrize(("assignments", "removals", "message"), [
    (["env"], [], "write KEY=VALUE"),
    (["9env=x"], [], "tag key '9env' is not valid"),
    (["env=has space"], [], "a value is letters"),
    (["env=a:b"], [], "a value is letters"),
    (["env=a", "env=b"], [], "given twice"),
    (["env=a"], ["env"], "given twice"),
    ([], [], "no tag to change"),
])
def test_bad_tags_are_refused_with_what_to_write_instead(assignments, removals, message):
    with pytest.raises(RegistryError, match=message):
        parse_changes(assignments, removals)


# selecting a version by a tag --------------------------------------------------------------


def test_a_selector_finds_the_one_version_carrying_the_tag(registry):
    registry.tag("m", "1.1.0", parse_changes(["env=candidate"]))
    registry.tag("m", "1.2.0", parse_changes(["env=staging"]))
    assert registry.select_tagged("m", "tag:env=candidate") == "1.1.0"
    assert parse_selector("1.1.0") is None


def test_a_selector_matching_no_version_or_several_is_an_error_naming_the_tag(registry):
    with pytest.raises(RegistryError, match="no version of m is tagged env=candidate"):
        registry.select_tagged("m", "tag:env=candidate")
    registry.tag("m", "1.0.0", parse_changes(["env=candidate"]))
    registry.tag("m", "1.2.0", parse_changes(["env=candidate"]))
    with pytest.raises(RegistryError, match=r"tag env=candidate is on 2 versions of m \(1.0.0, 1.2.0\)"):
        registry.select_tagged("m", "tag:env=candidate")
    with pytest.raises(RegistryError, match="tag:KEY=VALUE"):
        registry.select_tagged("m", "tag:env")


def test_with_versions_resolves_every_version_a_policy_names():
    policy = TrafficPolicy("e", arms=(Arm("a", "production", 1), Arm("b", "tag:env=x", 1)), shadow=Shadow("tag:env=y"))
    resolved = with_versions(policy, lambda v: v.upper())
    assert [a.version for a in resolved.arms] == ["PRODUCTION", "TAG:ENV=X"]
    assert resolved.shadow == Shadow("TAG:ENV=Y")
    canary = with_versions(TrafficPolicy("c", canary=Canary("production", "tag:env=x")), lambda v: v + "!")
    assert (canary.canary.control, canary.canary.candidate) == ("production!", "tag:env=x!")


# the command line --------------------------------------------------------------------------


def test_models_tag_sets_tags_that_models_list_shows_and_history_records(registry):
    result = run(registry, "models", "tag", "m", "1.2.0", "env=staging", "experiment=exp-12", "--why", "soak", "--who", "ana")
    assert result.exit_code == 0, result.output
    assert "env=staging, experiment=exp-12" in result.output
    listed = run(registry, "models", "list")
    assert "1.2.0 [production (newest)] {env=staging, experiment=exp-12}" in " ".join(listed.output.split())
    removed = run(registry, "models", "tag", "m", "1.2.0", "--remove", "experiment")
    assert removed.exit_code == 0 and registry.tags("m") == {"1.2.0": {"env": "staging"}}
    history = run(registry, "models", "history", "m")
    assert history.output.count("tag") >= 2 and "soak" in history.output


def test_models_tag_with_a_bad_key_fails_in_one_line_and_changes_nothing(registry):
    line = one_line_error(run(registry, "models", "tag", "m", "1.2.0", "bad key=x"))
    assert "tag key 'bad key' is not valid" in line
    assert registry.tags("m") == {} and registry.history("m") == []


def test_a_split_arm_chosen_by_tag_is_written_as_the_version_it_selects(registry):
    registry.tag("m", "1.1.0", parse_changes(["env=candidate"]))
    result = run(registry, "experiments", "split", "m", "--name", "exp-12",
                 "--arm", "a=production", "--arm", "b=tag:env=candidate", "--why", "tagged arm")
    assert result.exit_code == 0, result.output
    assert "tag:env=candidate selects m 1.1.0" in result.output
    policy = load_policy(registry.repository.root / "m")
    assert policy is not None
    assert [(a.name, a.version, a.weight) for a in policy.arms] == [("a", "production", 1.0), ("b", "1.1.0", 1.0)]
    weighted = run(registry, "experiments", "split", "m", "--name", "exp-13",
                   "--arm", "a=production:90", "--arm", "b=tag:env=candidate:10")
    assert weighted.exit_code == 0, weighted.output
    assert [(a.version, a.weight) for a in load_policy(registry.repository.root / "m").arms] == [
        ("production", 90.0), ("1.1.0", 10.0)]


def test_an_arm_whose_tag_selects_nothing_fails_in_one_line_naming_the_tag(registry):
    line = one_line_error(run(registry, "experiments", "split", "m", "--name", "e",
                              "--arm", "a=production", "--arm", "b=tag:env=nowhere"))
    assert "env=nowhere" in line
    assert load_policy(registry.repository.root / "m") is None
