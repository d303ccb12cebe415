"""The HTML report of one experiment, from the looks its controller saved.

Three plots (PNG, embedded, so the file travels alone): each arm's effect against the control
over time with its always-valid confidence band (or, for a canary, the candidate's share and
error rate), the traffic split, and latency by arm. The verdict is plain text on top and on the
terminal.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib
import msgspec

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from streaminfer.errors import NoSnapshots
from streaminfer.monitoring.experiments.evidence import Snapshot


def load_snapshots(snapshots_dir: Path, name: str) -> list[Snapshot]:
    path = snapshots_dir / f"{name}.jsonl"
    if not path.is_file():
        raise NoSnapshots(path)
    decoder = msgspec.json.Decoder(Snapshot)
    snapshots = [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
    if not snapshots:
        raise NoSnapshots(path)
    return snapshots


def verdict(snapshots: list[Snapshot]) -> str:
    """What the latest look says, in a few lines."""
    last = snapshots[-1]
    lines = [f"experiment {last.experiment} on {last.model} ({last.kind}), {len(snapshots)} looks"]
    for arm in last.arms:
        accuracy = f", accuracy {arm.accuracy:.4f} over {arm.labelled} labels" if arm.accuracy is not None else ""
        lines.append(f"  {arm.arm} ({arm.version}): {arm.requests} requests, error rate {arm.error_rate:.2%}, "
                     f"p99 {_ms(arm.p99_ms)}{accuracy}")
    if last.kind == "split":
        lines.append(f"  split: {'SAMPLE RATIO MISMATCH' if last.split_mismatch else 'as configured'} "
                     f"(chi-square p={last.split_p_value:.3g}); comparisons are "
                     f"{'not to be trusted' if last.split_mismatch else 'valid'}")
        for effect in last.effects:
            state = "significant" if effect.significant else "not significant (keep watching)"
            lines.append(f"  {effect.arm} - control, {effect.outcome}: {effect.difference:+.4g} "
                         f"[{effect.lower:+.4g}, {effect.upper:+.4g}], Holm-adjusted always-valid p={effect.adjusted_p:.3g}: "
                         f"{state}")
    if last.kind == "canary":
        decisions = [s.verdict for s in snapshots if s.verdict is not None and s.verdict.action != "wait"]
        status = decisions[-1] if decisions else None
        lines.append(f"  canary at step {last.canary_step} ({last.canary_share:g}% to the candidate)"
                     + (f"; last decision: {status.action} {status.gate} {status.detail}" if status else ""))
    if last.shadow is not None:
        s = last.shadow
        lines.append(f"  shadow: {s.compared} compared, agreement {_pct(s.agreement)}, {s.shadow_errors} shadow errors, "
                     f"KS distance {_num(s.ks_statistic)} (p={_num(s.ks_p_value)}), p50 primary {_ms(s.primary_p50_ms)} "
                     f"vs shadow {_ms(s.shadow_p50_ms)}")
    return "\n".join(lines)


def write_report(snapshots_dir: Path, name: str, out: Path | None = None) -> tuple[Path, str]:
    snapshots = load_snapshots(snapshots_dir, name)
    text = verdict(snapshots)
    figures = [_effect_figure(snapshots), _split_figure(snapshots), _latency_figure(snapshots)]
    path = out or snapshots_dir / f"{name}.html"
    body = "".join(f'<img src="data:image/png;base64,{_png(fig)}" style="max-width:100%"/>' for fig in figures)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>experiment {html.escape(name)}</title></head>"
        f"<body style='font-family:sans-serif'><h1>Experiment {html.escape(name)}</h1>"
        f"<pre>{html.escape(text)}</pre>{body}</body></html>"
    )
    return path, text


def _times(snapshots: list[Snapshot]) -> list[Any]:
    """Datetimes, typed Any: matplotlib plots them through its date converter, but its stubs
    accept only numbers and arrays for x."""
    return [datetime.fromtimestamp(s.at_ms / 1000, tz=timezone.utc) for s in snapshots]


def _effect_figure(snapshots: list[Snapshot]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    times = _times(snapshots)
    if snapshots[-1].kind == "canary":
        ax.plot(times, [s.canary_share or 0 for s in snapshots], label="candidate share %", drawstyle="steps-post")
        ax2 = ax.twinx()
        for arm in ("candidate", "control"):
            ax2.plot(times, [next((a.error_rate for a in s.arms if a.arm == arm), 0) * 100 for s in snapshots],
                     linestyle="--", label=f"{arm} error rate %")
        ax2.legend(loc="upper right")
        ax.set_title("canary: candidate share and error rate by arm")
    else:
        keys = sorted({(e.arm, e.outcome) for s in snapshots for e in s.effects})
        for arm, outcome in keys:
            points = [(t, e) for t, s in zip(times, snapshots) for e in s.effects if (e.arm, e.outcome) == (arm, outcome)]
            if not points or outcome != "accuracy":
                continue
            xs = [t for t, _ in points]
            ax.plot(xs, [e.difference for _, e in points], label=f"{arm} - control")
            ax.fill_between(xs, [max(e.lower, -1) for _, e in points], [min(e.upper, 1) for _, e in points], alpha=0.2)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title("accuracy difference to control, with its always-valid confidence band")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return fig


def _split_figure(snapshots: list[Snapshot]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 3))
    arms = [a.arm for a in snapshots[-1].arms]
    times = _times(snapshots)
    counts = [[next((a.requests for a in s.arms if a.arm == arm), 0) for s in snapshots] for arm in arms]
    ax.stackplot(times, counts, labels=arms)
    ax.set_title("requests per arm (cumulative)")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return fig


def _latency_figure(snapshots: list[Snapshot]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 3))
    times = _times(snapshots)
    for arm in [a.arm for a in snapshots[-1].arms]:
        for quantile, style in (("p50_ms", "-"), ("p99_ms", ":")):
            values = [next((getattr(a, quantile) for a in s.arms if a.arm == arm), None) for s in snapshots]
            ax.plot(times, [v if v is not None else float("nan") for v in values], linestyle=style,
                    label=f"{arm} {quantile[:3]}")
    ax.set_ylabel("ms, end to end")
    ax.set_title("latency by arm")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "-"


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "-"


def _num(value: float | None) -> str:
    return f"{value:.3g}" if value is not None else "-"
