"""Fakes of Azure SDK objects at their boundary, shared by the ``test_azure_*`` tests.

Each fake sits where the real service cannot run here, at the lowest layer that can be faked:
the Event Hubs consumer client (its AMQP link), azure-core's HTTP transport (ADLS Gen2), and
the ``requests`` adapter under ``msrest`` (IoT Hub's service REST API). What the SDK itself
builds is built by the SDK: events come from its AMQP codec, partition contexts are its own
``PartitionContext``, requests are signed and serialized by the real clients.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse

import requests
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
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


def hub_event(
    seq: int,
    body: bytes,
    application_properties: dict,
    *,
    device: str = "gw-s001",
    module: str = "gateway",
    message_id: str | None = None,
    content_type: str | None = "application/x-ndjson",
    content_encoding: str | None = "gzip",
    enqueued_ms: int | None = None,
) -> EventData:
    """An ``EventData`` exactly as the SDK produces it from a transfer on IoT Hub's built-in
    endpoint: the AMQP message is encoded to wire bytes and decoded by the SDK's own codec.

    IoT Hub puts the device's application properties in ``application_properties``, its
    content type / encoding in the AMQP properties, and the sender in the
    ``iothub-connection-*`` annotations; offset is ``seq * 512`` here.
    """
    message = Message(
        message_annotations={
            b"x-opt-sequence-number": seq,
            b"x-opt-offset": str(seq * 512),
            b"x-opt-enqueued-time": {"TYPE": AMQPTypes.timestamp, "VALUE": enqueued_ms or T0 + seq},
            b"iothub-connection-device-id": device,
            b"iothub-connection-module-id": module,
        },
        properties=Properties(
            message_id=message_id.encode() if message_id else None,
            content_type=content_type.encode() if content_type else None,
            content_encoding=content_encoding.encode() if content_encoding else None,
        ),
        application_properties=dict(application_properties),
        data=[body],
    )
    return EventData._from_message(decode_payload(memoryview(encode_payload(bytearray(), message))))


def wire_event(seq: int, *, device: str = "gw-s001", body: bytes | None = None, props: dict | None = None) -> EventData:
    """A one-event ``pos.line`` batch with sequence number ``seq``, as received from the hub."""
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
    return hub_event(
        seq,
        body if body is not None else batch.body,
        props if props is not None else batch.properties,
        device=device,
        message_id=f"pos-s001-r01:{seq}",
    )


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
    ``("lose", partition_id)``; then, until ``close()``, it calls ``on_event_batch`` with an
    empty list per owned partition every ``max_wait_time`` seconds, as the SDK does when idle.
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
        # Like the SDK with max_wait_time set: an empty batch per owned partition while idle.
        while not self._closed.is_set():
            try:
                await asyncio.wait_for(self._closed.wait(), kwargs.get("max_wait_time") or 0.2)
            except asyncio.TimeoutError:
                for context in list(contexts.values()):
                    await on_event_batch(context, [])

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



class RecordingTransport(HttpTransport):
    """An azure-core ``HttpTransport`` that records each request and answers from a script.

    ``responder(request) -> (status, headers, body)`` (or an exception to raise) decides the
    answer; the default gives
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
        answer = self.responder(request)
        if isinstance(answer, Exception):
            raise answer  # what the transport raises when the connection fails
        status, headers, body = answer
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
        response._content = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        response.url = request.url
        return RequestsTransportResponse(request, response)


# --------------------------------------------------------------------------------------------
# IoT Hub service REST API (what azure-iot-hub's msrest client talks to)
# --------------------------------------------------------------------------------------------



def _merge_patch(target: dict, patch: dict) -> dict:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_patch(out[key], value)
        else:
            out[key] = value
    return out


class FakeIotHubRest:
    """IoT Hub's twin REST endpoints, in memory, answering ``requests`` adapter calls.

    Install with ``monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", hub.send)``.
    ``fail_next`` queues HTTP statuses (or exceptions to raise, as a dropped connection does)
    to answer before the normal handling; ``conflicts``
    makes the next N twin PATCHes find their ETag stale (another writer got there first).
    """

    def __init__(self):
        self.twins: dict[tuple[str, str], dict] = {}
        self.requests: list = []
        self.fail_next: list = []
        self.conflicts = 0

    def add_module(self, device_id: str, module_id: str, *, desired=None, reported=None, tags=None) -> None:
        self.twins[(device_id, module_id)] = {
            "desired": dict(desired or {}),
            "desired_version": 1,
            "reported": dict(reported or {}),
            "reported_version": 1,
            "etag": 1,
            "tags": dict(tags or {}),
        }

    def _twin_json(self, device_id: str, module_id: str) -> dict:
        t = self.twins[(device_id, module_id)]
        meta = {"$lastUpdated": "2026-11-29T10:00:00Z"}
        return {
            "deviceId": device_id,
            "moduleId": module_id,
            "etag": f"AAAAAAAAAA{t['etag']}=",
            "version": t["etag"],
            "tags": t["tags"],
            "properties": {
                "desired": dict(t["desired"], **{"$metadata": meta, "$version": t["desired_version"]}),
                "reported": dict(t["reported"], **{"$metadata": meta, "$version": t["reported_version"]}),
            },
        }

    def send(self, adapter, request, **kwargs):
        self.requests.append(request)
        url = urllib.parse.urlsplit(request.url)
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return self._response(request, failure, {"Message": "injected failure"})
        twin = re.fullmatch(r"/twins/([^/]+)/modules/([^/]+)", url.path)
        device_twin = re.fullmatch(r"/twins/([^/]+)", url.path)
        if device_twin:
            # A device's own twin (module id ""), which exists once the device has any module.
            device = urllib.parse.unquote(device_twin.group(1))
            if (device, "") not in self.twins and any(d == device for d, _ in self.twins):
                self.add_module(device, "")
            twin = device_twin
        if twin:
            key = (urllib.parse.unquote(twin.group(1)), urllib.parse.unquote(twin.group(2)) if twin.re.groups > 1 else "")
            if key not in self.twins:
                return self._response(request, 404, {"Message": "ErrorCode:ModuleNotFound"})
            if request.method == "GET":
                return self._response(request, 200, self._twin_json(*key))
            if request.method == "PATCH":
                t = self.twins[key]
                if self.conflicts:
                    self.conflicts -= 1
                    t["etag"] += 1  # the other writer's update
                match = request.headers.get("If-Match", "*").strip('"')
                if match != "*" and match != f"AAAAAAAAAA{t['etag']}=":
                    return self._response(request, 412, {"Message": "ErrorCode:PreconditionFailed"})
                body = json.loads(request.body)
                if "tags" in body and body["tags"] is not None:
                    t["tags"] = _merge_patch(t["tags"], body["tags"])
                patch = (body.get("properties") or {}).get("desired")
                if patch is not None:
                    t["desired"] = _merge_patch(t["desired"], patch)
                    t["desired_version"] += 1
                t["etag"] += 1
                return self._response(request, 200, self._twin_json(*key))
        if url.path == "/devices/query" and request.method == "POST":
            query = json.loads(request.body)["query"]
            module = re.search(r"moduleId = '([^']*)'", query).group(1)
            ring = re.search(r"tags\.ring = '([^']*)'", query)
            rows = [
                self._twin_json(d, m)
                for (d, m), t in sorted(self.twins.items())
                if m and m == module and (ring is None or t["tags"].get("ring") == ring.group(1))
            ]
            start = int(request.headers.get("x-ms-continuation") or 0)
            size = int(request.headers.get("x-ms-max-item-count") or 100)
            page = rows[start : start + size]
            more = start + size < len(rows)
            headers = {"x-ms-item-type": "Twin", "x-ms-continuation": str(start + size) if more else ""}
            return self._response(request, 200, page, headers)
        return self._response(request, 404, {"Message": f"no fake for {request.method} {url.path}"})

    @staticmethod
    def _response(request, status: int, body, headers: dict | None = None):
        response = requests.Response()
        response.status_code = status
        response.request = request
        response.url = request.url
        response.headers["Content-Type"] = "application/json; charset=utf-8"
        response.headers.update(headers or {})
        response._content = json.dumps(body).encode()
        return response
