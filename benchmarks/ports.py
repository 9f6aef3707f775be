"""A free loopback port, for the benchmarks' and the tests' server processes.

Standard library only, so the service's tests can use it without the benchmarks' dependencies.
"""

from __future__ import annotations

import socket


def free_port(avoid: int | None = None) -> int:
    """A TCP port on loopback that nothing listens on right now (other than `avoid`, a port
    handed out for a server that has not started yet)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != avoid:
            return port
