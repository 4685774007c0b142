"""``gondola cloud stream`` wiring: the source from the command line and the environment."""

from __future__ import annotations

import pytest

from cloud.stream.wiring import DEFAULT_CONSUMER_GROUP, StreamSettings, build_stream_job
from gondola.errors import ConfigError

_EH = "Endpoint=sb://fake-ns.servicebus.example.invalid/;SharedAccessKeyName=s;SharedAccessKey=ZmFrZQ=="
_CP = "DefaultEndpointsProtocol=https;AccountName=fake;AccountKey=ZmFrZQ==;EndpointSuffix=example.invalid"


def test_stream_settings_come_from_the_environment_and_the_command_line_wins():
    env = {"GONDOLA_STREAM_SOURCE": "eventhubs", "GONDOLA_STREAM_CONSUMER_GROUP": "ops", "GONDOLA_STREAM_MODEL": "none"}
    s = StreamSettings.from_env(env)
    assert (s.source, s.consumer_group, s.model) == ("eventhubs", "ops", "none")
    s = StreamSettings.from_env(env, source="local", consumer_group=None)
    assert (s.source, s.consumer_group) == ("local", "ops")
    assert StreamSettings.from_env({}).consumer_group == DEFAULT_CONSUMER_GROUP == "cloud-stream"


def test_the_event_hubs_source_is_built_from_the_environment_with_the_streams_own_consumer_group(monkeypatch, tmp_path):
    monkeypatch.setenv("GONDOLA_EVENTHUB_CONNECTION_STRING", _EH)
    monkeypatch.setenv("GONDOLA_EVENTHUB_NAME", "gondola-hub")
    monkeypatch.setenv("GONDOLA_CHECKPOINT_CONNECTION_STRING", _CP)
    job = build_stream_job(StreamSettings(lake_uri=str(tmp_path / "lake"), source="eventhubs", model="none"))
    try:
        assert job.source.name == "eventhubs:gondola-hub/cloud-stream"  # not the lake's group
        assert job.scorer is None and job.planograms == {}
    finally:
        job.source.close()


def test_an_unknown_source_or_a_missing_hub_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not 'local' or 'eventhubs'"):
        build_stream_job(StreamSettings(lake_uri=str(tmp_path / "lake"), source="kafka", model="none"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_stream_job(StreamSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "nope.sqlite"),
                                        model="none"))


def test_the_stock_record_side_input_comes_from_a_folder_none_or_the_lakes_table(tmp_path):
    import pyarrow as pa

    from cloud.lake.storage import open_storage
    from cloud.lake.tables import conform
    from cloud.stream.stock import StockRecordFiles, StockRecordTable
    from cloud.stream.wiring import load_stock_records

    assert StreamSettings.from_env({"GONDOLA_STREAM_STOCK_RECORDS": "none"}).stock_records == "none"
    storage = open_storage(str(tmp_path / "lake"))
    assert load_stock_records(storage, "none") is None
    with pytest.raises(ConfigError, match="stock record folder .* does not exist"):
        load_stock_records(storage, str(tmp_path / "nope"))
    (tmp_path / "one.csv").write_text("store_id\n")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        load_stock_records(storage, str(tmp_path / "one.csv"))
    (tmp_path / "erp").mkdir()
    assert isinstance(load_stock_records(storage, str(tmp_path / "erp")), StockRecordFiles)
    table = load_stock_records(storage, None)
    assert isinstance(table, StockRecordTable) and table.book("s001", "2026-01-05") is None  # no table yet
    storage.write("silver.stock_record", conform("silver.stock_record", pa.Table.from_pylist([
        {"date": "2026-01-05", "store_id": "s001", "sku": "A", "book_units": 4, "counted_units": None},
        {"date": "2026-01-05", "store_id": "s002", "sku": "A", "book_units": 9, "counted_units": None},
        {"date": "2026-01-06", "store_id": "s001", "sku": "A", "book_units": 0, "counted_units": 0}])))
    assert table.book("s001", "2026-01-05") == {"A": 4} and table.book("s001", "2026-01-06") == {"A": 0}
    assert table.book("s003", "2026-01-05") is None


def test_the_products_categories_come_from_a_products_file_none_or_the_lakes_table(tmp_path):
    import pyarrow as pa

    from cloud.lake.storage import open_storage
    from cloud.lake.tables import conform
    from cloud.stream.wiring import load_categories

    assert StreamSettings.from_env({"GONDOLA_STREAM_PRODUCTS": "none"}).products == "none"
    storage = open_storage(str(tmp_path / "lake"))
    assert load_categories(storage, "none") is None
    assert load_categories(storage, None) is None  # no silver.products yet
    with pytest.raises(ConfigError, match="products file .* does not exist"):
        load_categories(storage, str(tmp_path / "nope.csv"))
    (tmp_path / "bad.csv").write_text("sku,name\nA,milk\n")
    with pytest.raises(ConfigError, match="lacks column.*category"):
        load_categories(storage, str(tmp_path / "bad.csv"))
    (tmp_path / "header.csv").write_text("sku,name,category\n")  # no product yet: no categories, not a bad file
    assert load_categories(storage, str(tmp_path / "header.csv")) is None
    (tmp_path / "products.csv").write_text("sku,name,category\nA,milk,dairy\nB,cream,dairy\nC,rice,pantry\n")
    cats = load_categories(storage, str(tmp_path / "products.csv"))
    assert cats.siblings("A") == ("B",) and cats.siblings("C") == () and cats.category("D") is None
    storage.write("silver.products", conform("silver.products", pa.Table.from_pylist([
        {"sku": "A", "name": "milk", "category": "dairy", "price_cents": 99, "unit_weight_g": 1000.0, "pack_size": 6},
        {"sku": "B", "name": "cream", "category": "dairy", "price_cents": 199, "unit_weight_g": 200.0, "pack_size": 6},
        {"sku": "E", "name": "eggs", "category": "dairy", "price_cents": 299, "unit_weight_g": 600.0, "pack_size": 6}])))
    assert load_categories(storage, None).siblings("A") == ("B", "E")


def test_a_planogram_file_is_read_by_its_header(tmp_path):
    from cloud.stream.wiring import load_planograms

    (tmp_path / "empty.csv").write_text("store_id,facing_id,sku,capacity\n")
    assert load_planograms(None, str(tmp_path / "empty.csv")) == {}
    (tmp_path / "bad.csv").write_text("store_id,facing_id,capacity\ns001,f1,6\n")
    with pytest.raises(ConfigError, match="planogram file .* lacks column.*sku"):
        load_planograms(None, str(tmp_path / "bad.csv"))
    (tmp_path / "plan.csv").write_text("store_id,facing_id,sku,capacity,has_sensor\ns001,f1,A,6,true\ns001,f2,A,4,false\n")
    plan = load_planograms(None, str(tmp_path / "plan.csv"))
    assert [(f.facing_id, f.sku, f.capacity) for f in plan["s001"]] == [("f1", "A", 6), ("f2", "A", 4)]


def test_demand_bands_rule_comes_from_the_command_line_or_the_environment_and_only_category_rules_read_categories(
        monkeypatch, tmp_path):
    assert StreamSettings.from_env({}).band_rule == "shelf_switch"
    assert StreamSettings.from_env({"GONDOLA_STREAM_BAND_RULE": "exposure"}).band_rule == "exposure"
    assert StreamSettings.from_env({"GONDOLA_STREAM_BAND_RULE": "exposure"}, band_rule="share").band_rule == "share"
    monkeypatch.setenv("GONDOLA_EVENTHUB_CONNECTION_STRING", _EH)
    monkeypatch.setenv("GONDOLA_EVENTHUB_NAME", "gondola-hub")
    monkeypatch.setenv("GONDOLA_CHECKPOINT_CONNECTION_STRING", _CP)
    lake, missing = str(tmp_path / "lake"), str(tmp_path / "nope.csv")

    def build(**kw):
        return build_stream_job(StreamSettings(lake_uri=lake, source="eventhubs", model="none", **kw))

    # The rule in force before ("share") does not read the products: a missing file is not even opened.
    job = build(products=missing, band_rule="share")
    try:
        assert job.categories is None and job.config.detectors.band_rule == "share"
    finally:
        job.source.close()
    # The rule in force reads them: from silver.products by default (none in this empty lake: the
    # rule judges without them), a missing file named is an error.
    job = build()
    try:
        assert job.categories is None and job.config.detectors.band_rule == "shelf_switch"
    finally:
        job.source.close()
    for rule in ("exposure", "shelf_switch"):
        with pytest.raises(ConfigError, match="products file .* does not exist"):
            build(products=missing, band_rule=rule)
    with pytest.raises(ConfigError, match="band rule 'promo' is not one of shelf_switch, share, exposure"):
        build(band_rule="promo")
    (tmp_path / "products.csv").write_text("sku,name,category\nA,milk,dairy\nB,cream,dairy\nC,rice,pantry\n")
    for rule in ("exposure", "shelf_switch"):
        job = build(products=str(tmp_path / "products.csv"), band_rule=rule)
        try:
            assert len(job.categories) == 3 and job.config.detectors.band_rule == rule
        finally:
            job.source.close()


def test_the_clis_band_rule_choices_are_the_detectors_rules():
    # cloud.cli keeps its own tuple (importing cloud.stream at parse time costs ~0.3 s on every
    # `gondola cloud` command): this keeps the two from drifting apart.
    from cloud.cli import _parser
    from cloud.stream.detectors import BAND_RULES

    stream = next(a for a in _parser()._subparsers._group_actions[0].choices["stream"]._actions
                  if a.dest == "band_rule")
    assert tuple(stream.choices) == BAND_RULES
