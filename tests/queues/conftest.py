"""A moto SQS server for the queue sender tests (one per session, on a free loopback port)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aioboto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
KEY = "testing"
SECRET = "testing"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Moto:
    endpoint_url: str

    def client(self) -> Any:
        """An aioboto3 SQS client context for checking what arrived."""
        return aioboto3.Session().client(
            "sqs",
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
        )

    async def create_queue(self, prefix: str, *, fifo: bool = False) -> str:
        """A new, empty queue (unique name) and its URL."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        attributes = {"VisibilityTimeout": "300"}
        if fifo:
            name += ".fifo"
            attributes |= {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
        async with self.client() as sqs:
            created = await sqs.create_queue(QueueName=name, Attributes=attributes)
        return str(created["QueueUrl"])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield Moto(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()
