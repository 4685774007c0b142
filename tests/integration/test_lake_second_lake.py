"""A second lake built from a hub another lake already read."""

from __future__ import annotations

import logging

from cloud.synth import day_events, fill_hub
from cloud.wiring import CloudSettings, build_cloud
from gondola.hub import LocalHub


def test_a_new_lake_on_a_hub_its_consumer_group_already_read_says_so(tmp_path, caplog):
    # Building a second lake (e.g. --engine spark beside the DuckDB one) from the same hub got
    # 5 of 8,741 events, silently: the hub's checkpoints belong to the consumer group, not the lake.
    with LocalHub(tmp_path / "hub.sqlite") as hub:
        fill_hub(hub, day_events(stores=1, facings=2, hours=2))
    said: list[str] = []

    def lake(name: str, group: str):
        return build_cloud(CloudSettings(lake_uri=str(tmp_path / name), hub_path=str(tmp_path / "hub.sqlite"),
                                         consumer_group=group), progress=said.append)

    first = lake("a", "lake-bronze").ingest_stream()
    assert first > 0 and not [s for s in said if "consumer group" in s]
    with caplog.at_level(logging.WARNING, logger="cloud.wiring"):
        assert lake("b", "lake-bronze").ingest_stream() == 0
    warning = [s for s in said if "consumer group" in s]
    assert len(warning) == 1 and "'lake-bronze'" in warning[0] and "--consumer-group" in warning[0]
    assert any("consumer group" in r.getMessage() for r in caplog.records)
    assert lake("c", "lake-c").ingest_stream() == first  # its own group reads the hub from the start
