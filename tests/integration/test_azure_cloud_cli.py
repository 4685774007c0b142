"""``gondola cloud`` with the Azure parts chosen by setting, tested at the SDK boundary: IoT Hub
twins through the real ``azure-iot-hub`` registry manager against an in-memory twin REST API,
models in Blob storage on Azurite, ingest from Event Hubs through the real SDK objects with a
scripted AMQP consumer (``tests/azure_fakes.py``)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
import requests

from gondola.cli import main
from tests.azure_fakes import FakeConsumerClient, FakeIotHubRest, RecordingStore, wire_event
from tests.model_packages import KEY, package

# Obviously fake service policy key and Event Hubs credentials.
IOTHUB = "HostName=fake-hub.azure-devices.example.invalid;SharedAccessKeyName=registryReadWrite;SharedAccessKey=ZmFrZS1rZXk="
EVENTHUB = ("Endpoint=sb://fake-ns.servicebus.example.invalid/;SharedAccessKeyName=service;"
            "SharedAccessKey=ZmFrZS1rZXk=;EntityPath=gondola-hub")
CHECKPOINTS = ("DefaultEndpointsProtocol=https;AccountName=fakeacct;AccountKey=ZmFrZS1rZXk=;"
               "EndpointSuffix=core.example.invalid")


@pytest.fixture
def iothub(monkeypatch):
    fake = FakeIotHubRest()
    real_send = requests.adapters.HTTPAdapter.send

    def send(adapter, request, **kw):  # IoT Hub's REST calls go to the fake, anything else out
        if "azure-devices.example.invalid" in request.url:
            return fake.send(adapter, request, **kw)
        return real_send(adapter, request, **kw)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    monkeypatch.setenv("GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING", IOTHUB)
    for device in ("gw-s001", "gw-s002"):
        fake.add_module(device, "gondola-gateway", desired={"settings": {"log_level": "debug"}})
    return fake


def test_publish_model_writes_iot_hub_twins_and_model_status_reads_them(iothub, tmp_path, capsys, monkeypatch):
    pkg = package(tmp_path / "train", "2026.12.07-a")
    monkeypatch.setenv("GONDOLA_TWINS", "iothub")  # by setting, no option
    assert not (tmp_path / "hub.sqlite").exists()
    code = main(["cloud", "publish-model", pkg["path"], "--devices", "gw-s001", "gw-s002",
                 "--store", str(tmp_path / "store"), "--lake", str(tmp_path / "lake")])
    assert code == 0, capsys.readouterr().err
    assert "through IoT Hub" in capsys.readouterr().out
    assert not (tmp_path / "hub.sqlite").exists()  # the embedded hub was never touched
    for device in ("gw-s001", "gw-s002"):
        desired = iothub.twins[(device, "gondola-gateway")]["desired"]
        assert desired["model"]["version"] == "2026.12.07-a" and desired["model"]["sha256"] == pkg["sha256"]
        assert desired["settings"] == {"log_level": "debug"}  # other desired properties kept
        assert Path(urllib.parse.urlsplit(desired["model"]["url"]).path).is_file()
    patches = [r for r in iothub.requests if r.method == "PATCH"]
    assert len(patches) == 2 and all(r.headers["Authorization"].startswith("SharedAccessSignature") for r in patches)

    iothub.twins[("gw-s001", "gondola-gateway")]["reported"] = {
        "model": {"version": "2026.12.07-a", "status": "active", "desired": "2026.12.07-a", "error": None}}
    iothub.twins[("gw-s002", "gondola-gateway")]["reported"] = {
        "model": {"version": None, "status": "failed", "desired": "2026.12.07-a", "error": "signature does not verify"}}
    assert main(["cloud", "model-status", "--devices", "gw-s001", "gw-s002", "--iothub"]) == 0
    out = capsys.readouterr().out
    assert "by status: active 1, failed 1" in out and "signature does not verify" in out


def test_without_the_service_connection_string_iot_hub_twins_are_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("GONDOLA_SECRETS", raising=False)
    assert main(["cloud", "model-status", "--devices", "gw-s001", "--iothub"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GONDOLA_IOTHUB_SERVICE_CONNECTION_STRING" in err


@pytest.mark.azurite
def test_publish_model_to_blob_storage_hands_gateways_read_only_sas_urls(iothub, azurite, tmp_path, capsys, monkeypatch):
    from azure.storage.blob import ContainerClient

    from edge.model_manager import fetch_url

    container = azurite.new_container("models")
    monkeypatch.setenv("GONDOLA_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("GONDOLA_MODEL_BLOB_CONTAINER", container)
    pkg = package(tmp_path / "train", "2026.12.07-b", key=KEY)
    assert main(["cloud", "publish-model", pkg["path"], "--devices", "gw-s001", "--iothub",
                 "--lake", str(tmp_path / "lake")]) == 0, capsys.readouterr().err
    spec = iothub.twins[("gw-s001", "gondola-gateway")]["desired"]["model"]
    assert "sig=" in spec["url"] and f"/{container}/models/2026.12.07-b/" in spec["url"]
    blobs = sorted(b.name for b in ContainerClient.from_connection_string(azurite.connection_string, container)
                   .list_blobs())
    assert blobs == ["models/2026.12.07-b/stockout-2026.12.07-b.manifest.json",
                     "models/2026.12.07-b/stockout-2026.12.07-b.tflite"]
    # What a gateway does with it: the SAS URL downloads the exact bytes.
    assert fetch_url(spec["url"], tmp_path / "got.tflite", max_bytes=1 << 22) == pkg["sha256"]


def test_ingest_from_event_hubs_by_setting_fills_bronze_and_checkpoints(tmp_path, capsys, monkeypatch):
    import cloud.azure.eventhubs as adapter
    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

    store = RecordingStore()
    made: dict = {}

    class Client:  # the SDK's constructor, at the AMQP boundary: a scripted consumer
        @staticmethod
        def from_connection_string(conn, **kwargs):
            made.update(kwargs, conn=conn)
            return FakeConsumerClient([("batch", "0", [wire_event(s) for s in (1, 2, 3)]),
                                       ("batch", "1", [wire_event(s) for s in (4, 5)])], store)

    monkeypatch.setattr(adapter, "EventHubConsumerClient", Client)
    monkeypatch.setattr(BlobCheckpointStore, "from_connection_string",
                        classmethod(lambda cls, conn, container: made.update(checkpoints=(conn, container)) or store))
    monkeypatch.setenv("GONDOLA_INGEST_SOURCE", "eventhubs")
    monkeypatch.setenv("GONDOLA_EVENTHUB_CONNECTION_STRING", EVENTHUB)
    monkeypatch.setenv("GONDOLA_CHECKPOINT_CONNECTION_STRING", CHECKPOINTS)
    lake = tmp_path / "lake"
    assert not (tmp_path / "hub.sqlite").exists()  # no embedded hub needed
    assert main(["cloud", "ingest-stream", "--lake", str(lake)]) == 0, capsys.readouterr().err
    assert "stream: 5 new bronze rows" in capsys.readouterr().out
    assert made["conn"] == EVENTHUB and made["consumer_group"] == "lake-bronze"
    assert made["checkpoints"] == (CHECKPOINTS, "eventhub-checkpoints")
    # Checkpoints only after the bronze commit: the last event of each partition.
    assert sorted((c["partition_id"], c["sequence_number"]) for c in store.checkpoints) == [("0", 3), ("1", 5)]
    from deltalake import DeltaTable

    rows = DeltaTable(str(lake / "bronze" / "events")).to_pyarrow_table().to_pylist()
    assert sorted(json.loads(r["event_json"])["seq"] for r in rows) == [1, 2, 3, 4, 5]
    assert {r["source"] for r in rows} == {"eventhubs:gondola-hub/lake-bronze"}  # where each row came from
