"""The alerting rules file: receivers, routing and rules, validated with errors that name the
rule and say what to fix.

::

    receivers:
      - name: oncall
        url: https://alerts.internal:9000/hook
        secret_env: ONCALL_WEBHOOK_SECRET     # the HMAC key, read from the environment
        ca_file: /etc/streaminfer/alerts-ca.pem   # optional: a private CA for https:// receivers
    route:
      receiver: oncall                        # the default
      group_by: [alertname, model]
      routes:
        - matchers: ["severity=critical"]
          receiver: pager
    rules:
      - name: FeatureDrift
        signal: drift
        where: ["detector=~adwin|evidently"]
        reduce: count
        window_s: 600
        op: ">="
        value: 1
      - name: LatencyAnomaly                  # far from a forecast learned from the series
        kind: anomaly
        signal: latency_p99_seconds
        season_s: 86400                       # the season it learns (0: none)
        deviations: 5                         # robust standard deviations
        direction: up                         # up, down or both
        step_s: 300                           # judge 5-minute means (0: every point)

Signals are what the monitoring topics carry: ``drift`` (one sample per drift event, its value
the detector's statistic) and the ``metric`` of quality and health events (``accuracy``,
``roc_auc``, ``log_loss``, ``labels_missing``, ``labels_late``, ``error_rate``,
``latency_p99_seconds``, ``lag_records``), and ``requests_per_second`` derived from each
consumer's ``error_rate`` window (``signals.throughput_of``).
"""

from __future__ import annotations

import functools
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streaminfer.monitoring.alerting.receivers import ReceiverConfig
from streaminfer.monitoring.errors import AlertConfigError
from streaminfer.schemas.notifications import Matcher

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class RuleKind(str, Enum):
    THRESHOLD = "threshold"
    TREND = "trend"
    ABSENCE = "absence"
    COMPOSITE = "composite"
    ANOMALY = "anomaly"


class Reduce(str, Enum):
    LAST = "last"
    COUNT = "count"
    MEAN = "mean"
    MAX = "max"
    MIN = "min"


OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__, "==": float.__eq__, "!=": float.__ne__}


@functools.lru_cache(maxsize=4096)
def parse_matcher(text: str) -> Matcher:
    """``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``; the regex must compile.
    Cached: rules and routes are matched on every evaluation, and their text never changes."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError(f"matcher {text!r} is not name=value, name!=value, name=~regex or name!~regex")
    name, op, value = found.groups()
    value = value.strip('"')
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"matcher {text!r}: bad regex ({exc}); escape special characters or fix the pattern") from exc
    return Matcher(name=name, value=value, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: RuleKind = RuleKind.THRESHOLD
    signal: str | None = None
    where: list[str] = []
    """Matchers on the signal's labels (model, version, feature, detector, kind, ...)."""

    by: list[str] | None = None
    """Labels that tell series apart (default: all of the signal's labels)."""

    reduce: Reduce = Reduce.LAST
    window_s: float = Field(300.0, gt=0)
    op: str = ">"
    value: float = 0.0
    period_s: float = Field(600.0, gt=0)
    """absence: fire when nothing matched for this long."""

    season_s: float = Field(86_400.0, ge=0)
    """anomaly: the season the forecast learns (a day by default; 0 for none)."""

    deviations: float = Field(5.0, gt=0)
    """anomaly: how many robust standard deviations from the forecast make a point anomalous."""

    direction: Literal["up", "down", "both"] = "both"
    """anomaly: flag rises, falls or both."""

    step_s: float = Field(0.0, ge=0)
    """anomaly: learn and judge the mean of each step this long (0: every point)."""

    all: list[str] = []
    any: list[str] = []
    match_on: list[str] = []
    """composite: labels the referenced rules' series must share (default: any series at all).
    (Not `on`: YAML 1.1 reads a bare `on` key as the boolean true.)"""

    for_s: float = Field(0.0, ge=0)
    severity: str = "warning"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @field_validator("op")
    @classmethod
    def _known_op(cls, op: str) -> str:
        if op not in OPS:
            raise ValueError(f"op {op!r} is not one of {', '.join(OPS)}")
        return op

    @field_validator("where")
    @classmethod
    def _matchers_parse(cls, where: list[str]) -> list[str]:
        for text in where:
            parse_matcher(text)
        return where

    @model_validator(mode="after")
    def _complete(self) -> RuleConfig:
        if self.kind is RuleKind.COMPOSITE:
            if not (self.all or self.any) or (self.all and self.any):
                raise ValueError("a composite rule needs exactly one of `all:` or `any:` with rule names")
        elif not self.signal:
            article = "an" if self.kind.value[0] in "aeiou" else "a"
            raise ValueError(f"{article} {self.kind.value} rule needs `signal:` (drift, accuracy, error_rate, ...)")
        if self.kind is RuleKind.ANOMALY and self.season_s and self.season_s < 4 * self.step_s:
            raise ValueError(f"season_s {self.season_s:g} spans fewer than 4 steps of step_s {self.step_s:g}: "
                             f"shorten step_s or lengthen the season")
        misplaced = sorted(self.model_fields_set & {"season_s", "deviations", "direction", "step_s"})
        if misplaced and self.kind is not RuleKind.ANOMALY:
            raise ValueError(f"{', '.join(misplaced)}: only anomaly rules take these; set `kind: anomaly` or remove them")
        return self

    def matchers(self) -> list[Matcher]:
        return [parse_matcher(text) for text in self.where]


class RouteConfig(_Strict):
    receiver: str | None = None
    matchers: list[str] = []
    group_by: list[str] | None = None
    group_wait_s: float | None = Field(None, ge=0)
    group_interval_s: float | None = Field(None, gt=0)
    repeat_interval_s: float | None = Field(None, gt=0)
    routes: list[RouteConfig] = []

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, matchers: list[str]) -> list[str]:
        for text in matchers:
            parse_matcher(text)
        return matchers


class ReceiverEntry(_Strict):
    name: str
    url: str = Field(pattern=r"^https?://")
    secret_env: str
    timeout_s: float = Field(5.0, gt=0)
    max_backoff_s: float = Field(60.0, gt=0)
    headers: dict[str, str] = {}
    ca_file: Path | None = None
    """Relative paths are relative to the rules file."""

    @model_validator(mode="after")
    def _ca_file_for_https(self) -> ReceiverEntry:
        if self.ca_file is not None and not self.url.startswith("https://"):
            raise ValueError(f"ca_file is set but url {self.url} is not https://: use https:// or drop ca_file")
        return self


class AlertingConfig(_Strict):
    receivers: list[ReceiverEntry]
    route: RouteConfig
    rules: list[RuleConfig]
    evaluation_interval_s: float = Field(1.0, gt=0)
    external_url: str = "http://127.0.0.1:8265"

    @model_validator(mode="after")
    def _references_resolve(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique: {names}")
        if self.route.receiver is None:
            raise ValueError("route.receiver (the default receiver) is missing")
        for receiver in _route_receivers(self.route):
            if receiver not in names:
                raise ValueError(f"route names receiver {receiver!r}, which is not under receivers: ({', '.join(names)})")
        rules = [r.name for r in self.rules]
        if len(set(rules)) != len(rules):
            raise ValueError(f"rule names must be unique: {rules}")
        for rule in self.rules:
            for ref in rule.all + rule.any:
                if ref not in rules or ref == rule.name:
                    raise ValueError(f"rule {rule.name!r} refers to {ref!r}, which is not another rule in this file")
        return self


def _route_receivers(route: RouteConfig) -> list[str]:
    found = [route.receiver] if route.receiver else []
    for child in route.routes:
        found += _route_receivers(child)
    return found


def load_config(path: Path, environ: dict[str, str] | None = None) -> tuple[AlertingConfig, list[ReceiverConfig]]:
    """Parse and validate the rules file; resolve each receiver's secret from the environment."""
    environ = dict(os.environ if environ is None else environ)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise AlertConfigError(f"alerting rules file {path} does not exist: pass --rules with an existing file") from exc
    except yaml.YAMLError as exc:
        raise AlertConfigError(f"alerting rules file {path} is not valid YAML: {exc}") from exc
    try:
        config = AlertingConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise AlertConfigError(f"{path}: {_explain(exc, raw)}") from None
    receivers = []
    for entry in config.receivers:
        secret = environ.get(entry.secret_env)
        if not secret:
            raise AlertConfigError(
                f"{path}: receiver {entry.name!r} signs with the secret in ${entry.secret_env}, which is not set: "
                f"export {entry.secret_env}=<a long random string> (and give the receiver the same)"
            )
        ca_file = None
        if entry.ca_file is not None:
            ca_file = (Path(path).parent / entry.ca_file).resolve()
            if not ca_file.is_file():
                raise AlertConfigError(f"{path}: receiver {entry.name!r}: ca_file {ca_file} is not a readable file")
        receivers.append(
            ReceiverConfig(name=entry.name, url=entry.url, secret=secret, timeout_s=entry.timeout_s,
                           max_backoff_s=entry.max_backoff_s, headers=entry.headers, ca_file=ca_file)
        )
    return config, receivers


def _explain(exc: ValidationError, raw: Any) -> str:
    """The first error, with the rule or receiver it is in named rather than indexed."""
    error = exc.errors()[0]
    where = list(error["loc"])
    place = ".".join(str(p) for p in where) or "top level"
    if len(where) >= 2 and where[0] in ("rules", "receivers") and isinstance(where[1], int):
        try:
            name = raw[where[0]][where[1]].get("name", f"#{where[1] + 1}")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = f"#{where[1] + 1}"
        rest = ".".join(str(p) for p in where[2:])
        place = f"{where[0][:-1]} {name!r}" + (f", field {rest!r}" if rest else "")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown field {where[-1]!r}: remove it or check its spelling"
    return f"{place}: {message}"
