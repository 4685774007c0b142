"""Fakes of Azure SDK objects at their boundary, shared by the ``test_azure_*`` tests.

Each fake has the real SDK object's method names and signatures and is used where the real
service cannot run here (Event Hubs' AMQP link). What the SDK itself builds is built by the SDK:
events come from its AMQP codec, partition contexts are its own ``PartitionContext``.
"""

from __future__ import annotations

import asyncio
import time

from azure.eventhub import CloseReason, EventData
from azure.eventhub._pyamqp._decode import decode_payload
from azure.eventhub._pyamqp._encode import encode_payload
from azure.eventhub._pyamqp.message import Message, Properties
from azure.eventhub._pyamqp.types import AMQPTypes
from azure.eventhub.aio._eventprocessor.partition_context import PartitionContext

from cloud.azure.eventhubs import EventHubSource
from gondola.contracts import encode_batch, make_event

NS, HUB, GROUP = "fake-ns.servicebus.example.invalid", "gondola-hub", "lake-bronze"
T0 = 1_764_410_400_000


def wire_event(seq: int, *, device: str = "gw-s001", body: bytes | None = None, props: dict | None = None) -> EventData:
    """An ``EventData`` exactly as the SDK produces it from a received AMQP transfer."""
    batch = encode_batch(
        [
            make_event(
                "pos.line",
                store_id="s001",
                device_id="pos-s001-r01",
                seq=seq,
                ts=T0,
                data={"txn_id": "t1", "register": "r01", "line": 1, "sku": "sku-1", "qty": 2, "price_cents": 199},
            )
        ],
        store_id="s001",
    )
    message = Message(
        message_annotations={
            b"x-opt-sequence-number": seq,
            b"x-opt-offset": str(seq * 512),
            b"x-opt-enqueued-time": {"TYPE": AMQPTypes.timestamp, "VALUE": T0 + seq},
            b"iothub-connection-device-id": device,
            b"iothub-connection-module-id": "gateway",
        },
        properties=Properties(
            message_id=f"pos-s001-r01:{seq}".encode(),
            content_type=b"application/x-ndjson",
            content_encoding=b"gzip",
        ),
        application_properties=props if props is not None else dict(batch.properties),
        data=[body if body is not None else batch.body],
    )
    return EventData._from_message(decode_payload(memoryview(encode_payload(bytearray(), message))))


class RecordingStore:
    """A checkpoint store that records ``update_checkpoint`` calls (or fails them)."""

    def __init__(self, fail: Exception | None = None):
        self.checkpoints: list[dict] = []
        self.fail = fail

    async def update_checkpoint(self, checkpoint, **kwargs):
        if self.fail:
            raise self.fail
        self.checkpoints.append(checkpoint)


class FakeConsumerClient:
    """The aio ``EventHubConsumerClient`` surface ``EventHubSource`` uses, scripted.

    ``script`` is a list of steps run in order inside ``receive_batch``:
    ``("batch", partition_id, [EventData, ...])``, ``("error", partition_id|None, exc)``,
    ``("lose", partition_id)``; then it waits until ``close()``, as the SDK does.
    """

    def __init__(self, script, store):
        self.script = script
        self.store = store
        self.kwargs: dict = {}
        self._closed: asyncio.Event | None = None
        self.closed = False

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def receive_batch(self, on_event_batch, **kwargs):
        self.kwargs = kwargs
        self._closed = asyncio.Event()
        contexts: dict[str, PartitionContext] = {}

        def ctx(pid):
            if pid not in contexts:
                contexts[pid] = PartitionContext(NS, HUB, GROUP, pid, self.store)
            return contexts[pid]

        for step in self.script:
            if step[0] == "batch":
                context = ctx(step[1])
                await kwargs["on_partition_initialize"](context)
                await on_event_batch(context, step[2])
            elif step[0] == "error":
                await kwargs["on_error"](ctx(step[1]) if step[1] else None, step[2])
            elif step[0] == "lose":
                await kwargs["on_partition_close"](contexts.pop(step[1]), CloseReason.OWNERSHIP_LOST)
        await self._closed.wait()

    async def close(self):
        self.closed = True
        if self._closed is not None:
            self._closed.set()


def source_for(script, store=None, **kwargs) -> tuple[EventHubSource, FakeConsumerClient]:
    client = FakeConsumerClient(script, store if store is not None else RecordingStore())
    return EventHubSource(lambda: client, name=f"eventhubs:{HUB}/{GROUP}", **kwargs), client


def drain(source: EventHubSource, expect: int, deadline_s: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + deadline_s
    while len(got) < expect and time.monotonic() < deadline:
        got += source.receive(max_messages=expect - len(got), max_wait_s=0.5)
    return got


# --------------------------------------------------------------------------------------------
# azure-core HTTP boundary
# --------------------------------------------------------------------------------------------

import json as _json  # noqa: E402

import requests  # noqa: E402
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse  # noqa: E402


class RecordingTransport(HttpTransport):
    """An azure-core ``HttpTransport`` that records each request and answers from a script.

    ``responder(request) -> (status, headers, body)`` decides the answer; the default gives
    what the storage service returns on success (201 for PUT, 200 otherwise, with ETag and
    Last-Modified). The SDK's whole pipeline (signing, retries, error mapping) still runs.
    """

    def __init__(self, responder=None):
        self.requests: list = []
        self.responder = responder or (lambda request: (201 if request.method == "PUT" else 200, {}, b""))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def open(self):
        pass

    def close(self):
        pass

    def send(self, request, **kwargs):
        self.requests.append(request)
        status, headers, body = self.responder(request)
        response = requests.Response()
        response.status_code = status
        response.headers.update(
            {
                "ETag": '"0x8DD0000000000001"',
                "Last-Modified": "Sun, 29 Nov 2026 10:00:00 GMT",
                "x-ms-request-id": f"req-{len(self.requests)}",
                "x-ms-version": "2025-01-05",
                "Content-Length": str(len(body)),
            }
        )
        response.headers.update(headers)
        response._content = _json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        response.url = request.url
        return RequestsTransportResponse(request, response)
