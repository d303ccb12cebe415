"""Commands of traffic experiments: start a split, a canary or a shadow, stop it, see it, report it.

A policy is a file beside the model's versions (``workers.routing.traffic``); these commands write it,
validated, and record the change in the audit log. Running consumers apply it within
``PIPELINE__ROUTING_POLL_S``; the experiment controller (on by default in ``run``) gates canaries.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import typer

from streaminfer.cli.common import RepoOpt, console, friendly_errors, load_settings
from streaminfer.cli.models import WhoOpt, WhyOpt, describe_policy
from streaminfer.workers.errors import RegistryError
from streaminfer.workers.models.registry import AuditEntry, ModelRegistry, default_actor
from streaminfer.workers.models.repository import ModelRepository
from streaminfer.workers.models.tags import is_selector
from streaminfer.workers.routing.traffic import (
    Arm,
    Canary,
    Gates,
    Shadow,
    TrafficPolicy,
    load_policy,
    parse_policy,
    save_policy,
    with_versions,
)

if TYPE_CHECKING:
    from streaminfer.monitoring.experiments.planning import Plan

experiments_app = typer.Typer(no_args_is_help=True, help="A/B/n splits, canaries and shadows, with their statistics.")

NameOpt = typer.Option(..., "--name", help="Experiment name: salts the sticky assignment and names the report.")
ShadowOpt = typer.Option(None, "--shadow", help="Also mirror requests to this version or alias.")
ShadowShareOpt = typer.Option(1.0, "--shadow-share", help="Share of requests mirrored (0..1).")


def _apply(model: str, policy: TrafficPolicy | None, model_repo: Path | None, who: str | None, why: str) -> None:
    registry = ModelRegistry(ModelRepository(load_settings(model_repo=model_repo).model_repository))
    if model not in registry.repository.model_names():
        raise RegistryError(f"no model {model!r} in {registry.repository.root} "
                            f"(models: {', '.join(registry.repository.model_names()) or 'none'})")
    if policy is not None:  # tag selectors become the one version each selects, once, here
        policy = with_versions(policy, lambda version: _selected(registry, model, version))
    if policy is not None:  # every arm must name something that exists, before consumers see it
        versions = [a.version for a in policy.arms]
        if policy.canary is not None:
            versions += [policy.canary.control, policy.canary.candidate]
        if policy.shadow is not None:
            versions.append(policy.shadow.version)
        for version in versions:
            registry.resolve_version(model, version)
    directory = registry.repository.root / model
    before = load_policy(directory)
    save_policy(directory, policy)
    registry.record(model, AuditEntry(
        at_ms=_now_ms(), who=who or default_actor(), action="traffic", alias="traffic", why=why,
        detail=f"{describe_policy(before) if before else 'none'} -> "
               f"{(policy.experiment + ': ' + describe_policy(policy)) if policy else 'none'}",
    ))
    console.print(f"{model}: {describe_policy(policy) if policy else 'no experiment: all traffic to production'}",
                  highlight=False)


@experiments_app.command("split")
@friendly_errors
def split(
    model: str = typer.Argument(..., help="Model name."),
    name: str = NameOpt,
    arm: list[str] = typer.Option(..., "--arm", help="ARM=VERSION:WEIGHT, first is the control (repeat); VERSION "
                                  "may be an alias or tag:KEY=VALUE; without weights the arms split evenly."),
    shadow: str | None = ShadowOpt,
    shadow_share: float = ShadowShareOpt,
    why: str = WhyOpt,
    who: str | None = WhoOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """A/B/n: split requests over arms by weight, sticky per request key."""
    arms = _weighted([_parse_arm(text) for text in arm])
    policy = TrafficPolicy(name, arms=arms, shadow=Shadow(shadow, shadow_share) if shadow else None)
    _apply(model, parse_policy_struct(policy), model_repo, who, why)


@experiments_app.command("canary")
@friendly_errors
def canary(
    model: str = typer.Argument(..., help="Model name."),
    candidate: str = typer.Argument(..., help="Version (or alias) to roll out."),
    name: str = NameOpt,
    control: str = typer.Option("production", help="Version or alias it is compared with."),
    steps: str = typer.Option("1,5,25,100", help="Candidate shares in percent, rising to 100."),
    min_requests: int = typer.Option(200, help="Candidate requests per step before it may move on."),
    max_error_rate: float = typer.Option(Gates().max_error_rate, help="Gate: candidate model errors."),
    max_p99_ms: float = typer.Option(Gates().max_p99_ms, help="Gate: candidate end-to-end p99."),
    max_score_shift: float = typer.Option(Gates().max_score_shift, help="Gate: KS distance of scores to control."),
    max_accuracy_drop: float = typer.Option(Gates().max_accuracy_drop, help="Gate: accuracy below control's."),
    why: str = WhyOpt,
    who: str | None = WhoOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """Roll a candidate out step by step; it is rolled back (with an alert) when a gate fails,
    and promoted to production when it passes the last step."""
    try:
        shares = tuple(float(s) for s in steps.split(","))
    except ValueError:
        raise typer.BadParameter(f"--steps takes percentages separated by commas, like 1,5,25,100; got {steps!r}") from None
    gates = Gates(max_error_rate=max_error_rate, max_p99_ms=max_p99_ms, max_score_shift=max_score_shift,
                  max_accuracy_drop=max_accuracy_drop)
    policy = TrafficPolicy(name, canary=Canary(control=control, candidate=candidate, steps=shares,
                                               min_requests=min_requests, gates=gates))
    _apply(model, parse_policy_struct(policy), model_repo, who, why)


@experiments_app.command("shadow")
@friendly_errors
def shadow(
    model: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version (or alias) that runs in the shadows."),
    name: str = NameOpt,
    share: float = typer.Option(1.0, help="Share of requests mirrored (0..1)."),
    why: str = WhyOpt,
    who: str | None = WhoOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """Mirror requests to a version whose outputs go to the shadow topic, never to clients."""
    _apply(model, parse_policy_struct(TrafficPolicy(name, shadow=Shadow(version, share))), model_repo, who, why)


@experiments_app.command("set")
@friendly_errors
def set_policy(
    model: str = typer.Argument(..., help="Model name."),
    file: Path = typer.Option(..., "--file", exists=True, dir_okay=False, help="Traffic policy JSON."),
    why: str = WhyOpt,
    who: str | None = WhoOpt,
    model_repo: Path | None = RepoOpt,
) -> None:
    """Apply a traffic policy written as a file (the format is in the README)."""
    _apply(model, parse_policy(file.read_bytes(), file), model_repo, who, why)


@experiments_app.command("stop")
@friendly_errors
def stop(model: str = typer.Argument(..., help="Model name."), why: str = WhyOpt,
         who: str | None = WhoOpt, model_repo: Path | None = RepoOpt) -> None:
    """End the model's experiment: all traffic to production again."""
    _apply(model, None, model_repo, who, why)


@experiments_app.command("report")
@friendly_errors
def report(
    name: str = typer.Argument(..., help="Experiment name."),
    out: Path | None = typer.Option(None, "--out", help="HTML file (default: next to the snapshots)."),
) -> None:
    """Write the experiment's HTML report (effect over time with its confidence band, traffic
    split, latency by arm) and print the verdict."""
    from streaminfer.reports.experiment import write_report

    settings = load_settings().experiments
    path, verdict = write_report(settings.snapshots_dir, name, out)
    console.print(verdict, highlight=False, soft_wrap=True)
    console.print(f"report: {path.resolve()}")


@experiments_app.command("plan")
@friendly_errors
def plan_command(
    metric: str = typer.Option(..., "--metric", help="accuracy, error-rate or proportion; latency (in ms) or mean."),
    baseline: float = typer.Option(..., "--baseline", help="The control's proportion (0..1) or mean."),
    mde: float = typer.Option(..., "--mde", help="Minimum detectable effect: an absolute difference (0.02, -10)."),
    sd: float | None = typer.Option(None, "--sd", help="A mean's standard deviation per observation."),
    alpha: float | None = typer.Option(None, "--alpha", help="Family-wise error rate (default: experiments.alpha)."),
    power: float = typer.Option(0.8, "--power", help="Chance of declaring an effect of exactly --mde."),
    arms: int = typer.Option(2, "--arms", help="Arms including the control (Holm across the comparisons)."),
    rate: float | None = typer.Option(None, "--rate", help="Observations per second into the experiment, all arms: "
                                      "requests/s for latency, labelled requests/s for accuracy."),
    prometheus: str | None = typer.Option(None, "--prometheus", help="Or read the rate from this Prometheus "
                                          "(the model's last 15 min; needs --model and a named --metric)."),
    model: str | None = typer.Option(None, "--model", help="The model whose rate --prometheus reads."),
    tau: float | None = typer.Option(None, "--tau", help="Mixing scale of the always-valid test (default: the "
                                     "controller's, 0.05 for proportions, 20 ms for means)."),
    simulations: int = typer.Option(200, "--simulations", help="Seeded runs of the always-valid test."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample size per arm (fixed horizon, and the always-valid test's expected size by seeded
    simulation of the controller's own test) and how long that takes at --rate."""
    from streaminfer.monitoring.errors import ExperimentPlanInvalid
    from streaminfer.monitoring.experiments.planning import METRICS, PlanInput, observed_rate, plan

    if metric not in METRICS:
        raise ExperimentPlanInvalid(f"--metric {metric!r} is not one of {', '.join(METRICS)}")
    if prometheus is not None:
        if rate is not None or model is None:
            raise ExperimentPlanInvalid("--prometheus reads the rate of --model: give both, and not --rate")
        rate, query = observed_rate(prometheus, model, metric)
        console.print(f"rate: {rate:.4g}/s from {prometheus}: {query}", highlight=False, soft_wrap=True)
    settings = load_settings().experiments
    made = plan(PlanInput(METRICS[metric], baseline, mde, sd=sd, alpha=settings.alpha if alpha is None else alpha,
                          power=power, arms=arms, rate=rate, look_interval_s=settings.look_interval_s, tau=tau,
                          seed=seed, simulations=simulations))
    console.print(describe_plan(made), highlight=False, soft_wrap=True)


def describe_plan(made: Plan) -> str:
    given, seq = made.given, made.sequential
    m = given.comparisons
    lines = [
        f"{given.kind.value}: baseline {given.baseline:g}, effect {given.mde_text}, alpha {given.alpha:g} "
        f"over {m} comparison{'s' if m > 1 else ''} (Holm: {given.test_alpha:.4g} each), power {given.power:g}",
        f"fixed horizon:  {made.fixed_per_arm:,} per arm, {made.fixed_total:,} in all{_lasting(made, made.fixed_per_arm)}",
        f"always valid:   {seq.mean:,.0f} per arm expected (median {seq.median:,.0f}, 90% within {seq.p90:,.0f})"
        f"{_lasting(made, seq.mean)}; {seq.declared:.0%} of {given.simulations} seeded runs declared every arm "
        f"within {made.cap:,}; a look every {seq.look_every:,} per arm",
    ]
    if given.rate is None:
        lines.append("durations: pass --rate (observations per second into the experiment) or --prometheus and --model")
    return "\n".join(lines)


def _lasting(made: Plan, per_arm: float) -> str:
    seconds = made.duration_s(per_arm)
    if seconds is None:
        return ""
    for unit, size in (("days", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f", {seconds / size:.1f} {unit} at {made.given.rate:g}/s"
    return f", {seconds:.0f} s at {made.given.rate:g}/s"


def _parse_arm(text: str) -> tuple[str, str, float | None]:
    """``ARM=VERSION:WEIGHT`` or ``ARM=VERSION``; VERSION may be ``tag:KEY=VALUE`` (its own
    colon is not a weight's)."""
    arm, sep, rest = text.partition("=")
    version, colon, weight = rest.rpartition(":")
    if arm and sep and colon and version not in ("", "tag"):
        try:
            return arm, version, float(weight)
        except ValueError:
            pass
    if arm and sep and rest and (not colon or rest.startswith("tag:")):
        return arm, rest, None
    raise typer.BadParameter(f"--arm takes ARM=VERSION:WEIGHT, like control=production:50 or b=tag:env=candidate:50; "
                             f"got {text!r}")


def _weighted(parsed: list[tuple[str, str, float | None]]) -> tuple[Arm, ...]:
    """Arms with their weights, or all equal when none gives one; a mix is refused."""
    given = [weight is not None for _, _, weight in parsed]
    if any(given) and not all(given):
        raise typer.BadParameter("--arm: give every arm a weight (ARM=VERSION:WEIGHT) or none (an even split)")
    return tuple(Arm(name, version, 1.0 if weight is None else weight) for name, version, weight in parsed)


def _selected(registry: ModelRegistry, model: str, version: str) -> str:
    """A tag selector's version (said on the terminal); versions and aliases unchanged."""
    if not is_selector(version):
        return version
    selected = registry.select_tagged(model, version)
    console.print(f"{version} selects {model} {selected}", highlight=False)
    return selected


def parse_policy_struct(policy: TrafficPolicy) -> TrafficPolicy:
    """The same validation a policy file gets."""
    return parse_policy(msgspec.json.encode(policy), Path("<command line>"))


def _now_ms() -> int:
    return int(time.time() * 1000)
