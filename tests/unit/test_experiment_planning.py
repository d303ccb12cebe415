"""Experiment planning: fixed-horizon sizes as statsmodels computes them (Holm across arms), the
always-valid test's expected size by seeded simulation of the controller's own test, durations
at a rate, and ``experiments plan`` on the command line."""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize
from typer.testing import CliRunner

from streaminfer.cli.main import app as cli
from streaminfer.monitoring.errors import ExperimentPlanInvalid
from streaminfer.monitoring.experiments.evidence import ACCURACY_TAU, LATENCY_TAU_MS
from streaminfer.monitoring.experiments.planning import MetricKind, PlanInput, fixed_horizon_per_arm, plan

PROPORTION, MEAN = MetricKind.PROPORTION, MetricKind.MEAN


@pytest.mark.parametrize(("baseline", "effect", "alpha", "power", "arms"), [
    (0.90, 0.02, 0.05, 0.80, 2),
    (0.90, -0.03, 0.05, 0.90, 2),
    (0.02, 0.01, 0.01, 0.80, 2),   # an error rate
    (0.50, 0.05, 0.05, 0.80, 4),   # three comparisons: Holm's first step at 0.05 / 3
])
def test_a_proportions_fixed_horizon_is_statsmodels_normal_power_at_holms_first_level(baseline, effect, alpha, power, arms):
    given = PlanInput(PROPORTION, baseline, effect, alpha=alpha, power=power, arms=arms)
    expected = NormalIndPower().solve_power(effect_size=proportion_effectsize(baseline + effect, baseline),
                                            alpha=alpha / (arms - 1), power=power, ratio=1.0, alternative="two-sided")
    assert fixed_horizon_per_arm(given) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("sd", "effect", "alpha", "power", "arms"), [
    (40.0, 10.0, 0.05, 0.80, 2),
    (40.0, -5.0, 0.05, 0.90, 3),
    (8.0, 20.0, 0.05, 0.80, 2),    # a large effect: few observations, where t and normal differ
])
def test_a_means_fixed_horizon_is_statsmodels_t_test_power_at_holms_first_level(sd, effect, alpha, power, arms):
    given = PlanInput(MEAN, 120.0, effect, sd=sd, alpha=alpha, power=power, arms=arms)
    expected = TTestIndPower().solve_power(effect_size=abs(effect) / sd, alpha=alpha / (arms - 1), power=power,
                                           ratio=1.0, alternative="two-sided")
    assert fixed_horizon_per_arm(given) == pytest.approx(expected, rel=1e-6)


def test_the_always_valid_size_is_seeded_and_uses_the_controllers_mixing_scale():
    given = PlanInput(PROPORTION, 0.90, 0.02, rate=20.0, simulations=60)
    first, again = plan(given), plan(given)
    assert first == again
    assert given.mixing_scale == ACCURACY_TAU and PlanInput(MEAN, 120, 10, sd=40).mixing_scale == LATENCY_TAU_MS
    seq = first.sequential
    assert seq.look_every == 10  # 20 per second over two arms, a look a second
    assert first.fixed_per_arm == 3205
    assert 0.8 * first.fixed_per_arm < seq.mean < 2 * first.fixed_per_arm and seq.declared == 1.0
    print(f"\n0.90 -> 0.92, alpha 0.05, power 0.8: fixed {first.fixed_per_arm} per arm; always valid "
          f"mean {seq.mean:.0f}, median {seq.median:.0f}, p90 {seq.p90:.0f}")


def test_durations_split_the_rate_over_every_arm():
    made = plan(PlanInput(MEAN, 120.0, -10.0, sd=40.0, arms=3, rate=100.0, simulations=20))
    assert made.fixed_per_arm == math.ceil(TTestIndPower().solve_power(0.25, alpha=0.025, power=0.8))
    assert made.duration_s(made.fixed_per_arm) == pytest.approx(made.fixed_per_arm * 3 / 100.0)
    assert plan(PlanInput(MEAN, 120.0, 10.0, sd=40.0, simulations=5)).duration_s(100) is None


@pytest.mark.parametrize(("given", "says"), [
    (PlanInput(PROPORTION, 0.99, 0.02), "1.01 is not a proportion"),
    (PlanInput(PROPORTION, 0.9, 0.0), "must not be 0"),
    (PlanInput(MEAN, 120.0, 5.0), "needs its standard deviation"),
    (PlanInput(PROPORTION, 0.9, 0.02, arms=1), "at least 2"),
    (PlanInput(PROPORTION, 0.9, 0.02, alpha=1.5), "alpha 1.5"),
    (PlanInput(PROPORTION, 0.9, 0.02, sd=3.0), "drop --sd"),
])
def test_figures_that_cannot_be_planned_say_which_and_why(given, says):
    with pytest.raises(ExperimentPlanInvalid, match=says):
        plan(given)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["experiments", "plan", *args], env={"COLUMNS": "200"})


def test_plan_prints_both_sizes_and_durations_at_the_rate():
    result = invoke("--metric", "proportion", "--baseline", "0.9", "--mde", "0.02", "--rate", "20", "--simulations", "40")
    assert result.exit_code == 0, result.output
    assert "fixed horizon:  3,205 per arm, 6,410 in all, 5.3 min at 20/s" in result.stdout
    assert "always valid:" in result.stdout and "per arm expected" in result.stdout


def test_plan_answers_help_and_gives_one_line_errors_with_exit_2():
    assert invoke("--help").exit_code == 0 and "--mde" in invoke("--help").stdout
    for args, says in ((["--metric", "ratio", "--baseline", "0.9", "--mde", "0.02"], "--metric 'ratio' is not one of"),
                       (["--metric", "mean", "--baseline", "120", "--mde", "5"], "--sd"),
                       (["--metric", "proportion", "--baseline", "0.9", "--mde", "0.02", "--rate", "0"], "rate 0.0")):
        result = invoke(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and says in lines[0], result.stderr


@pytest.fixture
def prometheus():
    """A Prometheus query API answering every instant query with ``answer['rate']``; the
    queries it was asked are in ``answer['queries']``."""
    answer: dict = {"rate": 24.0, "queries": []}

    class Api(BaseHTTPRequestHandler):
        def do_GET(self):
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
            answer["queries"].append(query)
            result = [{"metric": {}, "value": [0, str(answer["rate"])]}] if answer["rate"] is not None else []
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()
        server.server_close()


def test_plan_reads_the_models_labelled_rate_from_prometheus_for_accuracy(prometheus):
    url, answer = prometheus
    result = invoke("--metric", "accuracy", "--baseline", "0.9", "--mde", "0.02", "--prometheus", url,
                    "--model", "breast-cancer", "--simulations", "20")
    assert result.exit_code == 0, result.output
    assert answer["queries"] == ['sum(rate(streaminfer_labels_total{model="breast-cancer",outcome="joined"}[15m]))']
    assert f"rate: 24/s from {url}" in result.stdout
    assert "fixed horizon:  3,205 per arm, 6,410 in all, 4.5 min at 24/s" in result.stdout


def test_plan_says_in_one_line_when_prometheus_sees_no_traffic_or_is_not_asked_right(prometheus):
    url, answer = prometheus
    answer["rate"] = None
    for args, says in ((["--metric", "latency", "--sd", "40", "--model", "m"], "sees no traffic"),
                       (["--metric", "latency", "--sd", "40"], "give both"),
                       (["--metric", "mean", "--sd", "40", "--model", "m"], "no rate for metric 'mean'")):
        result = invoke("--baseline", "120", "--mde", "10", "--prometheus", url, *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and says in lines[0], result.stderr
