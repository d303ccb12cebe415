"""The audit report as one HTML file: the counts on top, then a table per part.

The page is ``PAGE`` (a ``string.Template``); each part is a table built from the report's
structs, every value escaped. No scripts and no external files, so it prints and archives alone.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Iterable, Sequence
from string import Template

from streaminfer.reports.audit import AuditReport

PAGE = Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>audit report $since to $until</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; }
pre { margin: 0; white-space: pre-wrap; }
</style></head>
<body>
<h1>Audit report</h1>
<p>From $since to $until (UTC), generated $generated.</p>
<h2>Counts</h2>
$counts
<h2>Versions served (production)</h2>
$served_totals
$served
<h2>Promotions, rollbacks, alias, tag and traffic changes</h2>
$changes
<h2>Experiments</h2>
$experiments
<h2>Alerts</h2>
$alerts
<h2>Privacy policies in force</h2>
$privacy
<h2>Dead letters by reason</h2>
$dead_letters
<h2>Sources</h2>
$sources
</body></html>
""")


def render(report: AuditReport) -> str:
    counts = report.counts
    letters = report.dead_letters
    reasons = sorted({r for by in letters.by_model.values() for r in by})
    return PAGE.substitute(
        since=_e(report.since or "the oldest record"), until=_e(report.until), generated=_e(report.generated_at),
        counts=_table(["what", "count"], [[name.replace("_", " "), getattr(counts, name)]
                                          for name in counts.__struct_fields__], numeric={1}, anchor="counts"),
        served_totals=_table(["model", "version", "seconds as production"],
                             [[m, v, f"{s:.3f}"] for m, by in report.served_seconds.items() for v, s in by.items()],
                             numeric={2}, anchor="served-totals"),
        served=_table(["model", "version", "from", "to", "seconds"],
                      [[s.model, s.version, s.start, s.end, f"{s.seconds:.3f}"] for s in report.served], numeric={4}),
        changes=_table(["when", "model", "action", "who", "why", "alias", "from", "to", "detail"],
                       [[c.at, c.model, c.action, c.who, c.why, c.alias, c.from_version or "-", c.to_version or "-",
                         c.detail] for c in report.changes], anchor="changes"),
        experiments=_table(["experiment", "model", "kind", "looks", "arms", "outcome", "decisions", "verdict"],
                           [[x.name, x.model, x.kind, x.looks, ", ".join(f"{a}={v}" for a, v in x.arms.items()),
                             x.outcome, "\n".join(f"{d.at} {d.action} {d.gate} {d.detail}".strip() for d in x.decisions),
                             x.verdict] for x in report.experiments], numeric={3}, pre={6, 7}, anchor="experiments"),
        alerts=_table(["alert", "status", "started", "resolved", "labels", "receivers"],
                      [[a.name, a.status, a.starts_at, a.ends_at or "-",
                        ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items())), ", ".join(a.receivers)]
                       for a in report.alerts], anchor="alerts"),
        privacy=_table(["model", "version", "features", "parameters"],
                       [[p.model, p.version, _policy(p.features), _policy(p.parameters)] for p in report.privacy],
                       anchor="privacy"),
        dead_letters=_table(["reason", "count"], [[r, n] for r, n in letters.by_reason.items()] + [["total", letters.total]],
                            numeric={1}, anchor="dead-letters")
        + _table(["model", *reasons], [[m, *(by.get(r, 0) for r in reasons)] for m, by in letters.by_model.items()],
                 numeric=set(range(1, len(reasons) + 1))),
        sources=_table(["part", "read from"], [[k.replace("_", " "), v] for k, v in report.sources.items()]),
    )


def _policy(actions: dict[str, str]) -> str:
    return ", ".join(f"{name}: {action}" for name, action in sorted(actions.items())) or "keep everything"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Collection[int] = (),
           pre: Collection[int] = (), anchor: str = "") -> str:
    rows = list(rows)
    if not rows:
        return "<p>none in this window</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(_cell(i, value, numeric, pre) for i, value in enumerate(row)) + "</tr>" for row in rows
    )
    opening = f'<table id="{_e(anchor)}">' if anchor else "<table>"
    return f"{opening}<tr>{head}</tr>{body}</table>"


def _cell(index: int, value: object, numeric: Collection[int], pre: Collection[int]) -> str:
    text = _e(str(value))
    if index in pre:
        return f"<td><pre>{text}</pre></td>"
    return f'<td class="n">{text}</td>' if index in numeric else f"<td>{text}</td>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
