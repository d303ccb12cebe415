"""The scaling model: answers/s and cost of a layout, from figures measured on this machine.

A layout (partitions, nodes, cores per node, GPUs) and the measured costs per answer bound the
throughput four ways; the smallest bound is the prediction and names the bottleneck:

- **client CPU**: consumer actors, one per partition of the requests topic at most, as many as
  the cores hold at ``actor_num_cpus`` each, each keeping at most one core busy (one process), at
  1 / (its CPU-seconds per answer) per core: the Kafka hop (fetch, decode,
  encode, produce, commit) plus the model's inference when no GPU runs it;
- **partitions**: the same bound when there are fewer partitions than cores, so the partitions,
  not the cores, cap the consumers (a consumer beyond the partitions owns nothing);
- **broker**: the broker's cores / its CPU-seconds per answer (a request in, an answer out, and
  the reads of both); a broker that runs on the nodes' own cores (``broker_cores=None``, the
  embedded broker on one machine) shares them with the consumers instead, and the pair is bound
  by all the cores / (consumer + broker CPU-seconds per answer), named after the larger share;
- **GPU**: the GPUs × the rows/s one GPU runs the model at at the batch size the pool sends.

Cost per 1,000 answers is what the layout costs for an hour (every core and GPU, busy or not, at
the ``CostSettings`` prices) over the answers of that hour at the predicted throughput.

>>> layout = Layout(partitions=4, nodes=1, cores_per_node=2)
>>> rates = Rates(client_cpu_s=50e-6, inference_cpu_s=5e-6, broker_cpu_s=20e-6)
>>> p = predict(layout, rates, CostSettings(core_hour_price=0.036))
>>> round(p.answers_per_s), p.bottleneck.value, p.consumers
(26667, 'client CPU', 2)
>>> round(p.cost_per_1000, 8)
7.5e-07
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from streaminfer.monitoring.cost.pricing import per_thousand, spend
from streaminfer.monitoring.cost.settings import CostSettings

HOUR_S = 3600


class Bottleneck(str, Enum):
    PARTITIONS = "partitions"
    CLIENT_CPU = "client CPU"
    BROKER = "broker"
    GPU = "GPU"


#: What to add when a bottleneck binds.
REMEDY = {
    Bottleneck.PARTITIONS: "more partitions of the requests topic (then a consumer per core)",
    Bottleneck.CLIENT_CPU: "more cores (nodes), with at least as many partitions as consumers",
    Bottleneck.BROKER: "more broker cores (brokers), or a broker of its own when it shares the nodes",
    Bottleneck.GPU: "more GPUs, or larger batches (pipeline.max_batch_size) for more rows/s per GPU",
}


@dataclass(frozen=True)
class Layout:
    partitions: int
    nodes: int
    cores_per_node: float
    gpus: int = 0
    broker_cores: float | None = None
    """Cores the broker has to itself; ``None``: it runs on the nodes' cores (one machine)."""
    actor_num_cpus: float = 1.0
    """Cores one consumer actor reserves (``pool.actor_num_cpus``)."""

    @property
    def cores(self) -> float:
        return self.nodes * self.cores_per_node


@dataclass(frozen=True)
class Rates:
    """Measured costs per answer, in CPU-seconds (or rows/s for a GPU)."""

    client_cpu_s: float
    """A consumer actor's CPU-seconds per answer besides inference."""
    inference_cpu_s: float
    """The model's CPU-seconds per row on a CPU session (one intra-op thread)."""
    broker_cpu_s: float
    """The broker's CPU-seconds per answer."""
    gpu_rows_per_s: float = math.inf
    """Rows/s one GPU runs the model at the pool's batch size."""

    def consumer_cpu_s(self, on_gpu: bool) -> float:
        return self.client_cpu_s + (0.0 if on_gpu else self.inference_cpu_s)


@dataclass(frozen=True)
class ModelFigures:
    """One model's inference cost: CPU-seconds per row here, rows/s on one GPU by batch size."""

    inference_cpu_s: float
    gpu_rows_per_s_by_batch: dict[int, float]

    def gpu_rows_per_s(self, batch: int) -> float:
        """Rows/s at ``batch``: between two measured sizes, on the straight line between them in
        log-log; outside them, the nearest measured size's rate."""
        sizes = sorted(self.gpu_rows_per_s_by_batch)
        if batch <= sizes[0] or batch >= sizes[-1]:
            return self.gpu_rows_per_s_by_batch[sizes[0] if batch <= sizes[0] else sizes[-1]]
        low = max(size for size in sizes if size <= batch)
        high = min(size for size in sizes if size >= batch)
        if low == high:
            return self.gpu_rows_per_s_by_batch[low]
        at_low, at_high = self.gpu_rows_per_s_by_batch[low], self.gpu_rows_per_s_by_batch[high]
        return at_low * (at_high / at_low) ** (math.log(batch / low) / math.log(high / low))


#: Measured on this machine (2 shared cores) by ``tests/benchmarks/scaling_model.py``, medians of 9
#: runs (``tests/benchmarks/results/scaling_model.md``): a consumer actor's 26.0 CPU-µs per answer
#: less the demo model's 0.87 µs of inference, and the embedded broker's (Tansu, in memory).
CLIENT_CPU_S = 25.1e-6
BROKER_CPU_S = 4.8e-6

#: CPU-seconds per row at batch 256 on one thread here (``scaling_model.py inference``); GPU rows/s
#: on an NVIDIA H100 with CUDA (``tests/benchmarks/results/gpu_inference.md``, FP32; the tree
#: ensemble has no CUDA kernel, so its "GPU" rates are ONNX Runtime's CPU fallback on that machine).
MODELS = {
    "breast-cancer": ModelFigures(0.87e-6, {1: 42_818, 8: 279_398, 64: 986_239, 512: 1_947_035, 4096: 2_214_398, 32768: 1_987_680}),
    "breast-cancer-mlp": ModelFigures(0.17e-6, {1: 6_125, 8: 56_309, 64: 421_616, 512: 2_579_163, 4096: 15_627_057, 32768: 26_497_349}),
    "wide-mlp": ModelFigures(19.3e-6, {1: 8_901, 8: 61_930, 64: 602_784, 512: 4_235_220, 4096: 15_170_427, 32768: 19_626_364}),
}


def measured_rates(model: str = "breast-cancer", batch: int = 256) -> Rates:
    """The figures measured here for ``model`` fed batches of ``batch`` rows."""
    figures = MODELS[model]
    return Rates(CLIENT_CPU_S, figures.inference_cpu_s, BROKER_CPU_S, figures.gpu_rows_per_s(batch))


@dataclass(frozen=True)
class Prediction:
    answers_per_s: float
    bottleneck: Bottleneck
    bounds: dict[Bottleneck, float]
    """Answers/s each resource allows (the client bound is named after partitions or cores)."""
    consumers: int
    cost_per_hour: float
    cost_per_1000: float


def consumers_for(layout: Layout) -> int:
    """One consumer actor per ``actor_num_cpus`` cores, at most one per partition."""
    return min(layout.partitions, math.floor(layout.cores / layout.actor_num_cpus))


def bounds(layout: Layout, rates: Rates) -> dict[Bottleneck, float]:
    on_gpu = layout.gpus > 0
    consumer_s = rates.consumer_cpu_s(on_gpu)
    consumers = consumers_for(layout)
    # a consumer actor is one process: it keeps one core busy at most, whatever Ray reserves for it
    client = Bottleneck.PARTITIONS if consumers == layout.partitions < layout.cores else Bottleneck.CLIENT_CPU
    found = {client: min(consumers, layout.cores) / consumer_s}
    if layout.broker_cores is not None:
        found[Bottleneck.BROKER] = layout.broker_cores / rates.broker_cpu_s
    else:  # one pool of cores for the consumers and the broker
        shared = layout.cores / (consumer_s + rates.broker_cpu_s)
        share = Bottleneck.BROKER if rates.broker_cpu_s > consumer_s else Bottleneck.CLIENT_CPU
        found[share] = min(shared, found.get(share, math.inf))
    if on_gpu:
        found[Bottleneck.GPU] = layout.gpus * rates.gpu_rows_per_s
    return found


def predict(layout: Layout, rates: Rates, prices: CostSettings) -> Prediction:
    """The smallest bound, what names it, and the layout's cost per 1,000 answers at that rate
    (a tie goes to the bound listed first in ``Bottleneck``)."""
    found = bounds(layout, rates)
    bottleneck = min(Bottleneck, key=lambda b: found.get(b, math.inf))
    rate = found[bottleneck]
    cores = layout.cores + (layout.broker_cores or 0.0)
    per_hour = spend(cpu_s=cores * HOUR_S, gpu_s=layout.gpus * HOUR_S, prices=prices)
    return Prediction(rate, bottleneck, found, consumers_for(layout), per_hour, per_thousand(per_hour, rate * HOUR_S))
