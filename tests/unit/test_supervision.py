"""The supervisor's round over the side actors: a failing one is counted down, never fatal."""

from __future__ import annotations

from ray.exceptions import RayError

from streaminfer.actors.service import ServiceState
from streaminfer.running import DriverApp
from streaminfer.settings import AppSettings


class _Method:
    def __init__(self, outcome: object) -> None:
        self._outcome = outcome

    def remote(self):
        async def call():
            if isinstance(self._outcome, BaseException):
                raise self._outcome
            return self._outcome

        return call()


class _SideActor:
    """A stand-in for a side actor's handle: ``ensure_started.remote()`` returns or raises."""

    def __init__(self, outcome: object) -> None:
        self.ensure_started = _Method(outcome)


async def test_a_side_actor_that_fails_to_start_is_counted_down_and_the_round_goes_on():
    app = DriverApp(settings=AppSettings(metrics={"port": None, "targets_file": None}))
    app._start_observability()
    app.monitor = _SideActor(RayError("monitor: RecursionError while reading a request"))
    app.alerting = _SideActor(ServiceState("alerting", 42, None))

    await app.supervise_once()  # must not raise: only the inference path may end `run`
    await app.supervise_once()

    assert app.failure is None
    assert "monitor" not in app.side_states
    assert app.side_states["alerting"].pid == 42
