"""The embedded hub keeps what it accepted, per partition, across reopen; twins merge patches."""

from __future__ import annotations

import multiprocessing

from gondola.clock import SimClock
from gondola.hub import LocalHub, partition_for


def test_messages_are_kept_in_order_per_partition_and_survive_reopen(tmp_path):
    path = tmp_path / "hub.sqlite"
    with LocalHub(path, partitions=3, clock=SimClock(1_000)) as hub:
        offsets = [hub.send("gw-a", f"m{i}".encode(), {"i": str(i)}) for i in range(5)]
    assert offsets == [0, 1, 2, 3, 4]
    with LocalHub(path, partitions=8) as hub:  # partition count is fixed at creation
        assert hub.partitions == 3
        part = partition_for("gw-a", 3)
        msgs = hub.read(part)
        assert [m.body for m in msgs] == [f"m{i}".encode() for i in range(5)]
        assert [m.properties["i"] for m in msgs] == ["0", "1", "2", "3", "4"]
        assert all(m.enqueued_time == 1_000 and m.device_id == "gw-a" for m in msgs)
        assert [m.offset for m in hub.read(part, after_offset=2, limit=10)] == [3, 4]
        assert hub.count() == 5


def _send_many(path, device, n):
    hub = LocalHub(path)
    for i in range(n):
        hub.send(device, str(i).encode(), {})
    hub.close()


def test_concurrent_senders_in_other_processes_lose_nothing(tmp_path):
    path = tmp_path / "hub.sqlite"
    LocalHub(path, partitions=1).close()
    procs = [multiprocessing.Process(target=_send_many, args=(path, f"gw-{k}", 200)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    hub = LocalHub(path)
    msgs = hub.read(0, limit=10_000)
    assert len(msgs) == 600
    assert [m.offset for m in msgs] == list(range(600))
    for k in range(3):
        assert [int(m.body) for m in msgs if m.device_id == f"gw-{k}"] == list(range(200))


def test_twin_desired_versions_increase_and_reported_patches_merge(tmp_path):
    with LocalHub(tmp_path / "hub.sqlite") as hub:
        assert hub.get_twin("gw", "inference") == {"desired": {"$version": 0}, "reported": {}}
        assert hub.set_desired("gw", "inference", {"model": "v1"}) == 1
        assert hub.set_desired("gw", "inference", {"model": "v2"}) == 2
        hub.patch_reported("gw", "inference", {"model": "v1", "status": "ok"})
        hub.patch_reported("gw", "inference", {"status": None, "rows": 3})
        twin = hub.get_twin("gw", "inference")
        assert twin["desired"] == {"model": "v2", "$version": 2}
        assert twin["reported"] == {"model": "v1", "rows": 3}
