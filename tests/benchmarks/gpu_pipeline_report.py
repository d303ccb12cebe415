"""The GPU pipeline benchmark's report: a markdown table and a plot from its JSON results
(``tests.benchmarks.gpu_pipeline`` measures; this only presents)."""

from __future__ import annotations

from pathlib import Path


def markdown(report: dict) -> str:
    results = report["results"]
    cpu = next((r for r in results if r.get("config") == "cpu" and "error" not in r), None)
    lines = [f"# The whole pipeline on {report['device']} against its CPUs ({report['cpu']})", "",
             (f"ONNX Runtime {report['onnxruntime']}; embedded broker, local Ray, consumer actors; the wide perceptron "
              "(3×1,024 units). Throughput: a backlog drained; latency: at a fixed offered rate, request record "
              "timestamp to answer read. `python -m tests.benchmarks.gpu_pipeline measure DIR OUT`."), "",
             "| configuration | providers the sessions got | consumers | batch | rows/s | answers/s | × CPU | "
             "p50 ms | p99 ms | at req/s | start s |", "|---" * 11 + "|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error']} |" + " |" * 9)
            continue
        ratio = f"{r['rows_per_s'] / cpu['rows_per_s']:.2f}×" if cpu else "–"
        providers = ", ".join(p.replace("ExecutionProvider", "") for p in r["providers"])
        lines.append(f"| {r['config']} | {providers} | {r['consumers']} | {r['max_batch_size']} | {r['rows_per_s']:,.0f} | "
                     f"{r['answers_per_s']:,.0f} | {ratio} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
                     f"{r['offered_per_s']:,.0f} | {r['start_s']:.1f} |")
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "–"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if "error" not in r]
    if not ok:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["config"] for r in ok]
    left.bar(names, [r["rows_per_s"] for r in ok])
    left.set(ylabel="rows/s (backlog drained)", title="throughput")
    right.bar(names, [r["p99_ms"] or 0 for r in ok], label="p99")
    right.bar(names, [r["p50_ms"] or 0 for r in ok], label="p50")
    right.set(ylabel="ms", title=f"latency at {ok[0]['offered_per_s']:,.0f} requests/s")
    right.legend()
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"streaminfer end to end: {report['device']} vs CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
