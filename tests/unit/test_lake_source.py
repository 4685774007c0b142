"""The local stream source: what it delivers and how its checkpoints behave."""

from __future__ import annotations

from cloud.ingest.source import EventSource, LocalHubSource
from gondola.contracts import decode_batch, encode_batch, make_event
from gondola.hub import LocalHub

T0 = 1_764_460_800_000


def _health(device: str, seq: int) -> dict:
    return make_event("edge.health", store_id="s001", device_id=device, seq=seq, ts=T0 + seq, data={
        "buffer_rows": 1, "buffer_bytes": 1, "unsent_rows": 0, "oldest_unsent_age_s": 0.0,
        "evictions": 0, "seq_gaps": 0, "quarantined": 0})


def _send(hub: LocalHub, device: str, seqs: range) -> None:
    for s in seqs:
        msg = encode_batch([_health(device, s)], store_id="s001")
        hub.send(device, msg.body, msg.properties)


def test_local_source_implements_the_event_source_protocol(tmp_path):
    with LocalHubSource(tmp_path / "hub.sqlite") as source:
        assert isinstance(source, EventSource)


def test_received_messages_carry_partition_offset_sequence_time_properties_and_body(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    _send(hub, "gw-a", range(1, 4))
    with LocalHubSource(tmp_path / "hub.sqlite") as source:
        got = source.receive()
    assert [m.offset for m in got] == ["0", "1", "2"]
    assert [m.sequence_number for m in got] == [0, 1, 2]
    assert len({m.partition for m in got}) == 1 and got[0].partition in source.partitions
    assert all(m.enqueued_time > 0 and m.device_id == "gw-a" for m in got)
    assert [decode_batch(m.body, m.properties)[0]["seq"] for m in got] == [1, 2, 3]


def test_a_new_reader_resumes_after_the_durable_checkpoint_only(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    _send(hub, "gw-a", range(1, 6))
    with LocalHubSource(tmp_path / "hub.sqlite") as first:
        batch = first.receive()
        first.checkpoint(batch[:2])  # only two committed downstream
    with LocalHubSource(tmp_path / "hub.sqlite") as second:
        again = second.receive()
    assert [m.sequence_number for m in again] == [2, 3, 4]


def test_checkpoints_never_move_backwards_and_groups_are_independent(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    _send(hub, "gw-a", range(1, 4))
    with LocalHubSource(tmp_path / "hub.sqlite") as source:
        batch = source.receive()
        source.checkpoint(batch)
        source.checkpoint(batch[:1])
        assert list(source.checkpoints().values()) == [2]
    with LocalHubSource(tmp_path / "hub.sqlite", consumer_group="analytics") as other:
        assert len(other.receive()) == 3


def test_rewind_redelivers_what_was_not_checkpointed(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    _send(hub, "gw-a", range(1, 4))
    with LocalHubSource(tmp_path / "hub.sqlite") as source:
        assert len(source.receive()) == 3
        assert source.receive() == []
        source.rewind()
        assert len(source.receive()) == 3
