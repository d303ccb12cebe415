"""What every command-line module shares: consoles, options, settings, errors, signals."""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from streaminfer.schemas.errors import StreamInferError
from streaminfer.settings import AppSettings

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

BootstrapOpt = typer.Option(None, "--bootstrap", "-b", help="Kafka bootstrap HOST:PORT (default: settings).")
RepoOpt = typer.Option(None, "--model-repo", help="Model repository root (default: ./models).")


def friendly_errors(command: F) -> F:
    """Our errors become one line on stderr and exit code 2; Ctrl-C exits 130 without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except StreamInferError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            err_console.print(f"[red]error:[/red] {settings_problems(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def settings_problems(error: ValidationError) -> str:
    """What is wrong with the settings, in one line: where and why, never the value given (pydantic
    would print it, and it may be a password)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "invalid settings: " + "; ".join(problems)


def load_settings(
    bootstrap: str | None = None,
    model_repo: Path | None = None,
    **nested: dict[str, Any],
) -> AppSettings:
    """Environment first, then the flags given on the command line (flags win)."""
    settings = AppSettings()
    update: dict[str, Any] = {}
    if model_repo is not None:
        update["model_repository"] = model_repo
    if bootstrap is not None:
        nested.setdefault("kafka", {})["bootstrap"] = bootstrap
    for section, values in nested.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            update[section] = getattr(settings, section).model_copy(update=values)
    return settings.model_copy(update=update)



class StopSignals:
    """SIGINT and SIGTERM, heard from the moment this is made, for commands that run until
    interrupted; made before start-up, so a Ctrl-C while the command starts is kept and stops it
    as soon as it is up.

    Left to ``asyncio.run``, a Ctrl-C during start-up cancels the main task, and a start-up step
    that swallows the cancellation (Python 3.11's ``asyncio.wait_for`` can, when what it waits for
    finishes at the same moment) leaves the command running and deaf to the Ctrl-C it has used:
    ``run`` was seen still serving a minute after a Ctrl-C that came while it started. A second
    signal aborts at once, without the clean stop (exit 130)."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.interrupted = False
        """A SIGINT (Ctrl-C) was among them: the command exits 130 after its clean stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._heard, sig)

    def _heard(self, sig: signal.Signals) -> None:
        if self.received.is_set():
            raise KeyboardInterrupt  # asked twice: stop waiting for the clean stop
        self.interrupted = sig == signal.SIGINT
        self.received.set()


async def until_signal_or(work: Any, cleanup: Callable[[], Any], signals: StopSignals) -> bool:
    """Await ``work`` until it ends or SIGINT/SIGTERM arrives (or has arrived: ``signals`` is made
    before start-up), then ``cleanup``; raises what ended it. Returns whether a Ctrl-C did, so
    the command exits 130 as a shell expects (``exit_if_interrupted``); SIGTERM exits 0."""
    waiter = asyncio.create_task(work)
    stopper = asyncio.create_task(signals.received.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            waiter.result()
    finally:
        stopper.cancel()
        waiter.cancel()
        await cleanup()
    return signals.interrupted


def exit_if_interrupted(interrupted: bool) -> None:
    """After a clean stop that a Ctrl-C asked for: exit 130, as after any interrupted command."""
    if interrupted:
        raise typer.Exit(130)
