"""A secured Apache Kafka 4.x (KRaft, one node) for tests: every listener encrypted, every client
authenticated, every request authorized.

Listeners (all on loopback), each a way managed clusters are reached:

- ``SCRAM``: SASL_SSL with SCRAM-SHA-512 (MSK, Redpanda, Aiven's SASL); users are created when
  the storage is formatted (``--add-scram``), before the broker first starts.
- ``MTLS``: SSL with client certificates required (MSK's and Aiven's mutual TLS).
- ``OAUTH``: SASL_SSL with OAUTHBEARER and Kafka's built-in development validator, which takes
  unsigned JWS tokens (a real identity provider is not reachable here).
- ``PLAIN``: PLAINTEXT, principal ``User:ANONYMOUS``, for measuring what security costs on the
  same broker (it holds no ACL unless one is granted).
- ``INTERNAL`` and ``CONTROLLER``: the node talking to itself, over mutual TLS as ``broker``.

``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: a principal may do only what
an ACL grants. ``broker`` and ``admin`` are super users. The common name of a client certificate
is its principal (``CN=app`` → ``User:app``), so one ACL list serves SCRAM, mTLS and OAuth.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from streaminfer.broker import free_ports
from tests.support.certificates import CertificateAuthority, Identity
from tests.support.kafka_jvm import BrokerStartError, _java, ensure_kafka_jars

START_TIMEOUT_S = 120.0
ADMIN = "admin"
LISTENERS = ("INTERNAL", "CONTROLLER", "SCRAM", "MTLS", "OAUTH", "PLAIN")

_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{CONTROLLER}
listeners=INTERNAL://{INTERNAL},CONTROLLER://{CONTROLLER},SCRAM://{SCRAM},MTLS://{MTLS},OAUTH://{OAUTH},PLAIN://{PLAIN}
advertised.listeners=INTERNAL://{INTERNAL},SCRAM://{SCRAM},MTLS://{MTLS},OAUTH://{OAUTH},PLAIN://{PLAIN}
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=INTERNAL:SSL,CONTROLLER:SSL,SCRAM:SASL_SSL,MTLS:SSL,OAUTH:SASL_SSL,PLAIN:PLAINTEXT
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
ssl.client.auth=required
listener.name.scram.ssl.client.auth=none
listener.name.oauth.ssl.client.auth=none
ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT
listener.name.scram.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.scram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker;User:{admin}
log.dirs={data}
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
"""


@dataclass(frozen=True)
class ScramUser:
    name: str
    password: str


class SecuredKafkaBroker:
    """One secured broker in ``work_dir``, with a CA of its own and the SCRAM users given."""

    def __init__(self, work_dir: Path, users: list[ScramUser], libs_dir: Path | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = self.work_dir / "kafka.log"
        self.ca = CertificateAuthority(self.work_dir / "tls")
        self._broker_identity = self.ca.issue("broker", server=True)
        self.admin = ScramUser(ADMIN, f"admin-{uuid.uuid4().hex}")
        self.users = [self.admin, *users]
        self._libs_dir = libs_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self._cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def client_identity(self, principal: str) -> Identity:
        """A client certificate whose principal is ``principal`` (for the ``MTLS`` listener)."""
        return self.ca.issue(principal)

    def start(self) -> SecuredKafkaBroker:
        libs = self._libs_dir or ensure_kafka_jars()
        self.ports = dict(zip(LISTENERS, free_ports(len(LISTENERS)), strict=True))
        config = self.work_dir / "server.properties"
        config.write_text(_PROPERTIES.format(
            **{name: self.address(name) for name in LISTENERS}, admin=ADMIN,
            keystore=self._broker_identity.bundle, truststore=self.ca.cert, data=self.work_dir / "data"))
        scram = [arg for user in self.users
                 for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user.name},password={user.password}]")]
        command = [*_java(libs), "kafka.tools.StorageTool", "format", f"--cluster-id={self._cluster_id}",
                   "-c", str(config), *scram]
        with self.log_file.open("ab") as log:
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode:
                raise BrokerStartError("storage format failed", self.log_file)
            self._process = subprocess.Popen([*_java(libs), "-Xmx512m", "kafka.Kafka", str(config)],
                                             stdout=log, stderr=subprocess.STDOUT)
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(asyncio.run, self._wait_until_ready()).result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if (process := self._process) is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def admin_command_config(self) -> Path:
        """A client properties file for Kafka's own tools (``kafka-acls``), as ``admin`` over SCRAM."""
        path = self.work_dir / "admin.properties"
        path.write_text(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
            f"sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.admin.name}" password="{self.admin.password}";\n'
            f"ssl.truststore.type=PEM\nssl.truststore.location={self.ca.cert}\n")
        path.chmod(0o600)
        return path

    def kafka_acls(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run ``kafka-acls`` (``org.apache.kafka.tools.AclCommand``) against this broker as admin."""
        libs = self._libs_dir or ensure_kafka_jars()
        command = [*_java(libs), "org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.address("SCRAM"),
                   "--command-config", str(self.admin_command_config()), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)

    async def _wait_until_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not await self._answers():
            assert self._process is not None
            if (code := self._process.poll()) is not None:
                raise BrokerStartError(f"java exited {code} before it was ready", self.log_file)
            if loop.time() > deadline:
                raise BrokerStartError(f"not ready after {START_TIMEOUT_S:.0f} s", self.log_file)
            await asyncio.sleep(0.25)

    async def _answers(self) -> bool:
        with contextlib.suppress(KafkaError, OSError, asyncio.TimeoutError):
            socket.create_connection(("127.0.0.1", self.ports["SCRAM"]), timeout=1).close()
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.address("SCRAM"), request_timeout_ms=5000, security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=self.admin.name,
                sasl_plain_password=self.admin.password, ssl_context=create_ssl_context(cafile=self.ca.cert))
            try:
                await asyncio.wait_for(admin.start(), 5)
                return bool((await asyncio.wait_for(admin.describe_cluster(), 5))["brokers"])
            finally:
                await admin.close()
        return False


