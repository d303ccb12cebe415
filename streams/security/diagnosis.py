"""Why a client could not connect, in one line that says what to fix.

aiokafka retries a failed bootstrap and then reports only "unable to bootstrap", logging the
real cause (a refused password, an untrusted certificate) at a level users do not see. When a
connection fails, one direct connection with the same settings finds that cause.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from streaminfer.schemas.errors import StreamInferError
from streaminfer.streams.errors import BrokerUnreachable, KafkaAuthenticationFailed
from streaminfer.streams.security.settings import KafkaSecuritySettings


async def diagnose(bootstrap: str, security: KafkaSecuritySettings, options: dict[str, object],
                   timeout_s: float = 10.0) -> StreamInferError:
    """The error that explains why ``bootstrap`` refused a client with ``options``
    (``streams.security.options.client_options``); ``BrokerUnreachable`` when nothing better is known."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        conn = await asyncio.wait_for(create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options),
                                      timeout_s)
    except ssl.SSLCertVerificationError as exc:
        where = f"kafka.ssl_ca_file ({security.ssl_ca_file})" if security.ssl_ca_file else "the system's CAs (set kafka.ssl_ca_file)"
        return KafkaAuthenticationFailed(
            f"the certificate of the broker at {bootstrap} is not trusted by {where}: {exc.verify_message}")
    except ssl.SSLError as exc:
        return KafkaAuthenticationFailed(_tls_refusal(bootstrap, security, exc))
    except SaslAuthenticationFailed as exc:
        who = security.sasl_username or security.oauth.client_id or "?"
        return KafkaAuthenticationFailed(
            f"the broker at {bootstrap} refused {security.sasl_mechanism} login as {who!r}: {_broker_says(exc)}")
    except UnsupportedSaslMechanismError:
        return KafkaAuthenticationFailed(
            f"the broker at {bootstrap} does not offer SASL {security.sasl_mechanism} on this listener: "
            "set kafka.sasl_mechanism to one it enables")
    except StreamInferError as exc:  # a token endpoint that refused us, say
        return exc
    except (KafkaConnectionError, ConnectionError) as exc:
        if security.uses_tls and "closed" in str(exc).lower():
            # TLS was set up, then the broker hung up: it refused the client certificate
            return KafkaAuthenticationFailed(f"the broker at {bootstrap} {_closed_hint(security, exc)}")
        return BrokerUnreachable(bootstrap, _closed_hint(security, exc))
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        return BrokerUnreachable(bootstrap, type(exc).__name__)
    conn.close()
    return BrokerUnreachable(bootstrap)


def _tls_refusal(bootstrap: str, security: KafkaSecuritySettings, exc: ssl.SSLError) -> str:
    reason = exc.reason or str(exc)
    if security.ssl_cert_file is None and ("CERTIFICATE_REQUIRED" in reason.upper() or "HANDSHAKE_FAILURE" in reason.upper()):
        return (f"the broker at {bootstrap} requires a client certificate (mutual TLS): set "
                f"kafka.ssl_cert_file and kafka.ssl_key_file ({reason})")
    if any(alert in reason.upper() for alert in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN")):
        return (f"the broker at {bootstrap} does not trust our client certificate "
                f"kafka.ssl_cert_file={security.ssl_cert_file} ({reason})")
    return f"TLS with the broker at {bootstrap} failed: {reason}"


def _closed_hint(security: KafkaSecuritySettings, exc: BaseException) -> str:
    if "closed" not in str(exc).lower():
        return ""
    if not security.uses_tls:
        return (f"it closed the connection: the listener may need TLS or SASL "
                f"(kafka.security_protocol is {security.security_protocol})")
    if security.ssl_cert_file is None:
        return ("closed the connection after TLS: the listener requires a client certificate "
                "(set kafka.ssl_cert_file and kafka.ssl_key_file)")
    return (f"closed the connection after TLS: it does not trust the client certificate "
            f"kafka.ssl_cert_file={security.ssl_cert_file} (is it signed by a CA the broker trusts?)")


def _broker_says(exc: KafkaError) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text
