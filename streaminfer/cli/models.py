"""Commands of the model registry: aliases, tags, promotion, rollback and the audit history.

Running consumers poll the registry's files, so these take effect within
``PIPELINE__ROUTING_POLL_S`` without a restart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import typer

from streaminfer.cli.common import RepoOpt, console, friendly_errors, load_settings
from streaminfer.workers.models.registry import PRODUCTION, AuditEntry, ModelRegistry
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.models.tags import describe as describe_tags
from streaminfer.workers.models.tags import parse_changes
from streaminfer.workers.routing.traffic import load_policy

WhyOpt = typer.Option("", "--why", help="Why: kept in the audit log.")
WhoOpt = typer.Option(None, "--who", help="Who (default: user@host).")


models_app = typer.Typer(no_args_is_help=True, help="The model repository.")


def _registry(model_repo: Path | None) -> ModelRegistry:
    return ModelRegistry(ModelRepository(load_settings(model_repo=model_repo).model_repository))


@models_app.command("list")
@friendly_errors
def list_models(model_repo: Path | None = RepoOpt) -> None:
    """Models, their versions with their aliases and tags, and any running experiment."""
    registry = _registry(model_repo)
    repository = registry.repository
    names = repository.model_names()
    if not names:
        console.print(f"no models in {repository.root}: run `streaminfer models build-demo`")
    for name in names:
        aliases = registry.aliases(name)
        production = registry.production(name)
        tags = registry.tags(name)
        tagged = []
        for version in repository.versions(name):
            names_of = sorted(alias for alias, v in aliases.items() if v == version)
            if version == production and PRODUCTION not in names_of:
                names_of.insert(0, "production (newest)")
            text = f"{version} [{', '.join(names_of)}]" if names_of else version
            tagged.append(text + (f" {{{describe_tags(tags[version])}}}" if tags.get(version) else ""))
        console.print(f"{name}: {', '.join(tagged)}", highlight=False, markup=False)
        policy = load_policy(repository.root / name)
        if policy is not None:
            console.print(f"  experiment {policy.experiment}: {describe_policy(policy)}", highlight=False)


@models_app.command("promote")
@friendly_errors
def promote(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version to point the alias at."),
    alias: str = typer.Option(PRODUCTION, "--alias", help="Alias to move (production, candidate, any name)."),
    why: str = WhyOpt,
    who: str | None = WhoOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """Point an alias (production by default) at a version; running consumers switch live."""
    entry = _registry(model_repo).promote(name, version, alias=alias, who=who, why=why)
    console.print(f"{name}: {alias} {entry.from_version or '-'} -> {entry.to_version}", highlight=False)


@models_app.command("tag")
@friendly_errors
def tag(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version to tag."),
    tags: list[str] = typer.Argument(None, help="KEY=VALUE to set (env=staging experiment=exp-12), KEY= to remove."),
    remove: list[str] = typer.Option([], "--remove", help="Tag key to remove (repeat)."),
    why: str = WhyOpt,
    who: str | None = WhoOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """Set or remove free-form KEY=VALUE tags on a version; an experiment arm can select a version
    by one (--arm b=tag:env=candidate)."""
    registry = _registry(model_repo)
    entry = registry.tag(name, version, parse_changes(tags or [], remove), who=who, why=why)
    now = registry.tags(name).get(version, {})
    console.print(f"{name} {version}: {describe_tags(now) or 'no tags'} ({entry.detail})", highlight=False, markup=False)


@models_app.command("rollback")
@friendly_errors
def rollback(
    name: str = typer.Argument(..., help="Model name."),
    why: str = WhyOpt,
    who: str | None = WhoOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """Return production to the version it had before its last promotion."""
    entry = _registry(model_repo).rollback(name, who=who, why=why)
    console.print(f"{name}: production {entry.from_version} -> {entry.to_version} (rolled back)", highlight=False)


@models_app.command("history")
@friendly_errors
def history(name: str = typer.Argument(..., help="Model name."), model_repo: Path | None = RepoOpt) -> None:
    """Every change to the model's aliases and traffic, oldest first, from the audit log."""
    from rich.table import Table

    entries = _registry(model_repo).history(name)
    if not entries:
        console.print(f"{name}: no changes recorded yet")
        return
    table = Table(title=f"{name}: audit log")
    for column in ("when (UTC)", "who", "action", "alias", "from", "to", "why / detail"):
        table.add_column(column)
    for entry in entries:
        table.add_row(*format_entry(entry))
    console.print(table)


def format_entry(entry: AuditEntry) -> list[str]:
    when = datetime.fromtimestamp(entry.at_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    note = "; ".join(part for part in (entry.why, entry.detail) if part)
    return [when, entry.who, entry.action, entry.alias, entry.from_version or "-", entry.to_version or "-", note]


def describe_policy(policy: object) -> str:
    from streaminfer.workers.routing.traffic import TrafficPolicy

    assert isinstance(policy, TrafficPolicy)
    parts = []
    canary = policy.canary
    if canary is not None:
        share = canary.steps[min(canary.step, len(canary.steps) - 1)]
        parts.append(f"canary {canary.candidate} vs {canary.control}, {canary.status}"
                     + (f" at {share:g}%" if canary.status == "running" else f" ({canary.reason})" if canary.reason else ""))
    elif policy.arms:
        parts.append("split " + ", ".join(f"{a.name}={a.version}:{a.weight:g}" for a in policy.arms))
    if policy.shadow is not None:
        parts.append(f"shadow {policy.shadow.version} on {policy.shadow.share:.0%}")
    return "; ".join(parts)


@models_app.command("build-demo")
@friendly_errors
def build_demo(
    model_repo: Path | None = RepoOpt,
    force: bool = typer.Option(False, help="Rebuild even if the version exists."),
) -> None:
    """Train the breast_cancer demo classifier and write it to the repository."""
    from streaminfer.demo.model import build_demo_mlp, build_demo_model
    from streaminfer.workers.models.repository import ModelRepository

    repository = ModelRepository(load_settings(model_repo=model_repo).model_repository)
    for entry in (build_demo_model(repository, force=force), build_demo_mlp(repository, force=force)):
        accuracy = entry.metadata.metrics.get("holdout_accuracy", float("nan"))
        console.print(f"wrote {entry.name}/{entry.version} to {entry.directory} (holdout accuracy {accuracy:.3f})")


@models_app.command("optimize")
@friendly_errors
def optimize(
    name: str = typer.Argument(..., help="Model to optimize (its newest release)."),
    version: str | None = typer.Option(None, help="Version to start from (default: newest)."),
    model_repo: Path | None = RepoOpt,
) -> None:
    """Write FP16 and INT8 (static, calibrated on the training sample) variants as new versions,
    and compare them with FP32 on held-out data."""
    from rich.table import Table

    from streaminfer.workers.models.repository import ModelRepository
    from streaminfer.workers.models.variants import write_variants

    repository = ModelRepository(load_settings(model_repo=model_repo).model_repository)
    base = repository.resolve(name, version)
    table = Table(title=f"{base.name}/{base.version} variants (held-out rows)")
    for column in ("version", "conv.", "accuracy", "= FP32", "max |Δp|", "rows/s"):
        table.add_column(column, justify="right")
    for r in write_variants(repository, base):
        if r.not_written:
            console.print(f"{r.precision}: not written: {r.not_written}", highlight=False, soft_wrap=True)
            continue
        table.add_row(r.version, str(r.converted_ops), f"{r.holdout_accuracy or float('nan'):.4f}",
                      f"{r.label_agreement:.4f}", f"{r.max_probability_error:.1e}", f"{r.rows_per_s:,.0f}")
    console.print(table)
    console.print("converted: FP16 weights (fp16) or quantized tensors (int8); 0 means the model has no operator "
                  "that precision applies to (tree ensembles), so the variant computes as FP32 does.")
