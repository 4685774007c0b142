"""Ack after commit on a real Mosquitto: held PUBACKs keep messages at the broker; a group's
PUBACKs released in one write acknowledge exactly that group."""

from __future__ import annotations

import threading
import time

from edge.mqtt import AckAfterCommitSubscriber, Publisher


def _session(port: int, got: list, expect: int) -> tuple[AckAfterCommitSubscriber, threading.Event]:
    done = threading.Event()

    def on_message(r):
        got.append(r)
        if len(got) >= expect:
            done.set()

    sub = AckAfterCommitSubscriber("127.0.0.1", port, client_id="gw-acks", topics=["t/#"], on_message=on_message)
    sub.start()
    return sub, done


def _settle(got: list, seconds: float = 0.5) -> None:
    """Wait until no message arrived for ``seconds`` (the broker has nothing more to send)."""
    n = -1
    while n != len(got):
        n = len(got)
        time.sleep(seconds)


def _queue_for_gateway(port: int, n: int) -> None:
    """Open the gateway's persistent session once, then publish ``n`` messages (payload = index)
    while it is away, so the broker queues them for it."""
    sub, _ = _session(port, [], 0)
    sub.stop()
    pub = Publisher("127.0.0.1", port, client_id="dev").start()
    for i in range(n):
        pub.publish(f"t/{i}", str(i).encode())
    assert pub.flush(30)
    pub.stop()


def test_held_pubacks_keep_messages_and_one_batched_release_acks_exactly_that_group(mosquitto):
    _queue_for_gateway(mosquitto.port, 300)

    # 1. Receive all 300 and acknowledge none: after a reconnect the broker sends all 300 again.
    got: list = []
    sub, done = _session(mosquitto.port, got, 300)
    assert done.wait(30)
    sub.stop()
    assert sorted(int(r.payload) for r in got) == list(range(300))

    # 2. Receive them again; acknowledge the first 200 in ONE release, then leave.
    again: list = []
    sub, done = _session(mosquitto.port, again, 300)
    assert done.wait(30)
    assert sub.ack([r.token for r in again[:200]]) == 200
    _settle(again)
    sub.stop()

    # 3. Only the 100 that were never acknowledged come back, in their order.
    rest: list = []
    sub, _ = _session(mosquitto.port, rest, 100)
    _settle(rest, 1.0)
    assert [int(r.payload) for r in rest] == [int(r.payload) for r in again[200:]]
    assert sub.ack([r.token for r in rest]) == 100
    _settle(rest)
    sub.stop()

    # 4. Everything is acknowledged now: a new session gets nothing.
    last: list = []
    sub, _ = _session(mosquitto.port, last, 1)
    _settle(last, 1.0)
    sub.stop()
    assert last == []


def test_tokens_of_an_older_connection_are_not_sent_on_a_new_one(mosquitto):
    _queue_for_gateway(mosquitto.port, 20)

    got: list = []
    sub, done = _session(mosquitto.port, got, 20)
    assert done.wait(30)
    first = list(got)
    sub.stop()
    got.clear()
    sub.start()  # the same subscriber, a new connection: the broker redelivers all 20
    _settle(got)
    assert sorted(int(r.payload) for r in got) == list(range(20))
    # The first connection's tokens name packet ids of a connection that is gone: none is sent.
    assert sub.ack([r.token for r in first]) == 0
    assert sub.ack([r.token for r in got]) == 20
    _settle(got)
    sub.stop()
