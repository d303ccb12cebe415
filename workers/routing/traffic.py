"""Traffic policies: which version answers a request, and which also sees it in the shadows.

A policy lives in ``<root>/<name>/traffic.json`` beside the model's versions and is applied live
by every consumer (they poll the file). One policy per model, one experiment at a time:

- **split** (A/B/n): arms with weights; each request goes to one arm.
- **canary**: a control and a candidate; the candidate's share grows through ``steps`` (percent)
  while its gates hold. The experiment controller moves ``step`` on, or rolls back.
- **shadow**: besides the arm that answers, a ``share`` of requests also runs on a shadow
  version, whose outputs go to the shadow topic and never to clients.

Assignment is sticky: a request's arm is a pure function of its key (the Kafka record key, else
its request id) and the experiment's name, through a stable hash. So one key sees one arm in
every process and after every restart, and as a canary grows, the keys already on the candidate
stay there. Arms name versions or aliases; consumers resolve them when they load the policy.
A tag selector (``tag:env=candidate``, ``workers.models.tags``) is resolved once, when the policy
is applied (``with_versions``), so a tag moved later never moves a running experiment's arm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import msgspec

from streaminfer.workers.errors import PolicyInvalid
from streaminfer.workers.models.registry import write_atomically

TRAFFIC_FILE = "traffic.json"


class Arm(msgspec.Struct, frozen=True):
    name: str
    version: str
    """A version or an alias (``production``, ``candidate``, ...)."""

    weight: float = 0.0


class Gates(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the candidate must hold at every canary step; any one failing rolls it back."""

    max_error_rate: float = 0.05
    """Candidate requests that ended as dead letters of the model's making (not the client's)."""

    max_p99_ms: float = 500.0
    """End-to-end p99 latency of the candidate's answers."""

    max_score_shift: float = 0.25
    """Kolmogorov-Smirnov distance between the candidate's and the control's prediction scores:
    an effect size, so it does not become 'significant' merely by watching longer."""

    max_accuracy_drop: float = 0.02
    """Once labels arrive: fail when the always-valid confidence interval of candidate minus
    control accuracy lies wholly below ``-max_accuracy_drop``."""


class Canary(msgspec.Struct, frozen=True, omit_defaults=True):
    control: str
    candidate: str
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 100.0)
    step: int = 0
    min_requests: int = 200
    """Candidate answers needed at a step before its gates are judged and it may move on."""

    gates: Gates = Gates()
    status: str = "running"
    """``running``, ``rolled-back`` or ``completed``."""

    reason: str = ""


class Shadow(msgspec.Struct, frozen=True):
    version: str
    share: float = 1.0
    """Of all requests, how many are mirrored (0..1)."""


class TrafficPolicy(msgspec.Struct, frozen=True, omit_defaults=True):
    experiment: str
    arms: tuple[Arm, ...] = ()
    """For a split; the first arm is the control. Ignored while a canary is set."""

    canary: Canary | None = None
    shadow: Shadow | None = None

    def weighted_arms(self) -> tuple[Arm, ...]:
        """The arms requests are split over now, candidate first in a canary (see ``assign``)."""
        canary = self.canary
        if canary is None:
            return self.arms
        if canary.status == "running":
            share = canary.steps[min(canary.step, len(canary.steps) - 1)]
        else:
            share = 100.0 if canary.status == "completed" else 0.0
        return (Arm("candidate", canary.candidate, share), Arm("control", canary.control, 100.0 - share))


def with_versions(policy: TrafficPolicy, resolve: Callable[[str], str]) -> TrafficPolicy:
    """The policy with every version it names (arms, canary control and candidate, shadow)
    passed through ``resolve``: how tag selectors become the versions they select."""
    arms = tuple(msgspec.structs.replace(arm, version=resolve(arm.version)) for arm in policy.arms)
    canary = policy.canary
    if canary is not None:
        canary = msgspec.structs.replace(canary, control=resolve(canary.control), candidate=resolve(canary.candidate))
    shadow = policy.shadow
    if shadow is not None:
        shadow = msgspec.structs.replace(shadow, version=resolve(shadow.version))
    return msgspec.structs.replace(policy, arms=arms, canary=canary, shadow=shadow)


def validate(policy: TrafficPolicy, path: Path) -> TrafficPolicy:
    if not policy.experiment:
        raise PolicyInvalid(path, "name the experiment (`experiment`): it salts the sticky hash and names the report")
    if policy.canary is None:
        names = [arm.name for arm in policy.arms]
        if len(set(names)) != len(names):
            raise PolicyInvalid(path, f"arm names must differ, got {names}")
        if any(arm.weight < 0 for arm in policy.arms) or (policy.arms and sum(a.weight for a in policy.arms) <= 0):
            raise PolicyInvalid(path, "arm weights must be >= 0 and add up to more than 0")
    else:
        steps = policy.canary.steps
        if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps) or steps[-1] != 100:
            raise PolicyInvalid(path, f"canary steps must rise within (0, 100] and end at 100, got {list(steps)}")
    if policy.shadow is not None and not 0 <= policy.shadow.share <= 1:
        raise PolicyInvalid(path, f"shadow share is a fraction of requests in [0, 1], got {policy.shadow.share}")
    return policy


def load_policy(model_dir: Path) -> TrafficPolicy | None:
    path = model_dir / TRAFFIC_FILE
    if not path.is_file():
        return None
    return parse_policy(path.read_bytes(), path)


def parse_policy(data: bytes, path: Path) -> TrafficPolicy:
    try:
        policy = msgspec.json.decode(data, type=TrafficPolicy)
    except msgspec.ValidationError as exc:
        raise PolicyInvalid(path, f"{exc}; see the traffic policy format in the README") from exc
    except msgspec.DecodeError as exc:
        raise PolicyInvalid(path, f"not JSON: {exc}") from exc
    return validate(policy, path)


def save_policy(model_dir: Path, policy: TrafficPolicy | None) -> None:
    path = model_dir / TRAFFIC_FILE
    if policy is None:
        path.unlink(missing_ok=True)
        return
    validate(policy, path)
    write_atomically(path, msgspec.json.format(msgspec.json.encode(policy)))


def bucket(key: bytes, salt: str) -> float:
    """A stable position in [0, 1) for ``key``: the same in every process and Python version
    (blake2b, not ``hash()``, which is randomised per process)."""
    digest = hashlib.blake2b(salt.encode() + b"\x00" + key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(arms: tuple[Arm, ...], key: bytes, experiment: str) -> Arm:
    """The arm for ``key``: arms take consecutive stretches of [0, 1) by weight, in order."""
    total = sum(arm.weight for arm in arms)
    point = bucket(key, experiment) * total
    reached = 0.0
    for arm in arms:
        reached += arm.weight
        if point < reached and arm.weight > 0:
            return arm
    return next(arm for arm in reversed(arms) if arm.weight > 0)


def mirrored(shadow: Shadow, key: bytes, experiment: str) -> bool:
    return bucket(key, experiment + "/shadow") < shadow.share
