"""Real Apache Kafka (KRaft) for integration tests, without Docker: a single node
(``ApacheKafkaBroker``) or a three-node cluster (``ApacheKafkaCluster``).

Why: exactly-once, idempotence, fencing and read_committed need real Kafka (the embedded
Tansu broker lacks them) and test machines may have no Docker engine. The official jars
come from Maven Central (``infra/kafka/fetch-jars.sh``) and run as a ``java`` subprocess.
"""

import asyncio
import base64
import contextlib
import shutil
import socket
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streaminfer.broker import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/support/ of a source checkout
FETCH_SCRIPT = REPO_ROOT / "infra" / "kafka" / "fetch-jars.sh"
LOG4J_CONFIG = REPO_ROOT / "infra" / "kafka" / "log4j2.properties"
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0
LOG_TAIL_LINES = 40

# KRaft, every node a broker and a controller; small internal topics make the first
# group/transaction fast. One node: replication 1; a cluster: 3 with min.insync.replicas 2.
_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{broker},CONTROLLER://{controller}
advertised.listeners=PLAINTEXT://{broker}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=4
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
"""
CLUSTER_SIZE = 3
CLUSTER_MIN_INSYNC = 2


class KafkaLauncherError(RuntimeError):
    """Root of the errors raised while providing a local Kafka broker."""


class KafkaJarsError(KafkaLauncherError):
    """The broker jars could not be fetched; the message says how to retry."""


class BrokerStartError(KafkaLauncherError):
    """The broker died or never became ready; carries the tail of its log."""

    def __init__(self, reason: str, log_file: Path) -> None:
        self.log_file = log_file
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        super().__init__(f"{reason}; last lines of {log_file}:\n{tail}")


def ensure_kafka_jars() -> Path:
    """Fetch the broker jars once (cached across runs) and return their folder."""
    result = subprocess.run(["bash", FETCH_SCRIPT], capture_output=True, text=True, check=False)
    if result.returncode == 0 and result.stdout.strip():
        return Path(result.stdout.strip().splitlines()[-1])
    hint = "run it by hand to see why (it needs Maven and access to Maven Central)"
    raise KafkaJarsError(f"infra/kafka/fetch-jars.sh failed: {hint}:\n{result.stderr[-2000:]}")


class ApacheKafkaBroker:
    """One broker+controller JVM whose data, config and ``log_file`` live in ``work_dir``.

    ``start()`` and ``stop()`` are idempotent and blocking; readiness is probed on a private
    event loop, so they work the same from sync fixtures and from async tests.
    """

    def __init__(self, work_dir: Path, libs_dir: Path | None = None, *, node: "_Node | None" = None) -> None:
        self._work_dir = Path(work_dir)
        self._libs_dir = libs_dir
        self.log_file = self._work_dir / "kafka.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._node = node
        self._ports: tuple[int, int] | None = node.ports if node is not None else None
        self._cluster_id = node.cluster_id if node is not None else _new_cluster_id()

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients; only valid once ``start()`` has returned."""
        if self._port is None:
            raise KafkaLauncherError("the broker has no address yet: call start() first")
        return f"127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """The JVM's process id (kept after stop, so tests can check it is gone)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> "ApacheKafkaBroker":
        """Launch the broker and return once it answers metadata requests. After ``stop()``, it
        starts again on the same ports and data directory, with what it held before."""
        if self._spawn():
            self.wait_until_ready()
        return self

    def _spawn(self) -> bool:
        """Format and launch the JVM without waiting; False if it is running already."""
        if self._process is not None and self._process.poll() is None:
            return False
        libs = self._libs_dir or ensure_kafka_jars()
        self._work_dir.mkdir(parents=True, exist_ok=True)
        if self._ports is None:  # a restart keeps its address and its data: clients reconnect to it
            port, controller_port = free_ports(2)
            self._ports = (port, controller_port)
        port, controller_port = self._ports
        config = self._write_properties(port, controller_port)
        self._format_storage(libs, config)
        self._process = self._launch(libs, config)
        self._port = port
        return True

    def wait_until_ready(self) -> None:
        """Block until the broker answers metadata listing every node it expects; stop it and raise
        ``BrokerStartError`` if it dies or takes longer than 90 s."""
        assert self._process is not None and self._port is not None, "start() first"
        expected = CLUSTER_SIZE if self._node is not None else 1
        try:  # A private loop in a helper thread: the caller may already run a loop.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-ready") as pool:
                pool.submit(asyncio.run, self._wait_until_ready(self._process, self._port, expected)).result()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM for a clean shutdown, SIGKILL if it takes over 15 s."""
        if (process := self._process) is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it: no controlled shutdown, and the next
        ``start()`` recovers its logs before it elects leaders again."""
        if (process := self._process) is None or process.poll() is not None:
            return
        process.kill()
        process.wait()

    def __enter__(self) -> "ApacheKafkaBroker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _write_properties(self, port: int, controller_port: int) -> Path:
        broker, controller = f"127.0.0.1:{port}", f"127.0.0.1:{controller_port}"
        data = self._work_dir / "data"
        path = self._work_dir / "server.properties"
        if (node := self._node) is None:
            node_id, voters, replication, min_isr = 1, f"1@{controller}", 1, 1
        else:
            node_id, voters, replication, min_isr = node.node_id, node.voters, CLUSTER_SIZE, CLUSTER_MIN_INSYNC
        path.write_text(_SERVER_PROPERTIES.format(
            node_id=node_id, voters=voters, broker=broker, controller=controller, data=data,
            replication=replication, min_isr=min_isr,
        ))
        return path

    def _format_storage(self, libs: Path, config: Path) -> None:
        """KRaft refuses to start on an unformatted log dir; reuse one already formatted."""
        cluster_id = self._cluster_id  # the same on a restart: the data directory holds it
        tool = [*_java(libs), "kafka.tools.StorageTool", "format", "--ignore-formatted"]
        # joined with "=": an id may start with "-" (1 in 64), which the tool would read as an option
        command = [*tool, f"--cluster-id={cluster_id}", "-c", str(config)]
        with self.log_file.open("ab") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise BrokerStartError(f"storage format exited {result.returncode}", self.log_file)

    def _launch(self, libs: Path, config: Path) -> subprocess.Popen[bytes]:
        """Same process group as pytest on purpose: Ctrl-C stops the broker too."""
        command = [*_java(libs), "-Xmx512m", "kafka.Kafka", str(config)]
        with self.log_file.open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    async def _wait_until_ready(self, process: subprocess.Popen[bytes], port: int, expected: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not await _broker_answers(port, expected):
            if (code := process.poll()) is not None:
                raise BrokerStartError(f"java exited {code} before it was ready", self.log_file)
            if loop.time() > deadline:
                raise BrokerStartError(f"not ready after {START_TIMEOUT_S:.0f} s", self.log_file)
            await asyncio.sleep(0.25)


@dataclass(frozen=True)
class _Node:
    """One node's place in a cluster: its id, its (broker, controller) ports, every voter."""

    node_id: int
    ports: tuple[int, int]
    voters: str
    cluster_id: str


class ApacheKafkaCluster:
    """Three KRaft nodes, each a broker and a controller, on loopback ports, formatted with one
    cluster id: internal topics replicated 3 times, ``min.insync.replicas=2`` (the default for new
    topics too), so one node can be killed without losing an acknowledged record or availability.

    ``start()`` and ``stop()`` are idempotent and blocking, like ``ApacheKafkaBroker``'s; each of
    ``brokers`` can be stopped, killed and started again on its own while the others serve.
    """

    def __init__(self, work_dir: Path, libs_dir: Path | None = None) -> None:
        cluster_id = _new_cluster_id()
        ports = free_ports(2 * CLUSTER_SIZE)
        pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(CLUSTER_SIZE)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{controller}" for i, (_, controller) in enumerate(pairs))
        self.brokers = [
            ApacheKafkaBroker(Path(work_dir) / f"node-{i + 1}", libs_dir, node=_Node(i + 1, pair, voters, cluster_id))
            for i, pair in enumerate(pairs)
        ]
        self._pairs = pairs

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated: clients find the cluster through any that is up."""
        return ",".join(f"127.0.0.1:{broker}" for broker, _ in self._pairs)

    def start(self) -> "ApacheKafkaCluster":
        """Launch every node not running, then wait until each lists all three brokers (no node is
        ready alone: a controller needs a majority of the voters)."""
        spawned = [broker for broker in self.brokers if broker._spawn()]
        try:
            for broker in spawned:
                broker.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """All at once: the last node stopped alone would wait for a quorum to shut down cleanly."""
        with ThreadPoolExecutor(max_workers=CLUSTER_SIZE, thread_name_prefix="kafka-stop") as pool:
            list(pool.map(ApacheKafkaBroker.stop, self.brokers))

    def __enter__(self) -> "ApacheKafkaCluster":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _broker_answers(port: int, expected: int = 1) -> bool:
    """True once the broker lists ``expected`` brokers in metadata (itself among them), i.e. they
    are registered and unfenced."""
    with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):  # one class from 3.11
        # A bare connect first, as aiokafka logs an ERROR for every refused bootstrap.
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), 5)
            cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
            return len(cluster["brokers"]) >= expected
        finally:
            await admin.close()
    return False


def _java(libs: Path) -> list[str]:
    """The JVM command line; Log4j's own shutdown hook is off so shutdown logs survive."""
    java = shutil.which("java")
    if java is None:
        raise KafkaLauncherError("java not found on PATH: install a JRE 17 or newer")
    log4j = [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-Dlog4j.shutdownHookEnabled=false"]
    return [java, *log4j, "-cp", f"{libs}/*"]


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]
