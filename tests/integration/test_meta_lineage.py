"""Run lineage: every cloud run emits OpenLineage events, kept in meta.lineage and walked by gondola lineage."""

from __future__ import annotations

import json

import pytest

from cloud.meta.cli import lineage_main
from cloud.meta.lineage import lake_lineage
from cloud.synth import day_events, fill_hub, write_master_csvs
from cloud.wiring import CloudSettings, build_cloud
from gondola.errors import ConfigError
from gondola.hub import LocalHub
from gondola.lineage import Dataset, lineage_from_env


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("GONDOLA_LINEAGE", f"file:{tmp_path / 'ol' / 'events.jsonl'}")
    hub = LocalHub(tmp_path / "hub.sqlite")
    write_master_csvs(tmp_path / "master", stores=2, facings=3)
    cloud = build_cloud(CloudSettings(lake_uri=str(tmp_path / "lake"), hub_path=str(tmp_path / "hub.sqlite"),
                                      warehouse_path=str(tmp_path / "wh.duckdb")))
    events = list(day_events(stores=2, facings=3, hours=8))
    cloud.ingest_batch(tmp_path / "master")
    fill_hub(hub, events[: len(events) // 2])
    cloud.ingest_stream()
    cloud.transform()
    fill_hub(hub, events[len(events) // 2:])
    cloud.ingest_stream()
    cloud.transform()
    cloud.build_warehouse()
    yield {"cloud": cloud, "hub": hub, "tmp": tmp_path, "events": events}
    hub.close()


def test_each_run_emits_start_and_complete_with_versions_and_masking_facets(lake):
    lines = [json.loads(x) for x in (lake["tmp"] / "ol" / "events.jsonl").read_text().splitlines()]
    jobs = [(e["job"]["name"], e["eventType"]) for e in lines]
    for job in ("gondola.ingest_batch", "gondola.ingest_stream", "gondola.transform", "gondola.warehouse"):
        assert (job, "START") in jobs and (job, "COMPLETE") in jobs, job
    assert jobs.count(("gondola.transform", "COMPLETE")) == 2
    transform = [e for e in lines if e["job"]["name"] == "gondola.transform" and e["eventType"] == "COMPLETE"][0]
    outputs = {o["name"]: o for o in transform["outputs"]}
    assert "silver.pos_line" in outputs and "gold.features" in outputs
    pos = outputs["silver.pos_line"]["facets"]
    assert int(pos["version"]["datasetVersion"]) >= 0
    (src,) = pos["columnLineage"]["fields"]["loyalty_pid"]["inputFields"]
    assert src["name"] == "bronze.events" and src["transformations"][0]["masking"] is True
    assert {f["name"] for f in pos["schema"]["fields"]} >= {"loyalty_pid", "sku", "qty"}
    assert {i["name"] for i in transform["inputs"]} >= {"bronze.events"}
    # the lake keeps the same events
    stored = lake["cloud"].storage.read("meta.lineage").to_pylist()
    assert len(stored) == len(lines)
    assert {r["run_id"] for r in stored} == {e["run"]["runId"] for e in lines}


def test_gondola_lineage_walks_a_model_back_to_runs_and_devices_and_forward_to_gateways(lake, capsys):
    cloud, tmp = lake["cloud"], lake["tmp"]
    gold_version = cloud.storage.version("gold.features")
    manifest = tmp / "stockout-int8.manifest.json"
    manifest.write_text(json.dumps({"version": "m-test-1", "training": {"tables": {"gold.features": gold_version}}}))
    with lake_lineage(cloud.storage).run("gondola.publish_model", [Dataset("models", "m-test-1")]) as run:
        run.outputs += [Dataset("twin", "gw-s001"), Dataset("twin", "gw-s002")]
    lake["hub"].patch_reported("gw-s001", "gondola-gateway", {"model": {"version": "m-test-1", "status": "active"}})
    lake["hub"].patch_reported("gw-s002", "gondola-gateway", {"model": {"version": "m-old", "status": "active"}})

    assert lineage_main([str(manifest), "--lake", str(tmp / "lake"), "--hub", str(tmp / "hub.sqlite"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gold_features_version"] == gold_version
    assert [r["job"] for r in result["transform_runs"]].count("gondola.transform") == 2
    assert {r["job"] for r in result["ingest_runs"]} >= {"gondola.ingest_stream"}
    assert result["silver"]["silver.pos_line"] == cloud.storage.version("silver.pos_line")
    pos_devices = set(cloud.storage.read("silver.pos_line", columns=["device_id"])["device_id"].to_pylist())
    assert pos_devices and pos_devices <= set(result["devices"])
    assert result["published_to"] == ["gw-s001", "gw-s002"]
    assert result["running_on"] == ["gw-s001"]


def test_lineage_settings_are_checked_and_a_missing_lake_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="GONDOLA_LINEAGE"):
        lineage_from_env(env={"GONDOLA_LINEAGE": "kafka://x"})
    assert lineage_from_env(env={})._client is None
    with pytest.raises(ConfigError, match="no meta.lineage"):
        lineage_main(["m1", "--lake", str(tmp_path / "nowhere")])
    assert not (tmp_path / "nowhere").exists()
