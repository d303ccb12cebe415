"""Benchmark results as JSON, a markdown table with ratios, and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LIMIT_A, LIMIT_B, NAIVE, MICRO = "ONNX Runtime alone (limit A)", "passthrough (limit B)", "naive", "microbatch"


def _fmt(value: object, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def ratios(results: dict[str, dict], name: str) -> dict[str, float | None]:
    mine = results.get(name, {}).get("throughput")

    def ratio(other: str) -> float | None:
        theirs = results.get(other, {}).get("throughput")
        return mine / theirs if mine and theirs else None

    return {"vs_limit_a": ratio(LIMIT_A), "vs_limit_b": ratio(LIMIT_B), "vs_naive": ratio(NAIVE), "vs_microbatch": ratio(MICRO)}


def markdown(meta: dict, results: dict[str, dict]) -> str:
    lines = [
        f"# Benchmark ({meta['date']})",
        "",
        f"{meta['machine']}; broker: {meta['broker']}; model: {meta['model']}; "
        f"medians of {meta['runs']} runs; `{meta['command']}`.",
        "",
        "| system | max msg/s | ×limit B | ×naive | p50/p99 ms @25% | p50/p99 ms @50% | p50/p99 ms @80% | generator lag p99 ms (25/50/80%) | CPU s /1k | peak RSS MiB | lost | dup |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | could not run: {r['error']} |||||||||||")
            continue
        rat = ratios(results, name)
        lat = r.get("latency", {})
        cells = [f"{_fmt(lat.get(k, {}).get('p50_ms'), 1)} / {_fmt(lat.get(k, {}).get('p99_ms'), 1)}" for k in ("25%", "50%", "80%")]
        lag = " / ".join(_fmt(lat.get(k, {}).get("generator_lag_p99_ms"), 1) for k in ("25%", "50%", "80%")) if lat else "–"
        lines.append(
            f"| {name} | {_fmt(r.get('throughput'))} | {_fmt(rat['vs_limit_b'], 2)} | {_fmt(rat['vs_naive'], 1)} | "
            + " | ".join(cells) + f" | {lag} | {_fmt(r.get('cpu_s_per_1000'), 3)} | {_fmt(r.get('peak_rss_mib'))} | "
            f"{_fmt(r.get('lost'))} | {_fmt(r.get('duplicates'))} |"
        )
    lines += ["", "Latency is request produced → answer consumed, under an open-loop (fixed-rate) load at the given share of each "
              "system's own maximum. Generator lag is how far the sender fell behind its schedule; where it is large, the "
              "offered rate was lower than stated. Lost: sent but not answered by the time the system was stopped "
              "(the benchmark waits until no answer has arrived for 20 s). MLServer starts at the latest offset, "
              "has no consumer group and drops what it has not answered when stopped.", ""]
    return "\n".join(lines)


def plots(results: dict[str, dict], out_dir: Path) -> list[Path]:
    names = [n for n, r in results.items() if r.get("throughput")]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    values = [results[n]["throughput"] for n in names]
    ax.barh(names, values, color=["#2a7" if n.startswith("streaminfer") else "#888" for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("maximum sustained throughput (msg/s, log scale)")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    fig.tight_layout()
    throughput_png = out_dir / "throughput.png"
    fig.savefig(throughput_png, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab10")
    for index, name in enumerate(n for n in names if results[n].get("latency")):
        lat = results[name]["latency"]
        loads = [int(k.rstrip("%")) for k in lat]
        color = colors(index % 10)
        ax.plot(loads, [lat[k]["p99_ms"] for k in lat], marker="o", color=color, label=f"{name} p99")
        ax.plot(loads, [lat[k]["p50_ms"] for k in lat], marker=".", linestyle="--", color=color, alpha=0.6, label=f"{name} p50")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (% of the system's own maximum)")
    ax.set_ylabel("end-to-end latency (ms, log scale)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    latency_png = out_dir / "latency_vs_load.png"
    fig.savefig(latency_png, dpi=120)
    plt.close(fig)
    return [throughput_png, latency_png]


def write(meta: dict, results: dict[str, dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    body = {"meta": meta, "results": results, "ratios": {n: ratios(results, n) for n in results if n.startswith("streaminfer")}}
    json_path = out_dir / "bench.json"
    json_path.write_text(json.dumps(body, indent=2))
    md_path = out_dir / "bench.md"
    md_path.write_text(markdown(meta, results))
    return [json_path, md_path, *plots(results, out_dir)]
