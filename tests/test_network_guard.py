import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_tests_cannot_reach_non_loopback_addresses():
    # pytest-socket warns, then raises; under filterwarnings=error the warning is what aborts the connect.
    with pytest.raises((SocketConnectBlockedError, UserWarning), match=r"192\.0\.2\.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)  # TEST-NET-1: never routed


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        socket.create_connection(server.getsockname(), timeout=1).close()
    finally:
        server.close()
