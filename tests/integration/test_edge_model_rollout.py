"""Cloud to gateway: ``cloud.rollout`` publishes a model and writes twins; gateways follow and
report; the rollout status reads their reports. Folder store + embedded hub, and Azure Blob
SAS URLs on Azurite."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloud.rollout import FolderModelStore, publish_model, rollout_status
from edge.testing import T0, planogram_csv, reading
from edge.wiring import EdgeSettings, build_gateway
from gondola.clock import SimClock
from gondola.errors import ModelError
from gondola.hub import LocalHub
from models.package import file_sha256
from tests.model_packages import KEY, package


def _gateway(tmp_path: Path, store_id: str):
    (tmp_path / f"planogram-{store_id}.csv").write_text(planogram_csv(store_id, facings=6))
    (tmp_path / "model.key").write_bytes(KEY)
    gw = build_gateway(EdgeSettings(store_id=store_id, data_dir=tmp_path / f"gw-{store_id}",
                                    hub_path=tmp_path / "hub.sqlite",
                                    planogram_path=tmp_path / f"planogram-{store_id}.csv",
                                    model_key_file=tmp_path / "model.key"), clock=SimClock(T0))
    gw.collector.commit_group([(f"gondola/{store_id}/shelf/shelf-{store_id}-f{i}", json.dumps(
        reading(0, T0, store_id=store_id, device_id=f"shelf-{store_id}-f{i}", facing_id=f"f{i}", sku=f"k{i}")).encode(),
        (0, 0)) for i in range(6)])
    gw.models.start()
    gw.transport.on_desired(gw.models.on_desired)
    return gw


def test_a_published_model_reaches_every_targeted_gateway_and_the_rollout_status_says_so(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    hub.set_desired("gw-s001", "gondola-gateway", {"log_level": "info"})  # kept by the rollout
    gateways = [_gateway(tmp_path, s) for s in ("s001", "s002", "s003")]
    pkg = package(tmp_path / "train", "v7")
    try:
        done = publish_model(pkg["path"], store=FolderModelStore(tmp_path / "store"), twins=hub,
                             device_ids=["gw-s001", "gw-s002"], key=KEY)
        assert done["devices"] == ["gw-s001", "gw-s002"] and done["signed"] and done["version"] == "v7"
        targets = ["gw-s001", "gw-s002", "gw-s003"]
        assert rollout_status(hub, targets)["by_status"] == {"pending": 3}
        for gw in gateways:
            gw.poll_desired()
            assert gw.models.wait_idle(30)
        status = rollout_status(hub, targets)
        assert status["by_status"] == {"active": 2, "pending": 1}  # s003 was not targeted
        assert status["devices"]["gw-s001"]["version"] == "v7"
        assert [gw.inference.scorer.name for gw in gateways] == ["model:v7", "model:v7", gateways[2].inference.scorer.name]
        assert gateways[2].inference.scorer.name != "model:v7"
        assert hub.get_twin("gw-s001", "gondola-gateway")["desired"]["log_level"] == "info"
        stored = tmp_path / "store" / "v7" / "stockout-v7.tflite"
        assert file_sha256(stored) == pkg["sha256"]
    finally:
        for gw in gateways:
            gw.stop()


def test_a_package_that_does_not_verify_is_not_uploaded_and_no_twin_changes(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    version_before = hub.get_twin("gw-s001", "gondola-gateway")["desired"]["$version"]
    other_key = package(tmp_path / "a", "v8", key=b"not-the-fleet-key-0123456789abcdef")
    with pytest.raises(ModelError, match="signature"):
        publish_model(other_key["path"], store=FolderModelStore(tmp_path / "store"), twins=hub,
                      device_ids=["gw-s001"], key=KEY)
    tampered = package(tmp_path / "b", "v9")
    Path(tampered["path"]).write_bytes(Path(tampered["path"]).read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelError, match="sha256|bytes"):
        publish_model(tampered["path"], store=FolderModelStore(tmp_path / "store"), twins=hub,
                      device_ids=["gw-s001"], key=None)
    assert not (tmp_path / "store").exists()
    assert hub.get_twin("gw-s001", "gondola-gateway")["desired"]["$version"] == version_before


def test_a_failed_model_shows_as_failed_in_the_rollout_status(tmp_path):
    hub = LocalHub(tmp_path / "hub.sqlite")
    gw = _gateway(tmp_path, "s001")
    unsigned = package(tmp_path / "train", "v10", key=None)  # the gateway holds a key: refuses it
    try:
        publish_model(unsigned["path"], store=FolderModelStore(tmp_path / "store"), twins=hub, device_ids=["gw-s001"])
        gw.poll_desired()
        assert gw.models.wait_idle(30)
        status = rollout_status(hub, ["gw-s001"])["devices"]["gw-s001"]
        assert status["status"] == "failed" and "not signed" in status["error"] and status["desired"] == "v10"
    finally:
        gw.stop()


def test_azure_blob_model_store_hands_out_read_only_sas_urls_a_gateway_can_fetch(azurite, tmp_path):
    from azure.storage.blob import ContainerClient

    from cloud.azure.models import BlobModelStore
    from edge.model_manager import fetch_url

    container = azurite.new_container("models")
    store = BlobModelStore(ContainerClient.from_connection_string(azurite.connection_string, container))
    pkg = package(tmp_path / "train", "v11")
    url, manifest_url = store.put("v11", Path(pkg["path"]), Path(pkg["path"]).with_name("stockout-v11.manifest.json"))
    assert "sig=" in url and "/models/v11/stockout-v11.tflite?" in url
    assert fetch_url(url, tmp_path / "got.tflite", max_bytes=1 << 20) == pkg["sha256"]
    with pytest.raises(urllib.error.HTTPError) as denied:  # the blob itself is private
        urllib.request.urlopen(url.split("?")[0], timeout=10)
    assert denied.value.code in (401, 403, 404)
    write = urllib.request.Request(url, data=b"x", method="PUT", headers={"x-ms-blob-type": "BlockBlob"})
    with pytest.raises(urllib.error.HTTPError) as refused:  # read-only: cannot overwrite the model
        urllib.request.urlopen(write, timeout=10)
    assert refused.value.code == 403

    # The whole way: blobs on Azurite, twin in the embedded hub, a gateway that follows it.
    hub = LocalHub(tmp_path / "hub.sqlite")
    gw = _gateway(tmp_path, "s001")
    try:
        publish_model(pkg["path"], store=store, twins=hub, device_ids=["gw-s001"], key=KEY)
        gw.poll_desired()
        assert gw.models.wait_idle(30)
        assert gw.inference.scorer.name == "model:v11"
        twin = hub.get_twin("gw-s001", "gondola-gateway")
        assert twin["reported"]["model"]["status"] == "active"
        assert "sig=" not in json.dumps(twin["reported"])
    finally:
        gw.stop()


def test_the_cloud_cli_publishes_a_model_and_shows_what_each_gateway_runs(tmp_path, capsys):
    from cloud.cli import main

    hub_path = str(tmp_path / "hub.sqlite")
    (tmp_path / "fleet.key").write_bytes(KEY)
    pkg = package(tmp_path / "train", "v12")
    gw = _gateway(tmp_path, "s001")
    try:
        assert main(["--hub", hub_path, "publish-model", pkg["path"], "--devices", "gw-s001", "gw-s002",
                     "--store", str(tmp_path / "store"), "--key-file", str(tmp_path / "fleet.key")]) == 0
        assert "model v12 (signed" in capsys.readouterr().out
        gw.poll_desired()
        assert gw.models.wait_idle(30)
        assert main(["--hub", hub_path, "model-status", "--devices", "gw-s001", "gw-s002"]) == 0
        out = capsys.readouterr().out
        assert "by status: active 1, pending 1" in out
        assert [line.split()[-1] for line in out.splitlines()[:2]] == ["active", "pending"]
    finally:
        gw.stop()
