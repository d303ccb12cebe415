"""The scaling model: which resource binds, and where the bottleneck moves as a layout grows."""

from __future__ import annotations

import doctest
import math

import pytest
from typer.testing import CliRunner

from streaminfer import capacity
from streaminfer.capacity import Bottleneck, Layout, ModelFigures, Rates, predict
from streaminfer.cli.main import app
from streaminfer.monitoring.cost.settings import CostSettings

# round figures: 40 µs of Kafka hop, 10 µs of inference per row, 10 µs of broker per answer
RATES = Rates(client_cpu_s=40e-6, inference_cpu_s=10e-6, broker_cpu_s=10e-6, gpu_rows_per_s=100_000)
PRICES = CostSettings(core_hour_price=0.036, gpu_hour_price=3.6)


def test_the_module_examples_hold():
    assert doctest.testmod(capacity).failed == 0


def test_consumers_on_cores_of_their_own_are_bound_by_their_cpu():
    p = predict(Layout(partitions=8, nodes=2, cores_per_node=2, broker_cores=4), RATES, PRICES)
    assert p.consumers == 4
    assert p.bottleneck is Bottleneck.CLIENT_CPU
    assert p.answers_per_s == pytest.approx(4 / 50e-6)


def test_fewer_partitions_than_cores_makes_the_partitions_the_bottleneck():
    p = predict(Layout(partitions=2, nodes=2, cores_per_node=2, broker_cores=4), RATES, PRICES)
    assert (p.consumers, p.bottleneck) == (2, Bottleneck.PARTITIONS)
    assert p.answers_per_s == pytest.approx(2 / 50e-6)


def test_adding_partitions_moves_the_bottleneck_back_to_the_cores():
    assert predict(Layout(3, 1, 4, broker_cores=4), RATES, PRICES).bottleneck is Bottleneck.PARTITIONS
    assert predict(Layout(4, 1, 4, broker_cores=4), RATES, PRICES).bottleneck is Bottleneck.CLIENT_CPU


def test_growing_the_nodes_past_the_brokers_cores_makes_the_broker_the_bottleneck():
    # the broker's 2 cores answer 200,000/s; consumers answer 20,000/s per core
    found = {nodes: predict(Layout(64, nodes, 4, broker_cores=2), RATES, PRICES) for nodes in (2, 3)}
    assert found[2].bottleneck is Bottleneck.CLIENT_CPU and found[2].answers_per_s == pytest.approx(160_000)
    assert found[3].bottleneck is Bottleneck.BROKER and found[3].answers_per_s == pytest.approx(200_000)


def test_a_broker_on_the_nodes_shares_their_cores_with_the_consumers():
    p = predict(Layout(partitions=4, nodes=1, cores_per_node=2), RATES, PRICES)
    assert p.answers_per_s == pytest.approx(2 / 60e-6)
    assert p.bottleneck is Bottleneck.CLIENT_CPU  # the consumers' share is the larger
    heavy_broker = Rates(client_cpu_s=5e-6, inference_cpu_s=1e-6, broker_cpu_s=20e-6)
    assert predict(Layout(4, 1, 2), heavy_broker, PRICES).bottleneck is Bottleneck.BROKER


def test_gpus_take_the_inference_off_the_cores_until_they_bind():
    on_cpu = predict(Layout(64, 1, 8, broker_cores=8), RATES, PRICES)
    one_gpu = predict(Layout(64, 1, 8, gpus=1, broker_cores=8), RATES, PRICES)
    assert on_cpu.answers_per_s == pytest.approx(8 / 50e-6)
    assert one_gpu.answers_per_s == pytest.approx(100_000) and one_gpu.bottleneck is Bottleneck.GPU
    three_gpus = predict(Layout(64, 1, 8, gpus=3, broker_cores=8), RATES, PRICES)
    assert three_gpus.bottleneck is Bottleneck.CLIENT_CPU and three_gpus.answers_per_s == pytest.approx(8 / 40e-6)


def test_a_consumer_keeps_one_core_busy_at_most_whatever_ray_reserves_for_it():
    p = predict(Layout(partitions=8, nodes=1, cores_per_node=2, broker_cores=2, actor_num_cpus=0.5), RATES, PRICES)
    assert p.consumers == 4
    assert p.answers_per_s == pytest.approx(2 / 50e-6)


def test_cost_per_thousand_answers_is_the_layouts_hour_over_its_answers():
    p = predict(Layout(partitions=4, nodes=1, cores_per_node=4, gpus=1, broker_cores=2), RATES, PRICES)
    assert p.cost_per_hour == pytest.approx(6 * 0.036 + 3.6)
    assert p.cost_per_1000 == pytest.approx(p.cost_per_hour * 1000 / (p.answers_per_s * 3600))


def test_gpu_rates_between_measured_batches_follow_a_straight_line_in_log_log():
    figures = ModelFigures(1e-6, {64: 100_000, 512: 800_000, 4096: 1_600_000})
    assert figures.gpu_rows_per_s(64) == 100_000
    assert figures.gpu_rows_per_s(128) == pytest.approx(200_000)
    assert figures.gpu_rows_per_s(8) == 100_000 and figures.gpu_rows_per_s(65_536) == 1_600_000
    assert math.isclose(figures.gpu_rows_per_s(512), 800_000)


def test_capacity_command_prints_the_throughput_and_names_the_bottleneck():
    result = CliRunner().invoke(app, [
        "capacity", "--partitions", "2", "--nodes", "2", "--cores", "4", "--broker-cores", "8",
        "--client-us", "40", "--inference-us", "10", "--broker-us", "10",
    ])
    assert result.exit_code == 0, result.output
    assert "throughput: 40,000 answers/s, bottleneck: partitions" in result.output
    assert "consumer actors: 2" in result.output


def test_capacity_command_with_gpus_names_the_gpu_when_it_binds():
    result = CliRunner().invoke(app, [
        "capacity", "--partitions", "64", "--nodes", "4", "--cores", "16", "--gpus", "1", "--broker-cores", "64",
        "--client-us", "40", "--broker-us", "10", "--gpu-rows-per-s", "500000",
    ])
    assert result.exit_code == 0, result.output
    assert "throughput: 500,000 answers/s, bottleneck: GPU" in result.output


def test_with_the_figures_measured_here_one_h100_binds_the_wide_perceptron_fed_by_64_cores():
    rates = capacity.measured_rates("wide-mlp", batch=256)
    layout = Layout(partitions=64, nodes=4, cores_per_node=16, broker_cores=16)
    assert predict(layout, rates, PRICES).bottleneck is Bottleneck.CLIENT_CPU
    assert predict(Layout(64, 4, 16, gpus=1, broker_cores=16), rates, PRICES).bottleneck is Bottleneck.GPU
    assert predict(Layout(64, 4, 16, gpus=2, broker_cores=16), rates, PRICES).bottleneck is Bottleneck.CLIENT_CPU
