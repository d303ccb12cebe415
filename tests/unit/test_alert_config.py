"""A wrong rules file fails at load with one message that names the rule and the fix."""

from __future__ import annotations

import textwrap

import pytest

from streaminfer.monitoring.alerting.config import load_config
from streaminfer.monitoring.errors import AlertConfigError

GOOD = """
receivers:
  - name: team
    url: http://127.0.0.1:9/hook
    secret_env: TEAM_SECRET
route:
  receiver: team
  group_by: [alertname, model]
rules:
  - name: Drift
    signal: drift
    where: ["detector=~adwin|evidently"]
    reduce: count
    window_s: 600
    op: ">="
    value: 1
"""


def load(tmp_path, text: str, environ=None):
    path = tmp_path / "rules.yml"
    path.write_text(textwrap.dedent(text))
    return load_config(path, {"TEAM_SECRET": "s3cret"} if environ is None else environ)


def error(tmp_path, text: str, environ=None) -> str:
    with pytest.raises(AlertConfigError) as raised:
        load(tmp_path, text, environ)
    return str(raised.value)


def test_a_good_file_loads_with_the_secret_from_the_environment(tmp_path):
    config, receivers = load(tmp_path, GOOD)
    assert [r.name for r in config.rules] == ["Drift"]
    assert receivers[0].secret.get_secret_value() == "s3cret"


def test_an_unknown_field_names_the_rule_and_the_field(tmp_path):
    message = error(tmp_path, GOOD.replace("    value: 1", "    value: 1\n    treshold: 3"))
    assert "rule 'Drift'" in message and "unknown field 'treshold'" in message and "spelling" in message


def test_a_bad_regex_names_the_rule_and_the_pattern(tmp_path):
    message = error(tmp_path, GOOD.replace("detector=~adwin|evidently", "feature=~mean(radius"))
    assert "rule 'Drift'" in message and "bad regex" in message and "mean(radius" in message


def test_a_missing_secret_says_which_variable_to_set(tmp_path):
    message = error(tmp_path, GOOD, environ={})
    assert "receiver 'team'" in message and "$TEAM_SECRET" in message and "export TEAM_SECRET=" in message


def test_a_route_to_an_unknown_receiver_lists_the_known_ones(tmp_path):
    message = error(tmp_path, GOOD.replace("  receiver: team", "  receiver: pager"))
    assert "'pager'" in message and "team" in message


def test_a_composite_rule_must_refer_to_other_rules(tmp_path):
    text = GOOD + "  - name: Both\n    kind: composite\n    all: [Drift, Missing]\n"
    message = error(tmp_path, text)
    assert "rule 'Both' refers to 'Missing'" in message


def test_a_threshold_rule_without_a_signal_says_what_signals_exist(tmp_path):
    message = error(tmp_path, GOOD.replace("    signal: drift\n", ""))
    assert "rule 'Drift'" in message and "signal" in message and "accuracy" in message


def test_an_anomaly_rule_loads_with_its_season_and_direction(tmp_path):
    text = GOOD + "  - name: Slow\n    kind: anomaly\n    signal: latency_p99_seconds\n    season_s: 3600\n    direction: up\n"
    config, _ = load(tmp_path, text)
    rule = config.rules[-1]
    assert (rule.kind.value, rule.season_s, rule.deviations, rule.direction) == ("anomaly", 3600.0, 5.0, "up")


@pytest.mark.parametrize(("field", "says"), [
    ("direction: sideways", "rule 'Slow', field 'direction': Input should be 'up', 'down' or 'both'"),
    ("deviations: 0", "rule 'Slow', field 'deviations': Input should be greater than 0"),
    ("season_s: -60", "rule 'Slow', field 'season_s': Input should be greater than or equal to 0"),
    ("step_s: 30000", "rule 'Slow': season_s 86400 spans fewer than 4 steps of step_s 30000"),
])
def test_a_bad_anomaly_setting_names_the_rule_and_the_field_in_one_line(tmp_path, field, says):
    message = error(tmp_path, GOOD + f"  - name: Slow\n    kind: anomaly\n    signal: error_rate\n    {field}\n")
    assert says in message and "\n" not in message


def test_anomaly_settings_on_another_kind_of_rule_say_to_set_the_kind(tmp_path):
    message = error(tmp_path, GOOD + "    deviations: 4\n")
    assert message.endswith("rule 'Drift': deviations: only anomaly rules take these; set `kind: anomaly` or remove them")


def test_an_anomaly_rule_without_a_signal_says_what_signals_exist(tmp_path):
    message = error(tmp_path, GOOD + "  - name: Slow\n    kind: anomaly\n")
    assert "rule 'Slow': an anomaly rule needs `signal:`" in message


def test_a_missing_file_says_to_pass_an_existing_one(tmp_path):
    with pytest.raises(AlertConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yml", {})


def test_the_example_rules_file_loads(tmp_path):
    from pathlib import Path

    example = Path(__file__).parents[2] / "infra" / "alerts" / "rules.yml"
    environ = {"STREAMINFER_ML_TEAM_SECRET": "a", "STREAMINFER_ONCALL_SECRET": "b"}
    config, receivers = load_config(example, environ)
    assert {r.name for r in receivers} == {"ml-team", "oncall"}
    assert {r.kind.value for r in config.rules} == {"threshold", "trend", "absence", "composite", "anomaly"}
