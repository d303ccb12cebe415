"""Start-up to the first answer, and memory (PSS) per process group, of `streaminfer run` at defaults.

    PYTHONPATH=. python tests/benchmarks/startup_footprint.py [--runs 3] [--settle-s 5] [-- extra run args]

Each run starts the embedded broker and a demo model repository of its own, launches
``streaminfer run`` as a subprocess with default settings (a fresh Ray temp dir and dashboard port,
so runs never share a Ray), produces one request every 50 ms from the moment of launch, and
reports the seconds from launch to the first answer on the predictions topic (``startup_s``) and
to ``run`` saying it is consuming (``ready_s``: the group has settled, the side actors have
started), with two marks between: ``ray_spawned_s`` (Ray's first process appears: the driver has
imported and checked the broker) and ``consumer_actor_s`` (Ray is up and runs the first consumer
actor). It then waits ``--settle-s`` with the requests still flowing and sums the proportional set
size (PSS: a page shared by n processes counts 1/n in each, so pages shared through Ray's
forkserver are not counted n times) of every process in the run's tree, grouped: Ray's own (GCS,
raylet, autoscaler monitor, log monitor), Ray's agents, Ray's dashboard (head, modules,
forkserver), the driver, each consumer actor, each side actor. It prints one line per run and
the medians; arguments after ``--`` go to ``streaminfer run``, and settings to it through the
environment as usual (``STREAMINFER_RAY__INCLUDE_DASHBOARD=false`` for Ray without its dashboard).
``FOOTPRINT_PYSPY=out.svg`` records the driver with py-spy (``FOOTPRINT_PYSPY_FORMAT=raw`` for
collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streaminfer.broker import EmbeddedBroker, free_port
from streaminfer.demo.model import DEMO_MODEL, INPUT_NAME, build_demo_model, demo_data
from streaminfer.schemas import headers as h
from streaminfer.schemas.codec import request_body
from streaminfer.workers.models.repository import ModelRepository

MIB = 1024 * 1024


def group_of(process: psutil.Process, driver_pid: int) -> str:
    """Which part of the system a process is, from its command line (Ray names its workers
    ``ray::<Class>`` once they hold an actor)."""
    if process.pid == driver_pid:
        return "driver"
    try:
        cmdline = " ".join(process.cmdline())
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if cmdline.startswith("ray::ConsumerActor") or name.startswith("ray::ConsumerAct"):
        return f"consumer:{process.pid}"
    if cmdline.startswith(("ray::ServiceActor", "ray::RegistryActor")):
        return f"side {side_service(process.pid)}:{process.pid}"
    if cmdline.startswith("ray::") and "Agent" not in cmdline:
        return "ray idle workers"
    if "Agent" in cmdline.split(" ")[0]:
        return "ray agents"
    if "dashboard" in cmdline.split(" ")[0] or "ray/dashboard/dashboard.py" in cmdline or "forkserver" in cmdline:
        return "ray dashboard"
    return "ray own"


def side_service(pid: int) -> str:
    """Which service a side actor runs, from the libraries its process has mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "?"
    if "/river/" in maps:
        return "monitor"
    if "/scipy/" in maps:
        return "experiments"
    return "alerting or registry"


def pss_by_group(driver_pid: int) -> dict[str, float]:
    """PSS by group, and the groups' USS (pages no other process maps) under ``uss <group>``: PSS
    also divides shared library pages among processes outside the run (other Python programs
    of the same environment), so it moves with what else runs on the machine; USS does not."""
    root = psutil.Process(driver_pid)
    totals: dict[str, float] = defaultdict(float)
    unique: dict[str, float] = defaultdict(float)
    for process in [root, *root.children(recursive=True)]:
        group = group_of(process, driver_pid)
        if os.environ.get("FOOTPRINT_DEBUG"):
            print(group, process.pid, " ".join(process.cmdline())[:150], file=sys.stderr)
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        totals[group] += info.pss / MIB
        unique[group.split(":")[0]] += info.uss / MIB
    out = {k: v for k, v in totals.items() if ":" not in k and k != "gone"}
    for n, key in enumerate(sorted(k for k in totals if k.startswith("consumer:"))):
        out[f"consumer {n}"] = totals[key]
    for key in sorted(k for k in totals if k.startswith("side ")):
        name = key.split(":")[0]
        out[name] = out.get(name, 0.0) + totals[key]
    out["ray total"] = sum(v for k, v in out.items() if k.startswith("ray "))
    out["streaminfer total"] = sum(v for k, v in out.items() if not k.startswith("ray "))
    unique.pop("gone", None)
    out["uss ray total"] = sum(v for k, v in unique.items() if k.startswith("ray "))
    out["uss streaminfer total"] = sum(v for k, v in unique.items() if not k.startswith("ray "))
    out |= {f"uss {k}": v for k, v in unique.items()}
    return out


async def produce_every(bootstrap: str, topic: str, every_s: float, stop: asyncio.Event) -> int:
    rows = demo_data().x_test
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            request_id = f"s-{sent}"
            body = request_body(request_id, INPUT_NAME, rows[sent % len(rows)][None, :])
            await producer.send(topic, body, key=request_id.encode(),
                                headers=[(h.MODEL_NAME, DEMO_MODEL.encode()), (h.REQUEST_ID, request_id.encode())])
            sent += 1
            await asyncio.sleep(every_s)
    finally:
        await producer.stop()
    return sent


async def first_answer(bootstrap: str, topic: str) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                metadata_max_age_ms=500)
    while True:
        try:
            await consumer.start()
            break
        except Exception:  # noqa: BLE001 - the broker may still be starting
            await asyncio.sleep(0.1)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            if any(batches.values()):
                return time.monotonic()
    finally:
        await consumer.stop()


async def phases(driver_pid: int, launched: float, seen: dict[str, float]) -> None:
    """When Ray's first process (the GCS) and the first consumer actor appear in the run's tree:
    the driver's own start before the first, Ray's start between them."""
    marks = {"ray_spawned_s": "gcs_server", "consumer_actor_s": "ray::ConsumerActor"}
    while len(seen) < len(marks):
        try:
            lines = [" ".join(p.cmdline()) for p in psutil.Process(driver_pid).children(recursive=True)]
        except psutil.Error:
            lines = []
        for key, text in marks.items():
            if key not in seen and any(text in line for line in lines):
                seen[key] = time.monotonic() - launched
        await asyncio.sleep(0.05)


async def printed(output: Path, text: str) -> float:
    """When ``run`` printed ``text`` (it prints "consuming ..." once start_app has returned)."""
    while text not in await asyncio.to_thread(output.read_text, errors="replace"):  # noqa: ASYNC110 - another process writes it
        await asyncio.sleep(0.05)
    return time.monotonic()


async def one_run(extra: list[str], settle_s: float, workdir: Path) -> dict[str, float]:
    broker = EmbeddedBroker().start()
    repo = workdir / "models"
    build_demo_model(ModelRepository(repo))
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = {**os.environ, "STREAMINFER_RAY__DASHBOARD_PORT": str(free_port()), "STREAMINFER_RAY__TEMP_DIR": str(temp),
           "STREAMINFER_METRICS__PORT": "0", "STREAMINFER_METRICS__TARGETS_FILE": str(workdir / "targets.json")}
    command = [sys.executable, "-m", "streaminfer.cli", "run", "--bootstrap", broker.bootstrap,
               "--model-repo", str(repo), *extra]
    if profile := os.environ.get("FOOTPRINT_PYSPY"):  # a flame graph of the driver's start-up
        command = ["py-spy", "record", "--idle", "--rate", "50", "--format", os.environ.get("FOOTPRINT_PYSPY_FORMAT", "flamegraph"),
                   "-o", profile, "--", *command]
    stop = asyncio.Event()
    launched = time.monotonic()
    output = workdir / "run.out"
    process = subprocess.Popen(command, env=env, cwd=workdir, stdout=output.open("wb"),  # noqa: ASYNC220 - one child, started once
                               stderr=(workdir / "run.log").open("wb"))
    try:
        producing = asyncio.create_task(produce_every(broker.bootstrap, "inference.requests", 0.05, stop))
        seen: dict[str, float] = {}
        watching = asyncio.create_task(phases(process.pid, launched, seen))
        answered = await asyncio.wait_for(first_answer(broker.bootstrap, "inference.predictions"), 120)
        ready = await asyncio.wait_for(printed(output, "consuming"), 120)
        watching.cancel()
        await asyncio.sleep(settle_s)
        driver = psutil.Process(process.pid).children()[0] if profile else psutil.Process(process.pid)
        pss = pss_by_group(driver.pid)
        stop.set()
        await producing
    finally:
        for child in psutil.Process(process.pid).children() if profile else [process]:
            child.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        broker.stop()
    return {"startup_s": answered - launched, "ready_s": ready - launched, **seen, **pss}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("extra", nargs="*", help="arguments for streaminfer run (after --)")
    args = parser.parse_args()
    results = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            load = os.getloadavg()
            result = asyncio.run(one_run(args.extra, args.settle_s, Path(tmp)))
            result["load_1m"] = load[0]
            results.append(result)
            print(f"run {index}: " + json.dumps({k: round(v, 2) for k, v in sorted(result.items())}), flush=True)
    keys = sorted({k for r in results for k in r})
    medians = {k: round(statistics.median(r[k] for r in results if k in r), 2) for k in keys}
    print("median: " + json.dumps(medians))


if __name__ == "__main__":
    main()
