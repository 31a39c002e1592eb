"""Small helpers several test modules share."""

from __future__ import annotations

import socket
from dataclasses import dataclass


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FakeLambdaContext:
    """What Powertools reads from a Lambda context object."""

    function_name: str = "llmo-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:llmo-test"
    aws_request_id: str = "lambda-request-1"
