"""Infrastructure as code: the Bicep parses and declares every service, its parameter files and
the sizing table in docs/deploy.md come from one sizing model whose measured inputs are the
benchmarks' figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloud.sizing import Measured, bicepparam, size, table

ROOT = Path(__file__).resolve().parents[2]
AZURE = ROOT / "deployment" / "azure"


@pytest.fixture(scope="module")
def bicep() -> dict:
    pycep = pytest.importorskip("pycep")
    return pycep.BicepParser().parse(text=(AZURE / "main.bicep").read_text())


def test_the_bicep_declares_every_service_the_cloud_uses(bicep):
    types = {r["type"] for r in bicep["resources"].values()}
    assert {"Microsoft.Devices/IotHubs", "Microsoft.EventHub/namespaces", "Microsoft.EventHub/namespaces/eventhubs",
            "Microsoft.Storage/storageAccounts", "Microsoft.Synapse/workspaces", "Microsoft.KeyVault/vaults"} <= types
    res = bicep["resources"]
    assert res["lake"]["config"]["properties"]["isHnsEnabled"] is True  # ADLS Gen2
    assert res["lake"]["config"]["properties"]["allowSharedKeyAccess"] is False
    assert res["modelsContainer"]["config"]["name"] == "models"
    groups = res["streamGroups"]["config"]
    assert "lake-bronze" in json.dumps(groups) and "cloud-stream" in json.dumps(groups)
    kv = res["keyVault"]["config"]["properties"]
    assert kv["enableRbacAuthorization"] is True and kv["enablePurgeProtection"] is True
    # Sized by parameters, not constants.
    hub = res["iotHub"]["config"]
    assert hub["sku"] == {"name": "iotHubSku", "capacity": "iotHubUnits"}
    assert hub["properties"]["eventHubEndpoints"]["events"]["partitionCount"] == "partitions"
    assert res["eventHubs"]["config"]["sku"]["capacity"] == "eventHubsThroughputUnits"


@pytest.mark.parametrize("stores", [100, 1000])
def test_parameter_files_carry_the_sizing_and_set_every_required_parameter(bicep, stores):
    text = (AZURE / f"stores-{stores}.bicepparam").read_text()
    assert text == bicepparam(size(stores))
    given = set(re.findall(r"^param (\w+) =", text, re.M))
    declared = bicep["parameters"]
    assert given <= set(declared)
    required = {name for name, p in declared.items() if "default" not in p}
    assert required <= given


def test_the_docs_table_is_the_sizing_models_output():
    text = (ROOT / "docs" / "deploy.md").read_text()
    shown = re.search(r"<!-- sizing:start -->\n(.*?)\n<!-- sizing:end -->", text, re.S).group(1)
    assert shown == table([size(100), size(1000)])


def test_measured_inputs_are_the_benchmark_figures():
    m = Measured()
    edge = json.loads((ROOT / "bench" / "results" / "edge.json").read_text())["result"]["wire"]["gzip-6"]
    assert m.wire_bytes_per_event == round(edge["bytes_per_event"], 1)
    assert m.iothub_msgs_per_million_events == edge["billing_units_per_million"]
    bronze = json.loads((ROOT / "bench" / "results" / "sizing.json").read_text())["result"]
    assert m.bronze_bytes_per_event == bronze["bronze_bytes_per_event"] and bronze["events"] >= 100_000


def test_sizing_grows_with_the_fleet_and_picks_the_cheaper_tier():
    small, large = size(100), size(1000)
    assert large["events_s"] == pytest.approx(10 * small["events_s"], rel=0.01)
    assert large["lake_gb_day"] == pytest.approx(10 * small["lake_gb_day"], rel=0.01)
    assert large["partitions"] > small["partitions"]
    # 1,000 stores need 12 S1 units (300 USD) or one S2 (250 USD): the S2.
    assert (large["iothub_sku"], large["iothub_units"]) == ("S2", 1)
    assert small["iothub_messages_day"] * 1.25 <= {"S1": 400_000, "S2": 6_000_000}[small["iothub_sku"]] * small["iothub_units"]
    with pytest.raises(ValueError, match="several hubs"):
        size(10_000_000)
