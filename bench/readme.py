"""The README's benchmark figures, regenerated from the committed results (never typed in).

    python -m bench.readme [RESULTS_DIR] [README]

Replaces what stands between ``BEGIN`` and ``END`` in the README with a summary of
``RESULTS_DIR/bench_kafka.json`` and ``bench.json`` (Apache Kafka, Tansu; those present): limit B, streaminfer's ratio to it, latency at each offered rate and
what streaminfer adds over the passthrough, memory (PSS) and start-up, and links to the plots.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import report

BEGIN = "<!-- bench:begin (python -m bench.readme) -->"
END = "<!-- bench:end -->"
RESULTS = Path("tests/benchmarks/results")


def _f(value: object, digits: int = 0, sign: bool = False) -> str:
    return report._fmt(value, digits, sign)


def summary(body: dict, results_dir: Path, stem: str = "bench") -> str:
    meta, results, derived = body["meta"], body["results"], body.get("derived", {})
    limit = results.get(report.LIMIT_B, {})
    ours = results.get(report.DEFAULTS, {})
    ratio = derived.get(report.DEFAULTS, {})
    link = results_dir.as_posix()
    lines = [
        f"Last run: {meta['date']}, {meta['machine']}, load average {meta.get('load_average', '?')}, "
        f"{meta['broker']}, medians of {meta['runs']}, `{meta['command']}`.",
        "",
        "| system | max msg/s | ×limit B | CPU s /1k | start-up s | PSS MiB under load (ours / Ray / all) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            continue
        memory = r.get("memory_under_load") or {}
        lines.append(f"| {name} | {_f(r.get('throughput'))} | {_f(derived.get(name, {}).get('vs_limit_b'), 2)} | "
                     f"{_f(r.get('cpu_s_per_1000'), 3)} | {_f(r.get('startup_s'), 1)} | "
                     f"{_f(memory.get('ours_mib'))} / {_f(memory.get('ray_mib'))} / {_f(memory.get('total_mib'))} |")
    lines += ["", f"streaminfer at defaults: {_f(ours.get('throughput'))} msg/s, "
              f"{_f(ratio.get('vs_limit_b'), 2)}× limit B ({_f(limit.get('throughput'))} msg/s) and "
              f"{_f(ratio.get('vs_limit_b_1'), 2)}× the one-process passthrough. Latency at the same offered rates "
              "(p50 / p99 ms, added over limit B in brackets, generator lag p99):", ""]
    for label, step in (ours.get("latency") or {}).items():
        if step.get("over_capacity"):
            lines.append(f"- {label} ({_f(step.get('rate'))} msg/s): over capacity")
            continue
        added = ratio.get("added", {}).get(label, {})
        lines.append(f"- {label} ({_f(step.get('rate'))} msg/s): {_f(step.get('p50_ms'), 1)} / {_f(step.get('p99_ms'), 1)} "
                     f"({_f(added.get('p50_ms'), 1, True)} / {_f(added.get('p99_ms'), 1, True)}), "
                     f"lag {_f(step.get('generator_lag_p99_ms'), 1)} ms")
    bare = meta.get("ray_bare") or {}
    with_dashboard, without = (bare.get("dashboard") or {}), (bare.get("no_dashboard") or {})
    if "total_mib" in with_dashboard and "total_mib" in without:
        lines += ["", f"A bare local Ray costs {_f(with_dashboard['total_mib'])} MiB PSS with its dashboard and "
                  f"{_f(without['total_mib'])} MiB with `include_dashboard=False`."]
    lines += ["", f"Full tables: [`{stem}.md`]({link}/{stem}.md). Plots: [throughput]({link}/{stem}_throughput.png), "
              f"[latency against offered rate]({link}/{stem}_latency_vs_rate.png), "
              f"[CPU and memory]({link}/{stem}_cpu_memory.png)."]
    return "\n".join(lines)


TITLES = {"bench_kafka": "On Apache Kafka", "bench": "On the embedded broker (Tansu)"}


def summaries(results_dir: Path) -> str:
    """A summary per broker whose results are there, Apache Kafka first."""
    parts = [f"**{title}.** " + summary(json.loads((results_dir / f"{stem}.json").read_text()), results_dir, stem)
             for stem, title in TITLES.items() if (results_dir / f"{stem}.json").is_file()]
    return "\n\n".join(parts)


def regenerate(readme: Path, results_dir: Path = RESULTS) -> str:
    text = readme.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + summaries(results_dir) + "\n" + text[stop:]
    readme.write_text(new)
    return new


if __name__ == "__main__":
    args = sys.argv[1:]
    regenerate(Path(args[1]) if len(args) > 1 else Path("README.md"), Path(args[0]) if args else RESULTS)
