"""Wiring: build the cloud side from one typed settings object (STYLE item 1).

::

    from cloud.wiring import CloudSettings, build_cloud
    cloud = build_cloud(CloudSettings(lake_uri="out/lake", hub_path="out/hub.sqlite",
                                      warehouse_path="out/warehouse.duckdb", storage_options=None))
    cloud.ingest_stream()          # -> int: new bronze rows from the hub (checkpoint after commit)
    cloud.ingest_batch(folder)     # -> dict: master data / sales exports; idempotent by content hash
    cloud.transform()              # -> dict: incremental silver + gold; new rows per table, dedup /
                                   #    quarantine / late counts
    cloud.build_warehouse()        # -> Path of the DuckDB warehouse
    cloud.build_dashboard(path)    # -> Path of the self-contained HTML dashboard
    cloud.table_counts()           # -> {"silver.pos_line": n, ...} for every existing lake table
    cloud.silver_keys("pos.line")  # -> {(device_id, seq), ...}

``lake_uri`` is a folder or an ``abfss://`` / ``az://`` URI (credentials in
``storage_options``). ``source`` picks the stream: ``"local"`` reads the embedded hub at
``hub_path``; ``"eventhubs"`` builds the Azure adapter (``cloud.azure.eventhubs``) from
``eventhubs`` settings. ``engine`` is ``"duckdb"`` (default) or ``"spark"``.

Errors: ``ConfigError`` for bad settings; the methods raise what their modules document
(``StorageError``, ``TransportError``, ``ExpectationFailed``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from gondola.errors import ConfigError

__all__ = ["CloudSettings", "Cloud", "build_cloud"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CloudSettings:
    lake_uri: str = "out/lake"
    hub_path: str | None = "out/hub.sqlite"
    warehouse_path: str = "out/warehouse.duckdb"
    storage_options: Mapping[str, str] | None = None
    source: str = "local"  # local | eventhubs
    engine: str = "duckdb"  # duckdb | spark
    consumer_group: str = "$Default"
    eventhubs: Mapping[str, str] = field(default_factory=dict)  # settings for the Azure adapter
    context_days: int = 1


class Cloud:
    """The cloud side's operations over one lake (see module docstring)."""

    def __init__(self, settings: CloudSettings, storage, engine, source_factory: Callable[[], object] | None,
                 progress: Callable[[str], None] | None = None):
        self.settings = settings
        self.storage = storage
        self.engine = engine
        self._source_factory = source_factory
        self._progress = progress
        self._lineage = None

    @property
    def lineage(self):
        """Run lineage: OpenLineage events to ``GONDOLA_LINEAGE`` and to ``meta.lineage``."""
        if self._lineage is None:
            from cloud.meta.lineage import lake_lineage

            self._lineage = lake_lineage(self.storage)
        return self._lineage

    def _tables(self, versions: dict[str, int]) -> list:
        from cloud.meta.lineage import table_dataset

        return [table_dataset(self.storage, t, v) for t, v in sorted(versions.items())]

    def _say(self, text: str) -> None:
        if self._progress:
            self._progress(text)

    def ingest_stream(self) -> int:
        """New bronze rows from the stream source; checkpoints stored after each bronze commit."""
        from cloud.ingest.stream import ingest_stream

        if self._source_factory is None:
            raise ConfigError("no stream source configured (set hub_path, or source='eventhubs')")
        from cloud.lake.tables import BRONZE_EVENTS
        from gondola.lineage import Dataset

        source = self._source_factory()
        checkpoints = getattr(source, "checkpoints", None)
        if not self.storage.exists(BRONZE_EVENTS) and checkpoints is not None and checkpoints():
            # The checkpoints belong to the consumer group, not to a lake: a new lake would start
            # where another lake's reader stopped and miss everything before.
            text = (f"stream: consumer group {self.settings.consumer_group!r} already read this hub into "
                    "another lake; this new lake gets only what came after. For all of it, give this lake "
                    "its own group: --consumer-group NAME")
            log.warning(text)
            self._say(text)
        hub = Dataset("hub", str(self.settings.hub_path if self.settings.source == "local" else "eventhubs"))
        try:
            with self.lineage.run("gondola.ingest_stream", [hub]) as run:
                report = (lambda m, r: self._say(f"stream: {m} messages read, {r} new bronze rows")) if self._progress else None
                rows = ingest_stream(self.storage, source, progress=report)
                run.outputs += self._tables({BRONZE_EVENTS: self.storage.version(BRONZE_EVENTS)})
                run.facts["rows"] = rows
                return rows
        finally:
            source.close()

    def ingest_batch(self, folder: str | Path) -> dict:
        """Load master data / sales export CSVs from ``folder`` (each file content once)."""
        from cloud.ingest.batch import ingest_batch
        from cloud.lake.tables import BRONZE_BATCH
        from gondola.lineage import Dataset

        with self.lineage.run("gondola.ingest_batch", [Dataset("file", str(Path(folder).absolute()))]) as run:
            report = ingest_batch(self.storage, folder,
                                  progress=(lambda f, s: self._say(f"batch: {f}: {s}")) if self._progress else None)
            if self.storage.exists(BRONZE_BATCH):
                run.outputs += self._tables({BRONZE_BATCH: self.storage.version(BRONZE_BATCH)})
            return report

    def transform(self) -> dict:
        """Incremental bronze -> silver -> gold (see ``cloud.lake.runner.transform``)."""
        from cloud.lake.runner import transform
        from cloud.lake.tables import BRONZE_BATCH, BRONZE_EVENTS, GOLD_TABLES, LINEAGE

        bronze = {t: self.storage.version(t) for t in (BRONZE_EVENTS, BRONZE_BATCH) if self.storage.exists(t)}
        with self.lineage.run("gondola.transform", self._tables(bronze)) as run:
            report = transform(self.storage, self.engine, context_days=self.settings.context_days,
                               progress=(lambda s: self._say(f"transform: {s}")) if self._progress else None)
            # inputs: bronze as read, and the silver versions gold was computed from (written this run or not)
            written = {t: v[1] for t, v in report.get("versions", {}).items()
                       if not t.startswith("bronze.") and v[1] != v[0]}
            gold_reads = {i for g in GOLD_TABLES for i in LINEAGE[g][0] if i.startswith("silver.")}
            silver_read = {t: self.storage.version(t) for t in sorted(gold_reads) if self.storage.exists(t)}
            run.inputs += self._tables({t: v for t, v in silver_read.items() if t not in bronze})
            run.outputs += self._tables(written)
            run.facts.update({k: v for k, v in report.items() if isinstance(v, (int, float, str))})
            return report

    def build_warehouse(self) -> Path:
        """The DuckDB warehouse over gold and silver, with Power BI-ready ``bi_*`` views."""
        from cloud.warehouse import WAREHOUSE_TABLES, build_warehouse
        from gondola.lineage import Dataset

        read = {t.name: self.storage.version(t.name) for t in WAREHOUSE_TABLES if self.storage.exists(t.name)}
        with self.lineage.run("gondola.warehouse", self._tables(read)) as run:
            path = build_warehouse(self.storage, self.settings.warehouse_path)
            run.outputs.append(Dataset("duckdb", str(Path(path).absolute())))
            return path

    def build_dashboard(self, out_html: str | Path) -> Path:
        """The self-contained HTML dashboard (builds the warehouse first if it is missing)."""
        from cloud.dashboard import build_dashboard

        if not Path(self.settings.warehouse_path).exists():
            self.build_warehouse()
        return build_dashboard(self.settings.warehouse_path, out_html)

    def table_counts(self) -> dict[str, int]:
        """Rows per existing bronze / silver / gold table, keyed ``layer.name``."""
        from cloud.lake.tables import TABLES

        counts = {}
        for name in TABLES:
            dt = self.storage.open(name)
            if dt is not None:
                counts[name] = dt.to_pyarrow_dataset().count_rows()
        return counts

    def silver_keys(self, etype: str) -> set[tuple[str, int]]:
        """``{(device_id, seq)}`` of one event type in silver (conservation checks)."""
        from cloud.lake.tables import SILVER_EVENT_TABLES

        if etype not in SILVER_EVENT_TABLES:
            raise ConfigError(f"unknown event type {etype!r}")
        rows = self.storage.read(SILVER_EVENT_TABLES[etype], columns=["device_id", "seq"])
        if rows is None:
            return set()
        return set(zip(rows["device_id"].to_pylist(), rows["seq"].to_pylist()))


def build_cloud(settings: CloudSettings, *, progress: Callable[[str], None] | None = None) -> Cloud:
    """Build the cloud side from settings; nothing is opened until an operation runs.

    Raises:
        ConfigError: unknown source / engine, or a URI scheme the lake does not support.
    """
    from cloud.lake.storage import open_storage

    storage = open_storage(settings.lake_uri, settings.storage_options)
    if settings.engine == "duckdb":
        from cloud.lake.engine import DuckDBEngine

        engine = DuckDBEngine()
    elif settings.engine == "spark":
        from cloud.lake.spark import SparkEngine

        engine = SparkEngine()
    else:
        raise ConfigError(f"engine {settings.engine!r} is not 'duckdb' or 'spark'")
    if settings.source == "local":
        factory = None
        if settings.hub_path:
            from cloud.ingest.source import LocalHubSource

            hub_path, group = settings.hub_path, settings.consumer_group
            factory = lambda: LocalHubSource(hub_path, consumer_group=group)  # noqa: E731
    elif settings.source == "eventhubs":
        def factory():
            from cloud.azure import eventhubs  # the Azure adapter (another module's SDK boundary)

            return eventhubs.build_source(dict(settings.eventhubs), consumer_group=settings.consumer_group)
    else:
        raise ConfigError(f"source {settings.source!r} is not 'local' or 'eventhubs'")
    return Cloud(settings, storage, engine, factory, progress)
