"""Joining a Ray cluster: what makes ``--ray-address`` fail, told apart for the one-line error."""

from __future__ import annotations

import socket

from ray.exceptions import AuthenticationError

from streaminfer.app import _listening, _refused_for_token
from streaminfer.errors import RayUnreachable


def test_a_join_refused_for_want_of_the_token_is_told_apart_from_an_unreachable_cluster():
    try:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
        except AuthenticationError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379") from cause
    except ConnectionError as joined:
        assert _refused_for_token(joined)
    assert not _refused_for_token(ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379"))


def test_the_token_error_says_how_to_pass_the_token_and_names_no_secret():
    message = str(RayUnreachable("10.0.0.5:6379", auth=True))
    assert "RAY_AUTH_MODE=token" in message and "10.0.0.5:6379" in message and "\n" not in message


def test_an_address_is_listening_only_when_something_accepts_there_and_auto_is_left_to_ray():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _listening(f"127.0.0.1:{port}") and _listening(f"ray://127.0.0.1:{port}")
    assert not _listening(f"127.0.0.1:{port}", timeout_s=1)
    assert _listening("auto")
