"""`streaminfer cost report` without Prometheus: its table rows, its plot, and its errors on bad input.

Why: the report is read by people deciding between versions; a version without answers must show
no figure rather than a division by zero, and a mistyped option must say what to write instead.
(The report against a real Prometheus and a real run is in tests/integration/test_prediction_cache.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streaminfer.cli.cost import parse_duration, parse_until
from streaminfer.cli.main import app as cli
from streaminfer.errors import NothingToReport, ReportRangeInvalid
from streaminfer.reports.cost import VersionCost, cost_rows, write_plot

CHEAP = VersionCost("m", "1.0.0-int8", answers=4000, consumer_cpu_s=2.0, inference_cpu_s=1.0, gpu_s=0.0, spend=0.003)
IDLE = VersionCost("m", "2.0.0", answers=0, consumer_cpu_s=0.5, inference_cpu_s=0.0, gpu_s=0.0, spend=0.0001)


def test_rows_show_seconds_and_money_per_thousand_answers():
    assert cost_rows([CHEAP]) == [["m", "1.0.0-int8", "4,000", "0.5", "0.25", "0", "0.00075", "0.003"]]


def test_a_version_without_answers_shows_no_per_thousand_figures():
    assert cost_rows([IDLE])[0][3:7] == ["-", "-", "-", "-"]


def test_the_plot_falls_back_to_an_html_table_when_asked_for_html(tmp_path: Path):
    path = write_plot({("m", "1"): [(1_800_000_000.0, 0.5)]}, tmp_path / "cost.html", "EUR", "cost")
    text = path.read_text()
    assert "EUR per 1,000 answers" in text and "<td>0.5</td>" in text and "2027-01-15 08:00:00" in text


def test_a_png_plot_is_written_with_matplotlib(tmp_path: Path):
    path = write_plot({("m", "1"): [(1_800_000_000.0, 0.5), (1_800_000_060.0, 0.4)]}, tmp_path / "c.png", "USD", "cost")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_no_answers_in_the_range_is_nothing_to_report(tmp_path: Path):
    with pytest.raises(NothingToReport, match="no answers with a cost"):
        write_plot({}, tmp_path / "cost.png", "USD", "cost")


def test_durations_and_times_are_read_or_refused_naming_the_option():
    assert parse_duration("90s", "--since") == 90 and parse_duration("1.5h", "--since") == 5400
    assert parse_until("2027-01-15T08:00") == 1_800_000_000.0
    with pytest.raises(ReportRangeInvalid, match="--step '0m'"):
        parse_duration("0m", "--step")
    with pytest.raises(ReportRangeInvalid, match="--until 'yesterday'"):
        parse_until("yesterday")


def test_bad_input_is_one_line_on_stderr_and_exit_code_2():
    result = CliRunner().invoke(cli, ["cost", "report", "--since", "a week"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --since 'a week': write a duration such as 90s, 15m, 6h or 2d"


def test_a_prometheus_that_does_not_answer_is_one_line_naming_it():
    result = CliRunner().invoke(cli, ["cost", "report", "--prometheus", "http://127.0.0.1:9", "--since", "1h"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: Prometheus at http://127.0.0.1:9 did not answer")
