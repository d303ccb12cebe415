"""Benchmark results as JSON, markdown tables with ratios and added latency, and PNG plots."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LIMIT_A = "ONNX Runtime alone (limit A)"
LIMIT_B = "batch passthrough, 2 processes (limit B)"
LIMIT_B_1 = "batch passthrough, 1 process"
PER_RECORD = "per-record passthrough"
NAIVE, MICRO = "naive", "microbatch"
DEFAULTS = "streaminfer (defaults)"
PLOTS = ("throughput.png", "latency_vs_rate.png", "cpu_memory.png")
STEMS = {"tansu": "bench", "kafka": "bench_kafka"}
"""Names of each broker's result files: ``bench.json``, ``bench.md``, ``bench_throughput.png``..."""


def _fmt(value: object, digits: int = 0, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:+,.{digits}f}" if sign else f"{value:,.{digits}f}"
    return str(value)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _field(result: Any, name: str) -> Any:
    return result.get(name) if isinstance(result, dict) else getattr(result, name, None)


def per_round(rounds: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """Ratios and added latency, each from one round (run k of a system against run k of the
    limit), then the median over rounds. ``rounds``: per system, its ``RunResult`` of each round."""
    def ratio_to(name: str, other: str) -> float | None:
        pairs = zip(rounds.get(name, []), rounds.get(other, []))
        return _median([_field(a, "throughput") / _field(b, "throughput") for a, b in pairs
                        if _field(a, "throughput") and _field(b, "throughput")])

    out: dict[str, dict[str, Any]] = {}
    for name, runs in rounds.items():
        added: dict[str, dict[str, float | None]] = {}
        for label in (_field(runs[0], "latency") or {}):
            for quantile in ("p50_ms", "p99_ms"):
                deltas = []
                for mine, bar in zip(runs, rounds.get(LIMIT_B, [])):
                    a = (_field(mine, "latency") or {}).get(label, {}).get(quantile)
                    b = (_field(bar, "latency") or {}).get(label, {}).get(quantile)
                    if a is not None and b is not None:
                        deltas.append(a - b)
                added.setdefault(label, {})[quantile] = _median(deltas)
        out[name] = {"vs_limit_b": ratio_to(name, LIMIT_B), "vs_limit_b_1": ratio_to(name, LIMIT_B_1),
                     "vs_naive": ratio_to(name, NAIVE), "vs_microbatch": ratio_to(name, MICRO), "added": added}
    return out


def _memory_cell(memory: dict | None) -> str:
    if not memory:
        return "–"
    return f"{_fmt(memory.get('ours_mib'))} / {_fmt(memory.get('ray_mib'))} / {_fmt(memory.get('total_mib'))}"


def throughput_table(results: dict[str, dict], derived: dict[str, dict]) -> list[str]:
    lines = [
        "| system | max msg/s | ×limit B (2 proc.) | ×1-proc. passthrough | ×naive | CPU s /1k | start-up s "
        "| PSS MiB under load: ours / Ray / all | peak RSS MiB (sum) | lost | dup |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | could not run: {r['error']} ||||||||||")
            continue
        d = derived.get(name, {})
        lines.append(
            f"| {name} | {_fmt(r.get('throughput'))} | {_fmt(d.get('vs_limit_b'), 2)} | {_fmt(d.get('vs_limit_b_1'), 2)} | "
            f"{_fmt(d.get('vs_naive'), 1)} | {_fmt(r.get('cpu_s_per_1000'), 3)} | {_fmt(r.get('startup_s'), 1)} | "
            f"{_memory_cell(r.get('memory_under_load'))} | {_fmt(r.get('peak_rss_mib'))} | "
            f"{_fmt(r.get('lost'))} | {_fmt(r.get('duplicates'))} |"
        )
    return lines


def latency_table(results: dict[str, dict], derived: dict[str, dict]) -> list[str]:
    lines = [
        "| system | offered | msg/s | p50 ms | p99 ms | added p50 ms | added p99 ms | generator lag p99 / max ms | answered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for label, step in (r.get("latency") or {}).items():
            if step.get("over_capacity"):
                lines.append(f"| {name} | {label} | {_fmt(step.get('rate'))} | over capacity (not offered) ||||||")
                continue
            added = derived.get(name, {}).get("added", {}).get(label, {})
            lines.append(
                f"| {name} | {label} | {_fmt(step.get('rate'))} | {_fmt(step.get('p50_ms'), 1)} | {_fmt(step.get('p99_ms'), 1)} | "
                f"{_fmt(added.get('p50_ms'), 1, sign=True)} | {_fmt(added.get('p99_ms'), 1, sign=True)} | "
                f"{_fmt(step.get('generator_lag_p99_ms'), 1)} / {_fmt(step.get('generator_lag_max_ms'), 1)} | "
                f"{_fmt(step.get('answered'))}/{_fmt(step.get('sent'))} |"
            )
    return lines


def footprint_table(results: dict[str, dict], meta: dict) -> list[str]:
    lines = ["| system | group | processes | PSS MiB at rest | PSS MiB under load |", "|---|---|---|---|---|"]
    for name, r in results.items():
        rest, load = r.get("memory_at_rest") or {}, r.get("memory_under_load") or {}
        if not name.startswith("streaminfer") or not load:
            continue
        groups = sorted(set(rest.get("groups", {})) | set(load.get("groups", {})))
        for group in groups:
            a, b = rest.get("groups", {}).get(group, {}), load.get("groups", {}).get(group, {})
            lines.append(f"| {name} | {group} | {_fmt(b.get('processes') or a.get('processes'))} | "
                         f"{_fmt(a.get('pss_mib'))} | {_fmt(b.get('pss_mib'))} |")
        for total, label in (("ours_mib", "**ours** (driver, actors)"), ("ray_mib", "**Ray's own**"),
                             ("ray_without_dashboard_mib", "**Ray's own without dashboard modules**"),
                             ("total_mib", "**all**")):
            lines.append(f"| {name} | {label} | | {_fmt(rest.get(total))} | {_fmt(load.get(total))} |")
    bare = meta.get("ray_bare") or {}
    for key, label in (("dashboard", "bare `ray.init()` (dashboard on)"), ("no_dashboard", "bare `ray.init(include_dashboard=False)`")):
        probe = bare.get(key) or {}
        if "total_mib" in probe:
            lines.append(f"| {label} | Ray's own, settled | {sum(g['processes'] for g in probe['groups'].values())} | "
                         f"{_fmt(probe['total_mib'])} | (init {_fmt(probe.get('init_s'), 1)} s) |")
    return lines


def markdown(meta: dict, results: dict[str, dict], derived: dict[str, dict]) -> str:
    lines = [
        f"# Benchmark ({meta['date']})",
        "",
        f"{meta['machine']}; load average {meta.get('load_average', '?')}; broker: {meta['broker']}; "
        f"model: {meta['model']}; medians of {meta['runs']} runs; `{meta['command']}`.",
        "",
        "## Throughput, CPU, memory, start-up",
        "",
        *throughput_table(results, derived),
        "",
        f"Limit B is the best consume → produce → commit passthrough: the pipeline's fetch settings and produce path "
        f"(one record batch per partition), headers kept, one commit per fetch, in as many processes as streaminfer "
        f"runs consumers at defaults (2); `{LIMIT_B_1}` is the same in one process, `{PER_RECORD}` the former limit B "
        "(one `producer.send` per record). Ratios are per round (run k against run k), then the median. Start-up: "
        "launch to first answer. PSS: proportional set size, shared pages split among the processes sharing them; "
        "peak RSS sums resident memory over the tree and counts shared pages once per process.",
        "",
        "## Latency at the same offered rates",
        "",
        *latency_table(results, derived),
        "",
        "Every system is offered the same fixed rates from a load process of its own (generator and collector), "
        f"and half of limit B's throughput of the same round; a rate above {int(0.9 * 100)}% of a system's own "
        "maximum is not offered to it. Latency is request produced → answer consumed. Added: over limit B at the "
        "same rate, same round. Generator lag: how far the sender fell behind its schedule (where large, the "
        "offered rate was lower than stated).",
        "",
        "## Memory by process (PSS)",
        "",
        *footprint_table(results, meta),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, dict], out_dir: Path, stem: str = "bench") -> list[Path]:
    names = [n for n, r in results.items() if r.get("throughput")]
    paths = [out_dir / f"{stem}_{name}" for name in PLOTS]
    color = {n: ("#2a7" if n.startswith("streaminfer") else "#c62" if "limit" in n else "#888") for n in names}

    fig, ax = plt.subplots(figsize=(9, 4.5))
    values = [results[n]["throughput"] for n in names]
    ax.barh(names, values, color=[color[n] for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("maximum sustained throughput (msg/s, log scale)")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("tab10")
    for index, name in enumerate(n for n in names if results[n].get("latency")):
        # a rate most rounds found over capacity is left out, as the table leaves it out
        steps = sorted((s for s in results[name]["latency"].values()
                        if s.get("p99_ms") is not None and not s.get("over_capacity")),
                       key=lambda s: s["rate"])
        if steps:
            rates = [s["rate"] for s in steps]
            ax.plot(rates, [s["p99_ms"] for s in steps], marker="o", color=cmap(index % 10), label=f"{name} p99")
            ax.plot(rates, [s["p50_ms"] for s in steps], marker=".", linestyle="--", color=cmap(index % 10), alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (msg/s, log scale); dashed: p50")
    ax.set_ylabel("end-to-end latency (ms, log scale)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)

    measured = [n for n in names if results[n].get("cpu_s_per_1000") is not None and n != LIMIT_A]
    fig, (cpu_ax, mem_ax) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    cpu_ax.barh(measured, [results[n]["cpu_s_per_1000"] for n in measured], color=[color[n] for n in measured])
    cpu_ax.set_xlabel("CPU seconds per 1,000 answers (whole process tree)")
    ours = [(results[n].get("memory_under_load") or {}).get("ours_mib") or 0 for n in measured]
    ray = [(results[n].get("memory_under_load") or {}).get("ray_mib") or 0 for n in measured]
    mem_ax.barh(measured, ours, color="#2a7", label="the system's own processes (driver, actors)")
    mem_ax.barh(measured, ray, left=ours, color="#68c", label="Ray's own processes")
    mem_ax.set_xlabel("PSS under load (MiB)")
    mem_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths


def write(meta: dict, results: dict[str, dict], derived: dict[str, dict], out_dir: Path,
          stem: str = "bench") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    body = {"meta": meta, "results": results, "derived": derived}
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(body, indent=2))
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown(meta, results, derived))
    return [json_path, md_path, *plots(results, out_dir, stem)]
