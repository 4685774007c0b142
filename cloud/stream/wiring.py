"""Build the stream job from settings (the command line and the environment).

``StreamSettings`` fields and their environment variables:

==================  ================================  =====================================================
field               environment                       meaning
==================  ================================  =====================================================
source              GONDOLA_STREAM_SOURCE             ``local`` (embedded hub, default) or ``eventhubs``
consumer_group      GONDOLA_STREAM_CONSUMER_GROUP     default ``cloud-stream`` (not the lake's group)
model               GONDOLA_STREAM_MODEL              model file (.onnx on onnxruntime, .tflite on LiteRT),
                                                      ``none`` to switch scoring off; default: the shipped model
planogram           GONDOLA_STREAM_PLANOGRAM          planogram CSV; default: ``silver.planogram`` in the lake
stock_records       GONDOLA_STREAM_STOCK_RECORDS      folder of the ERP's nightly ``stock_record*.csv`` (the
                                                      batch landing folder), ``none`` for none; default:
                                                      ``silver.stock_record`` in the lake
products            GONDOLA_STREAM_PRODUCTS           products CSV (``sku``, ``category``: the master data
                                                      file), ``none`` for none; default: ``silver.products``
                                                      in the lake (read only under ``band_rule`` exposure
                                                      or shelf_switch)
band_rule           GONDOLA_STREAM_BAND_RULE          ``demand_band``'s rule: ``shelf_switch`` (default, in
                                                      force), ``share`` (in force before), ``exposure`` or
                                                      ``shelf`` (measured alternatives, docs/stream.md)
==================  ================================  =====================================================

The Event Hubs connection settings are the lake's (``GONDOLA_EVENTHUB_*``,
``GONDOLA_CHECKPOINT_*``, docs/azure.md).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from cloud.stream.detectors import BAND_RULES, CATEGORY_RULES, DetectorConfig
from cloud.stream.job import StreamJob
from cloud.stream.pipeline import StreamConfig
from gondola.clock import MINUTE_MS
from gondola.errors import ConfigError

__all__ = ["StreamSettings", "build_stream_job", "load_planograms", "load_stock_records", "load_categories",
           "DEFAULT_CONSUMER_GROUP"]

DEFAULT_CONSUMER_GROUP = "cloud-stream"


@dataclass(frozen=True)
class StreamSettings:
    lake_uri: str = "out/lake"
    hub_path: str = "out/hub.sqlite"
    storage_options: Mapping[str, str] | None = None
    source: str = "local"
    consumer_group: str = DEFAULT_CONSUMER_GROUP
    eventhubs: Mapping[str, str] = field(default_factory=dict)
    model: str | None = None  # None: the shipped model; "none": no scoring
    planogram: str | None = None
    stock_records: str | None = None  # None: silver.stock_record in the lake; "none": no stock record
    products: str | None = None  # None: silver.products in the lake; "none": no categories
    band_rule: str = "shelf_switch"  # demand_band's rule (DetectorConfig.band_rule); CATEGORY_RULES read categories
    allowed_lateness_min: float = 10.0
    snapshot_every_s: float = 30.0
    max_messages: int = 2000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "StreamSettings":
        """Settings from ``GONDOLA_STREAM_*`` variables; ``overrides`` (not None) win."""
        env = os.environ if env is None else env
        values = {"source": env.get("GONDOLA_STREAM_SOURCE"), "consumer_group": env.get("GONDOLA_STREAM_CONSUMER_GROUP"),
                  "model": env.get("GONDOLA_STREAM_MODEL"), "planogram": env.get("GONDOLA_STREAM_PLANOGRAM"),
                  "stock_records": env.get("GONDOLA_STREAM_STOCK_RECORDS"), "products": env.get("GONDOLA_STREAM_PRODUCTS"),
                  "band_rule": env.get("GONDOLA_STREAM_BAND_RULE")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: v for k, v in values.items() if v is not None})


def _csv_rows(csv_path: str, what: str, columns: set[str]) -> list[dict]:
    """The rows of a master data CSV (``what``: its name in errors), which must hold ``columns``
    in its header (a file with the header only has no rows).

    Raises:
        ConfigError: the file is missing or its header lacks a column.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = columns - set(reader.fieldnames or ())
        if missing:
            raise ConfigError(f"{what} file {path} lacks column(s) {', '.join(sorted(missing))}")
        return list(reader)


def load_planograms(storage, csv_path: str | None) -> dict:
    """Facings per store from a planogram CSV, else from ``silver.planogram``; ``{}`` when neither.

    Raises:
        ConfigError: the CSV is missing or lacks a column.
    """
    from models.replay import planograms_from_rows

    if csv_path:
        return planograms_from_rows(_csv_rows(csv_path, "planogram", {"store_id", "facing_id", "sku", "capacity"}))
    rows = storage.read("silver.planogram")
    return planograms_from_rows(rows) if rows is not None and rows.num_rows else {}


def load_categories(storage, csv_path: str | None):
    """The products' categories (``Categories``) from a products CSV, else from ``silver.products``;
    ``None`` for ``none`` or when neither has a category.

    Raises:
        ConfigError: the CSV is missing or lacks a column.
    """
    from cloud.stream.detectors import Categories

    if csv_path is not None and csv_path.lower() == "none":
        return None
    if csv_path:
        rows = _csv_rows(csv_path, "products", {"sku", "category"})
    else:
        table = storage.read("silver.products", columns=["sku", "category"])
        rows = table.to_pylist() if table is not None else []
    categories = Categories({r["sku"]: r["category"] for r in rows if r.get("sku")})
    return categories if len(categories) else None


def load_stock_records(storage, path: str | None):
    """The stock record side input: the CSVs under a folder, ``None`` for ``none``, else the lake's
    ``silver.stock_record`` (looked up when asked: the lake may load it after the job started).

    Raises:
        ConfigError: the folder does not exist.
    """
    from cloud.stream.stock import StockRecordFiles, StockRecordTable

    if path is not None and path.lower() == "none":
        return None
    if path:
        if not Path(path).is_dir():
            what = "is a file, not a folder" if Path(path).exists() else "does not exist"
            raise ConfigError(f"stock record folder {path} {what} (give the folder the stores' "
                              "stock_record_<store>.csv files land in, or none)")
        return StockRecordFiles(path)
    return StockRecordTable(storage)


def _scorer(model: str | None):
    if model is not None and model.lower() == "none":
        return None
    from models.runtime import DEFAULT_MODEL, open_scorer

    return open_scorer(Path(model) if model else DEFAULT_MODEL, None)


def build_stream_job(settings: StreamSettings, *, progress=None) -> StreamJob:
    """The stream job from settings; opens the source, the model and the planograms.

    Raises:
        ConfigError: unknown source or ``band_rule``, missing Event Hubs settings, bad planogram or
            products file, missing stock record folder.
        ModelError: the model cannot be loaded.
    """
    from cloud.lake.storage import open_storage

    if settings.source not in ("local", "eventhubs"):
        raise ConfigError(f"stream source {settings.source!r} is not 'local' or 'eventhubs'")
    if settings.band_rule not in BAND_RULES:
        raise ConfigError(f"band rule {settings.band_rule!r} is not one of {', '.join(BAND_RULES)}")
    storage = open_storage(settings.lake_uri, settings.storage_options)
    planograms = load_planograms(storage, settings.planogram)
    stock_records = load_stock_records(storage, settings.stock_records)
    # Only the rules that net out shoppers switching inside a category (CATEGORY_RULES, the one in
    # force among them) read the products' categories; "share" and "shelf" do not load them.
    categories = load_categories(storage, settings.products) if settings.band_rule in CATEGORY_RULES else None
    scorer = _scorer(settings.model)
    if settings.source == "local":
        from cloud.ingest.source import LocalHubSource

        if not Path(settings.hub_path).exists():
            raise ConfigError(f"hub file {settings.hub_path} does not exist")
        source = LocalHubSource(settings.hub_path, consumer_group=settings.consumer_group)
    else:
        from cloud.azure import eventhubs  # the Azure adapter (the SDK stays behind it)

        # A long-running reader: an empty receive is not the end, so no startup wait is needed.
        source = eventhubs.build_source(dict(settings.eventhubs), consumer_group=settings.consumer_group)
    config = StreamConfig(allowed_lateness_ms=int(settings.allowed_lateness_min * MINUTE_MS),
                          detectors=DetectorConfig(band_rule=settings.band_rule))
    return StreamJob(storage, source, config=config, scorer=scorer, planograms=planograms, stock_records=stock_records,
                     categories=categories,
                     snapshot_every_s=settings.snapshot_every_s, max_messages=settings.max_messages, progress=progress)
