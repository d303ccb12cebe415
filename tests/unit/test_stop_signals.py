"""A Ctrl-C that comes while a long-running command starts is kept and stops it once it is up;
the command never goes on deaf to a Ctrl-C it has already had."""

from __future__ import annotations

import asyncio
import os
import signal

from streaminfer.cli.common import StopSignals, until_signal_or


async def test_a_ctrl_c_during_start_up_stops_the_command_once_it_is_up():
    signals = StopSignals()  # made first, as `run`, `monitor` and `alerts run` make it
    os.kill(os.getpid(), signal.SIGINT)  # while "starting"
    await asyncio.sleep(0.05)
    assert signals.received.is_set()
    cleaned = []

    async def cleanup() -> None:
        cleaned.append(True)

    interrupted = await asyncio.wait_for(until_signal_or(asyncio.Event().wait(), cleanup, signals), 5)
    assert cleaned == [True]
    assert interrupted  # the command exits 130 after its clean stop


async def test_a_signal_after_start_up_ends_the_wait_and_runs_the_cleanup():
    cleaned = []

    async def cleanup() -> None:
        cleaned.append(True)

    async def interrupt_soon() -> None:
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    signals = StopSignals()
    interrupter = asyncio.create_task(interrupt_soon())
    interrupted = await asyncio.wait_for(until_signal_or(asyncio.Event().wait(), cleanup, signals), 5)
    await interrupter
    assert cleaned == [True]
    assert not interrupted  # SIGTERM: exit 0
