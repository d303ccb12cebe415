"""`streaminfer run --autoscale` refuses what cannot scale, in one line, before anything starts."""

from __future__ import annotations

from typer.testing import CliRunner

from streaminfer.cli.main import app


def test_autoscale_without_consumer_actors_is_refused_before_anything_starts():
    result = CliRunner().invoke(app, ["run", "--autoscale", "--consumers", "0"])
    assert result.exit_code == 2
    assert "--autoscale scales consumer actors" in result.output


def test_autoscale_with_min_over_max_is_refused_in_one_line():
    result = CliRunner().invoke(app, ["run", "--autoscale", "--min-consumers", "4", "--max-consumers", "2"])
    assert result.exit_code == 2
    assert "invalid settings" in result.output and "min_consumers (4) is over scaling.max_consumers (2)" in result.output
