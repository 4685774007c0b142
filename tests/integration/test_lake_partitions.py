"""Date partitions: written on both engines from one derivation, an older unpartitioned lake is
rewritten once on its next run (and nothing downstream re-reads it), and a one-day reader
opens only that day's files."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cloud.lake.tables import PARTITION_COL, TABLES, partition_columns, utc_dates, with_partition
from cloud.synth import DAY0, day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.hub import LocalHub

pytestmark = [pytest.mark.slow]

HOUR = 3_600_000
HOURS = 50  # three UTC days
EVENTS = list(day_events(stores=2, facings=2, hours=HOURS, reading_every_min=60))
PARTITIONED = [t for t in TABLES if partition_columns(t)]
_RUN_COLUMNS = ("ingest_run", "run_id", "run_at", "enqueued_time", "hub_partition", "hub_offset", "sequence_number",
                "message_index", "ingested_at")


def test_the_partition_date_is_the_utc_date_of_the_time_column_and_null_where_no_date_can_hold_it():
    ms = pa.array([0, 86_399_999, 86_400_000, -1, None, 253_402_300_799_999, 253_402_300_800_000, 2**62], pa.int64())
    assert utc_dates(ms).to_pylist() == ["1970-01-01", "1970-01-01", "1970-01-02", "1969-12-31", None,
                                         "9999-12-31", None, None]
    rows = with_partition("gold.features", pa.table({"hour_ms": [DAY0 + 23 * HOUR, DAY0 + 24 * HOUR],
                                                     PARTITION_COL: ["stale", None]}))
    day = utc_dates(pa.array([DAY0], pa.int64()))[0].as_py()
    assert rows[PARTITION_COL].to_pylist()[0] == day != rows[PARTITION_COL].to_pylist()[1]
    # which tables pay for a partition is decided in the dictionary (docs/lake.md: sizes)
    assert PARTITIONED == ["bronze.events", "silver.pos_line", "silver.shelf_reading", "gold.features",
                           "gold.feature_state"]


def _old_layout(monkeypatch) -> None:
    """The table dictionary as it was before partitions: no ``date`` column, no partition."""
    for name in PARTITIONED:
        tdef = TABLES[name]
        monkeypatch.setitem(TABLES, name, dataclasses.replace(
            tdef, partition_from=None, columns=tuple(c for c in tdef.columns if c.name != PARTITION_COL)))


def _build(folder, master, batches, *, monkeypatch=None):
    """A lake built in one run per batch; with ``monkeypatch``, the first run by the old layout."""
    hub_path = folder / "hub.sqlite"
    cloud = build_cloud(CloudSettings(lake_uri=str(folder / "lake"), hub_path=str(hub_path)))
    reports = []
    with LocalHub(hub_path) as hub:
        for i, batch in enumerate(batches):
            if monkeypatch is not None and i == 0:
                _old_layout(monkeypatch)
            if i == 0:
                cloud.ingest_batch(master)
            fill_hub(hub, batch)
            cloud.ingest_stream()
            reports.append(cloud.transform())
            if monkeypatch is not None and i == 0:
                monkeypatch.undo()
    return cloud, reports


def _rows(cloud, name) -> list:
    table = cloud.storage.read(name)
    table = table.drop([c for c in _RUN_COLUMNS if c in table.column_names])
    return sorted((tuple(r.items()) for r in table.to_pylist()), key=repr)


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """The same three runs on a lake whose first run was the old code's layout, and on a new lake."""
    root = tmp_path_factory.mktemp("partitions")
    write_master_csvs(root / "master", stores=2, facings=2)
    cuts = [DAY0 + h * HOUR for h in (0, 20, 40, HOURS + 1)]
    batches = [[e for e in EVENTS if lo <= e["ts"] < hi] for lo, hi in zip(cuts, cuts[1:])]
    (root / "old").mkdir()
    (root / "new").mkdir()
    mp = pytest.MonkeyPatch()
    try:
        old = _build(root / "old", root / "master", batches, monkeypatch=mp)
    finally:
        mp.undo()
    return old, _build(root / "new", root / "master", batches), batches


def test_an_unpartitioned_lake_is_repartitioned_on_its_next_run_and_then_equals_a_lake_built_partitioned(lakes):
    (old, old_reports), (new, _), batches = lakes
    # The first run wrote the old layout. The next ingest rewrote bronze before appending to it
    # (any write does); the next transform rewrote the others first, each once.
    assert old_reports[0]["repartitioned"] == []
    assert old_reports[1]["repartitioned"] == [t for t in PARTITIONED if t != "bronze.events"]
    assert old_reports[2]["repartitioned"] == []
    for name in PARTITIONED:
        dt = old.storage.open(name)
        assert list(dt.metadata().partition_columns) == [PARTITION_COL], name
        assert sum(h.get("gondola.operation") == "repartition" for h in dt.history()) == 1, name
        files = dt.file_uris()
        assert files and all(f"/{PARTITION_COL}=" in f for f in files), name
        rows = old.storage.read(name)
        assert rows[PARTITION_COL].to_pylist() == utc_dates(rows[TABLES[name].partition_from]).to_pylist(), name
    # The rewrite changed no row, so no step re-read what it had read: silver read only the
    # second batch of bronze (no duplicates).
    assert old_reports[1]["bronze_rows_read"] == len(batches[1])
    assert old_reports[1]["duplicates"] == 0
    for name in TABLES:
        if name.startswith(("bronze.", "silver.", "gold.")) and name != "silver.expectation_results" \
                and new.storage.exists(name):
            assert _rows(old, name) == _rows(new, name), name
    # A run with nothing new commits nothing (the rewrite is not taken for new data).
    lake = [t for t in TABLES if not t.startswith("meta.")]  # the run's lineage events are recorded
    versions = {t: old.storage.version(t) for t in lake}
    assert old.transform()["repartitioned"] == []
    assert {t: old.storage.version(t) for t in lake} == versions


def test_a_reader_of_one_day_opens_only_that_days_files(lakes):
    """What the partition buys a reader: ``delta_scan`` / ``to_pyarrow_dataset`` with a date
    filter prunes to that day's folder."""
    _, (cloud, _), _ = lakes
    day = utc_dates(pa.array([DAY0 + 24 * HOUR], pa.int64()))[0].as_py()
    for name in ("silver.shelf_reading", "gold.features"):
        data = cloud.storage.open(name).to_pyarrow_dataset()
        every = list(data.get_fragments())
        by_day = list(data.get_fragments(filter=pc.field(PARTITION_COL) == day))
        rows = data.to_table(filter=pc.field(PARTITION_COL) == day)
        assert rows.num_rows > 0 and set(utc_dates(rows[TABLES[name].partition_from]).to_pylist()) == {day}
        assert 0 < len(by_day) < len(every), name
        assert all(f"{PARTITION_COL}={day}/" in f.path for f in by_day)


@pytest.mark.parametrize("name", PARTITIONED)
def test_every_partitioned_table_derives_its_date_from_a_time_column_it_has(name):
    tdef = TABLES[name]
    cols = {c.name: c.type for c in tdef.columns}
    assert cols[tdef.partition_from] == "int64" and cols[PARTITION_COL] == "string"
