"""``EventHubSource``: the lake's ``EventSource`` on Azure Event Hubs (IoT Hub's built-in endpoint).

The SDK's ``EventHubConsumerClient`` (aio) reads every partition of the hub on one consumer group
(``lake-bronze`` by default: one group per independent reader). With a ``BlobCheckpointStore``
it balances partitions between all running readers of the group (ownership blobs) and resumes
each partition after its checkpoint (checkpoint blobs); both are the SDK's work, not ours.

The SDK pushes batches to a callback on its own event loop; the lake's runner pulls
(``receive`` -> commit to bronze -> ``checkpoint``). This adapter bridges the two:

1. A daemon thread runs the SDK's ``receive_batch`` on a private asyncio loop.
2. ``on_event_batch`` converts each ``EventData`` to a ``ReceivedMessage`` and queues it; when the
   queue holds ``max_buffered`` messages the callback waits, so the SDK stops pulling
   (backpressure: memory stays bounded while bronze is slow).
3. ``receive`` drains the queue (waiting at most ``max_wait_s`` for the first message). It
   returns ``[]`` (which ends one ingest pass) only once every partition this reader owns has
   caught up: the SDK calls ``on_event_batch`` with an empty list after ``idle_s`` without
   events. Right after start, when the load balancer has not claimed partitions yet, it waits
   up to ``startup_wait_s`` (greedy balancing claims them in the first pass).
4. ``checkpoint`` runs ``partition_context.update_checkpoint(event)`` on the SDK's loop for the
   last event of each partition in the list: only then does the checkpoint blob move, which the
   runner does only after bronze committed. A partition whose ownership moved to another
   reader is not checkpointed by us any more (its new owner does it).

Errors::

    azure.eventhub AuthenticationError                  -> TransportAuthError
    other azure.eventhub EventHubError (connect, lost link, timeout) -> TransportError
    azure.core AzureError from the checkpoint store     -> StorageError
    a malformed connection string or missing setting    -> ConfigError

The SDK retries a lost link by itself and reports what it gave up on through ``on_error``;
``receive`` raises the first such error when it has no messages to return, so the runner's
backoff applies; the SDK keeps running and the next ``receive`` goes on.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from azure.core.exceptions import AzureError
from azure.eventhub import CloseReason, EventData
from azure.eventhub.aio import EventHubConsumerClient
from azure.eventhub.exceptions import AuthenticationError, EventHubError

from cloud.ingest.source import ReceivedMessage
from gondola.errors import ConfigError, GondolaError, StorageError, TransportAuthError, TransportError

__all__ = ["EventHubSource", "build_source", "to_received_message", "DEFAULT_CONSUMER_GROUP"]

log = logging.getLogger(__name__)

#: The consumer group the lake's bronze ingest reads with (create it on the IoT Hub endpoint).
DEFAULT_CONSUMER_GROUP = "lake-bronze"

# IoT Hub puts the sending device in this annotation of every message on its built-in endpoint.
_DEVICE_ID = b"iothub-connection-device-id"
# Batch properties that IoT Hub may carry as AMQP system properties instead of application ones.
_SYSTEM_TO_BATCH = {b"content-type": "content-type", b"content-encoding": "content-encoding"}

ClientFactory = Callable[[], Any]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _epoch_ms(when: datetime.datetime | None) -> int:
    if when is None:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(round(when.timestamp() * 1000))


def to_received_message(partition_id: str, event: EventData) -> ReceivedMessage:
    """Convert one received ``EventData`` into the lake's ``ReceivedMessage``.

    Application properties arrive from AMQP as bytes keys and values; they become ``str``. The
    body is the concatenation of the event's data sections, unchanged.
    """
    props = {_text(k): _text(v) for k, v in (event.properties or {}).items()}
    system = event.system_properties or {}
    for key, name in _SYSTEM_TO_BATCH.items():
        if name not in props and system.get(key) is not None:
            props[name] = _text(system[key])
    device = system.get(_DEVICE_ID)
    return ReceivedMessage(
        partition=str(partition_id),
        offset=str(event.offset),
        sequence_number=int(event.sequence_number),
        enqueued_time=_epoch_ms(event.enqueued_time),
        properties=props,
        body=b"".join(event.body),
        device_id=_text(device) if device is not None else None,
        system_properties={_text(k): _text(v) for k, v in system.items()},
    )


def _translate(exc: BaseException, doing: str) -> GondolaError:
    if isinstance(exc, GondolaError):
        return exc
    if isinstance(exc, AuthenticationError):
        return TransportAuthError(f"Event Hubs refused the credentials while {doing}: {exc}")
    if isinstance(exc, EventHubError):
        return TransportError(f"Event Hubs failed while {doing}: {type(exc).__name__}: {exc}")
    if isinstance(exc, AzureError):
        return StorageError(f"checkpoint store failed while {doing}: {type(exc).__name__}: {exc}")
    return TransportError(f"unexpected {type(exc).__name__} while {doing}: {exc}")


class EventHubSource:
    """The lake's stream source on Event Hubs; see the module docstring for the flow.

    ``client_factory`` builds the SDK's aio ``EventHubConsumerClient`` (with its checkpoint
    store) and is called on the adapter's own event loop; use ``from_connection_strings`` or
    ``from_env`` in the wiring.
    """

    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        name: str,
        max_buffered: int = 10_000,
        max_batch_size: int = 300,
        starting_position: str = "-1",
        checkpoint_timeout_s: float = 60.0,
        idle_s: float = 1.0,
        startup_wait_s: float = 60.0,
    ):
        self.name = name
        self._factory = client_factory
        self._max_buffered = max_buffered
        self._max_batch_size = max_batch_size
        self._starting_position = starting_position
        self._checkpoint_timeout_s = checkpoint_timeout_s
        self._idle_s = idle_s
        self._startup_wait_s = startup_wait_s
        self._started_at = 0.0
        # owned partitions whose latest callback was empty: caught up, nothing new for idle_s
        self._idle: set[str] = set()
        self._queue: queue.Queue[ReceivedMessage] = queue.Queue()
        self._lock = threading.Lock()
        # partition -> context of the current owner (removed when ownership is lost)
        self._contexts: dict[str, Any] = {}
        # (partition, sequence_number) -> EventData handed out and not yet checkpointed
        self._pending: dict[tuple[str, int], EventData] = {}
        self._checkpointed: dict[str, int] = {}
        self._errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._receive_task: asyncio.Future | None = None
        self._started = threading.Event()
        self._stopping = False

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_connection_strings(
        cls,
        eventhub_connection_string: str,
        *,
        checkpoint_connection_string: str,
        checkpoint_container: str,
        eventhub_name: str | None = None,
        consumer_group: str = DEFAULT_CONSUMER_GROUP,
        client_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> "EventHubSource":
        """From the IoT Hub's Event Hubs-compatible connection string and a storage account.

        ``eventhub_name`` is needed when the connection string has no ``EntityPath``.
        ``client_kwargs`` go to ``EventHubConsumerClient.from_connection_string`` (e.g.
        ``retry_total``, ``load_balancing_interval``); ``kwargs`` to ``EventHubSource``.
        Credentials come from settings (Key Vault in production), never from the repository.
        """
        from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

        def factory() -> Any:
            try:
                store = BlobCheckpointStore.from_connection_string(checkpoint_connection_string, checkpoint_container)
                return EventHubConsumerClient.from_connection_string(
                    eventhub_connection_string,
                    consumer_group=consumer_group,
                    eventhub_name=eventhub_name,
                    checkpoint_store=store,
                    # Claim every unowned partition in the first balancing pass instead of one
                    # per 30 s interval: a short ingest run then sees all of them.
                    load_balancing_strategy="greedy",
                    **dict(client_kwargs or {}),
                )
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"bad Event Hubs or checkpoint store connection string: {type(exc).__name__}") from exc

        hub = eventhub_name or _entity_path(eventhub_connection_string) or "?"
        return cls(factory, name=f"eventhubs:{hub}/{consumer_group}", **kwargs)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> "EventHubSource":
        """From settings (docs/azure.md): ``GONDOLA_EVENTHUB_CONNECTION_STRING``,
        ``GONDOLA_EVENTHUB_NAME`` (optional with ``EntityPath``), ``GONDOLA_EVENTHUB_CONSUMER_GROUP``,
        ``GONDOLA_CHECKPOINT_CONNECTION_STRING``, ``GONDOLA_CHECKPOINT_CONTAINER``.

        Raises:
            ConfigError: a required setting is missing.
        """
        from gondola.secrets import env_name, secret_text

        env = os.environ if env is None else env
        # connection strings: the environment, else the secret store (GONDOLA_SECRETS: Key Vault)
        conns = {n: secret_text(n, env) for n in ("eventhub-connection-string", "checkpoint-connection-string")}
        missing = [env_name(n) for n, v in conns.items() if not v]
        if missing:
            raise ConfigError(f"ingest=eventhubs needs {', '.join(missing)}")
        return cls.from_connection_strings(
            conns["eventhub-connection-string"],
            checkpoint_connection_string=conns["checkpoint-connection-string"],
            checkpoint_container=env.get("GONDOLA_CHECKPOINT_CONTAINER", "eventhub-checkpoints"),
            eventhub_name=env.get("GONDOLA_EVENTHUB_NAME") or None,
            consumer_group=env.get("GONDOLA_EVENTHUB_CONSUMER_GROUP", DEFAULT_CONSUMER_GROUP),
            **kwargs,
        )

    # ---- the SDK side (runs on the adapter's loop thread) ----------------------------------

    def _start(self) -> None:
        if self._stopping:
            raise TransportError(f"{self.name}: the source is closed")
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            # A (re)start: contexts of a previous run belong to its closed loop and client, and
            # what it handed out will be re-delivered from the last checkpoint anyway.
            self._contexts.clear()
            self._idle.clear()
            self._pending.clear()
            self._started.clear()
            self._started_at = time.monotonic()
            self._thread = threading.Thread(target=self._thread_main, name=f"eventhubs-{self.name}", daemon=True)
            self._thread.start()
        self._started.wait(30)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported to the next receive()
            if not self._stopping:
                self._errors.append(exc)
        finally:
            self._started.set()
            loop.close()

    async def _run(self) -> None:
        self._client = self._factory()
        self._started.set()
        async with self._client:
            self._receive_task = asyncio.ensure_future(
                self._client.receive_batch(
                    self._on_event_batch,
                    max_batch_size=self._max_batch_size,
                    max_wait_time=self._idle_s,
                    starting_position=self._starting_position,
                    on_error=self._on_error,
                    on_partition_initialize=self._on_partition_initialize,
                    on_partition_close=self._on_partition_close,
                )
            )
            try:
                await self._receive_task
            except asyncio.CancelledError:
                if not self._stopping:
                    raise

    async def _on_event_batch(self, context: Any, events: list[EventData]) -> None:
        partition = str(context.partition_id)
        with self._lock:
            self._contexts[partition] = context
            if not events:
                self._idle.add(partition)  # caught up: no events for idle_s
                return
            self._idle.discard(partition)
        for event in events:
            # Backpressure: hold the SDK's callback (and so its prefetch) while bronze catches up.
            while self._queue.qsize() >= self._max_buffered and not self._stopping:
                await asyncio.sleep(0.05)
            message = to_received_message(partition, event)
            with self._lock:
                self._pending[(partition, message.sequence_number)] = event
            self._queue.put(message)

    async def _on_error(self, context: Any, error: Exception) -> None:
        where = f"partition {context.partition_id}" if context is not None else "load balancing"
        log.warning("Event Hubs error on %s: %s: %s", where, type(error).__name__, error)
        with self._lock:
            self._errors.append(error)

    async def _on_partition_initialize(self, context: Any) -> None:
        with self._lock:
            self._contexts[str(context.partition_id)] = context

    async def _on_partition_close(self, context: Any, reason: CloseReason) -> None:
        partition = str(context.partition_id)
        with self._lock:
            if self._contexts.get(partition) is context:
                del self._contexts[partition]
                self._idle.discard(partition)
            if reason == CloseReason.OWNERSHIP_LOST:
                # The new owner starts from the last checkpoint and checkpoints from then on.
                self._pending = {k: v for k, v in self._pending.items() if k[0] != partition}
        log.info("partition %s closed: %s", partition, reason.name)

    # ---- EventSource -----------------------------------------------------------------------

    def receive(self, *, max_messages: int = 5000, max_wait_s: float = 1.0) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages, waiting at least ``max_wait_s`` for the first one.

        ``[]`` means every owned partition is caught up (or, right after start, that no
        partition was claimed within ``startup_wait_s``).

        Raises:
            TransportAuthError: Event Hubs refused the credentials.
            TransportError: the SDK gave up on a partition or on connecting (it keeps trying).
            StorageError: the checkpoint store failed during load balancing.
            ConfigError: a connection string is malformed.
        """
        self._start()
        out: list[ReceivedMessage] = []
        deadline = time.monotonic() + max_wait_s
        while not out:
            try:
                out.append(self._queue.get(timeout=0.05))
                break
            except queue.Empty:
                pass
            now = time.monotonic()
            if now >= deadline and (self._settled() or now >= self._started_at + self._startup_wait_s):
                break
            if self._errors and now >= deadline:
                break
        while len(out) < max_messages:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not out:
            with self._lock:
                errors, self._errors = self._errors, []
            if errors:
                raise _translate(errors[0], "receiving") from errors[0]
        return out

    def _settled(self) -> bool:
        """Every owned partition is caught up and nothing is queued."""
        with self._lock:
            owned = set(self._contexts)
            return bool(owned) and owned <= self._idle and self._queue.empty()

    def checkpoint(self, messages: Sequence[ReceivedMessage]) -> None:
        """Move each partition's checkpoint blob to the last of ``messages`` in that partition.

        Call only after bronze committed them. Never moves a checkpoint backwards; skips
        partitions this reader no longer owns.

        Raises:
            StorageError: the checkpoint store could not be written.
            ValueError: a message was not delivered by this source.
        """
        last: dict[str, int] = {}
        for m in messages:
            last[m.partition] = max(last.get(m.partition, -1), m.sequence_number)
        for partition, seq in sorted(last.items()):
            with self._lock:
                if seq <= self._checkpointed.get(partition, -1):
                    continue
                context = self._contexts.get(partition)
                event = self._pending.get((partition, seq))
            if context is None:
                log.info("partition %s is owned by another reader now; not checkpointing it", partition)
                continue
            if event is None:
                raise ValueError(f"partition {partition} sequence {seq} was not delivered by this source")
            self._run_on_loop(context.update_checkpoint(event), f"checkpointing partition {partition}")
            with self._lock:
                self._checkpointed[partition] = seq
                self._pending = {k: v for k, v in self._pending.items() if k[0] != partition or k[1] > seq}

    def _run_on_loop(self, coro: Any, doing: str) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise StorageError(f"Event Hubs reader is not running while {doing}")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(self._checkpoint_timeout_s)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            future.cancel()
            err = _translate(exc, doing)
            if isinstance(err, TransportError):
                err = StorageError(str(err))
            raise err from exc

    def close(self) -> None:
        """Stop receiving and close the SDK client (its partitions are released); idempotent."""
        self._stopping = True
        loop, client, thread, task = self._loop, self._client, self._thread, self._receive_task
        if loop is not None and client is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(30)
                # The SDK's receive loop only notices the close after its load-balancing sleep
                # (30 s); the partitions are already released, so end it now.
                if task is not None:
                    loop.call_soon_threadsafe(task.cancel)
            except Exception as exc:  # noqa: BLE001 - closing never raises
                log.warning("Event Hubs client close failed: %s", type(exc).__name__)
        if thread is not None:
            thread.join(30)

    def __enter__(self) -> "EventHubSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SETTING_KEYS = {
    "connection_string": "GONDOLA_EVENTHUB_CONNECTION_STRING",
    "eventhub_name": "GONDOLA_EVENTHUB_NAME",
    "checkpoint_connection_string": "GONDOLA_CHECKPOINT_CONNECTION_STRING",
    "checkpoint_container": "GONDOLA_CHECKPOINT_CONTAINER",
}


def build_source(settings: Mapping[str, str], *, consumer_group: str | None = None) -> EventHubSource:
    """The wiring's entry (``cloud.wiring``): an ``EventHubSource`` from a settings mapping.

    Keys are the short names (``connection_string``, ``eventhub_name``,
    ``checkpoint_connection_string``, ``checkpoint_container``) or their ``GONDOLA_*``
    variable names; what is missing is read from the environment.

    Raises:
        ConfigError: a required setting is missing.
    """
    env = dict(os.environ)
    for short, var in _SETTING_KEYS.items():
        value = settings.get(short) or settings.get(var)
        if value:
            env[var] = value
    if consumer_group:
        env["GONDOLA_EVENTHUB_CONSUMER_GROUP"] = consumer_group
    return EventHubSource.from_env(env)


def _entity_path(connection_string: str) -> str | None:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "entitypath":
            return value.strip()
    return None
