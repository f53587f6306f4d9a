"""A loopback stand-in for Amazon SQS, fast enough not to be what a benchmark measures.

It speaks just enough of the SQS JSON protocol (aws-json 1.0, which botocore 1.40 uses for
SQS: `POST /` with `X-Amz-Target: AmazonSQS.<Operation>`) for senders:

- `SendMessageBatch`: every entry `Successful`, with a MessageId, the MD5 of its body and,
  for FIFO entries, a SequenceNumber;
- `SendMessage`, `GetQueueUrl`, `GetQueueAttributes` (minimal answers);
- anything else: a 400 `UnsupportedOperation`, shaped as SQS shapes errors.

Signatures are not checked. It stores nothing but counters, plus, when started with
`keep_ids`, the set of accepted message ids (the FIFO de-duplication id, else the
`message_id` inside the JSON body) to check that nothing was lost or sent twice.
`GET /_sink/stats` answers the counters as JSON, `GET /_sink/ids` the accepted ids,
`POST /_sink/reset` zeroes them.

Run it in its own process so it does not share an event loop with the code measured:

    .venv/bin/python -m bench.sqs_sink --port 9324 --keep-ids
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

ACCOUNT = "123456789012"
_JSON = b"application/x-amz-json-1.0"
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large"}
_MAX_REQUEST = 16 * 1024 * 1024


@dataclass
class SinkStats:
    requests: int = 0
    batches: int = 0
    messages: int = 0
    keep_ids: bool = False
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    started: float = field(default_factory=time.monotonic)

    def reset(self) -> None:
        self.requests = self.batches = self.messages = self.duplicates = 0
        self.ids.clear()
        self.started = time.monotonic()

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "messages": self.messages,
            "distinct_ids": len(self.ids) if self.keep_ids else None,
            "duplicates": self.duplicates if self.keep_ids else None,
            "seconds": time.monotonic() - self.started,
        }

    def accept(self, entry: dict[str, Any]) -> None:
        self.messages += 1
        if not self.keep_ids:
            return
        key = entry.get("MessageDeduplicationId")
        if key is None:
            try:
                key = orjson.loads(entry["MessageBody"]).get("message_id")
            except (orjson.JSONDecodeError, AttributeError):
                key = None
            if key is None:
                key = hashlib.sha256(entry["MessageBody"].encode()).hexdigest()
        if key in self.ids:
            self.duplicates += 1
        else:
            self.ids.add(key)


class _SqsProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: what aiohttp clients send."""

    def __init__(self, stats: SinkStats, host: bytes) -> None:
        self.stats = stats
        self.host = host
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sequence = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self._close()
                return
            head = bytes(self.buffer[:end]).split(b"\r\n")
            headers: dict[bytes, bytes] = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if length > _MAX_REQUEST:
                self._respond(413, b'{"message":"request too large"}', close=True)
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            request_line = head[0].split(b" ")
            self._handle(request_line, headers, body)

    def _handle(self, request_line: list[bytes], headers: dict[bytes, bytes], body: bytes) -> None:
        self.stats.requests += 1
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else b"/"
        if path.startswith(b"/_sink/"):
            if path == b"/_sink/reset" and method == b"POST":
                self.stats.reset()
            if path == b"/_sink/ids":  # every accepted id (with --keep-ids), for checkers
                payload = orjson.dumps(sorted(self.stats.ids))
                self._respond(200, payload, content_type=b"application/json")
                return
            self._respond(200, orjson.dumps(self.stats.as_json()), content_type=b"application/json")
            return
        target = headers.get(b"x-amz-target", b"")
        operation = target.rpartition(b".")[2].decode()
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            self._error("SerializationException", "the body is not JSON")
            return
        if operation == "SendMessageBatch":
            self._respond(200, orjson.dumps(self._send_batch(request)))
        elif operation == "SendMessage":
            self.stats.accept(request)
            text = request["MessageBody"]
            answer = {"MessageId": self._message_id(), "MD5OfMessageBody": _md5(text)}
            if "MessageGroupId" in request:
                answer["SequenceNumber"] = self._sequence()
            self._respond(200, orjson.dumps(answer))
        elif operation == "GetQueueUrl":
            url = b"http://" + self.host + f"/{ACCOUNT}/{request['QueueName']}".encode()
            self._respond(200, orjson.dumps({"QueueUrl": url.decode()}))
        elif operation == "GetQueueAttributes":
            count = str(self.stats.messages)
            self._respond(200, orjson.dumps({"Attributes": {"ApproximateNumberOfMessages": count}}))
        else:
            self._error("UnsupportedOperation", f"the sink does not implement {operation!r}")

    def _send_batch(self, request: dict[str, Any]) -> dict[str, Any]:
        self.stats.batches += 1
        successful = []
        for entry in request.get("Entries", ()):
            self.stats.accept(entry)
            answer = {
                "Id": entry["Id"],
                "MessageId": self._message_id(),
                "MD5OfMessageBody": _md5(entry["MessageBody"]),
            }
            if "MessageGroupId" in entry:
                answer["SequenceNumber"] = self._sequence()
            successful.append(answer)
        return {"Successful": successful, "Failed": []}

    def _message_id(self) -> str:
        self.sequence += 1
        value = f"{id(self) & 0xFFFFFFFF:08x}{self.sequence:024x}"
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"

    def _sequence(self) -> str:
        return f"{time.time_ns():020d}"

    def _error(self, code: str, message: str) -> None:
        body = orjson.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message})
        self._respond(400, body, extra=b"x-amzn-query-error: " + code.encode() + b";Sender\r\n")

    def _respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes = _JSON,
        extra: bytes = b"",
        close: bool = False,
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"x-amzn-RequestId: %s\r\n%s%s\r\n"
            % (
                status,
                _REASONS.get(status, b"Error"),
                content_type,
                len(body),
                self._message_id().encode(),
                extra,
                b"Connection: close\r\n" if close else b"",
            )
        )
        self.transport.write(head + body)
        if close:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class SqsSink:
    """The sink in the current event loop (for tests); `start()` then `url`, `aclose()`."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, keep_ids: bool = False):
        self.host = host
        self.port = port
        self.stats = SinkStats(keep_ids=keep_ids)
        self._server: asyncio.Server | None = None

    async def start(self) -> SqsSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _SqsProtocol(self.stats, f"{self.host}:{self.port}".encode()),
            self.host,
            self.port,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def queue_url(self, name: str) -> str:
        return f"{self.url}/{ACCOUNT}/{name}"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


async def _serve(port: int, keep_ids: bool) -> None:
    sink = await SqsSink(port=port, keep_ids=keep_ids).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {sink.url}", flush=True)
    await stop.wait()
    await sink.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9324)
    parser.add_argument("--keep-ids", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # plain asyncio works too, a little slower
        asyncio.run(_serve(args.port, args.keep_ids))
    else:
        uvloop.run(_serve(args.port, args.keep_ids))


if __name__ == "__main__":
    main()
