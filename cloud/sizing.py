"""Sizing the Azure side for a number of stores: events per second, IoT Hub tier and units,
Event Hubs throughput units and partitions, lake storage per day and a monthly cost estimate.

::

    python -m cloud.sizing 100 1000          # the table docs/deploy.md shows
    python -m cloud.sizing --bicepparam 100  # deployment/azure/stores-100.bicepparam

One model, three kinds of input, each named where it is used:

* **measured** here: wire bytes per event and IoT Hub 4 KB messages per million events
  (``bench/results/edge.json``, gzip-6 batches of at most 256 KB), bronze bytes per event on disk
  (``python -m bench sizing``: 200,000 events written by ``deltalake``, ``bench/results/sizing.json``);
* **assumed** for a large supermarket (:class:`StoreProfile`; change them to your stores);
* **list prices** (:data:`PRICES`, USD, pay-as-you-go), with where and when they were read.

The IoT Hub tier is the cheapest that carries the day's messages with 25 % headroom; twin
reads and writes count too (the gateway patches its health every 5 minutes and reads its
desired properties with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["StoreProfile", "Measured", "PRICES", "PRICES_READ", "size", "table", "bicepparam"]


@dataclass(frozen=True)
class StoreProfile:
    """Assumed traffic of one large supermarket (per day unless named otherwise)."""

    pos_lines: int = 20_000            # till lines
    sensored_facings: int = 1_500      # shelf sensors
    reading_every_min: float = 5.0     # one reading per sensor every 5 minutes
    other_events: int = 3_000          # restocks, deliveries, handheld scans
    gateway_events: int = 500          # alerts and edge.health
    peak_factor: float = 3.0           # busiest hour / average hour
    health_every_s: float = 300.0      # gateway twin report (and desired read) interval
    twin_patch_bytes: int = 1_500      # reported health patch
    twin_read_bytes: int = 2_000       # get twin (desired + reported)

    @property
    def events_per_day(self) -> int:
        readings = int(self.sensored_facings * 24 * 60 / self.reading_every_min)
        return self.pos_lines + readings + self.other_events + self.gateway_events


@dataclass(frozen=True)
class Measured:
    wire_bytes_per_event: float = 12.3       # bench/results/edge.json "wire": gzip-6, 256 KB batches
    iothub_msgs_per_million_events: int = 3_040  # 4 KB metering units of those batches
    bronze_bytes_per_event: float = 78.3     # bench/results/sizing.json
    silver_to_bronze: float = 0.73           # silver / bronze bytes in the demo lake


#: USD list prices, pay-as-you-go, US East.
PRICES = {
    "iothub_unit_month": {"S1": 25.0, "S2": 250.0, "S3": 2_500.0},
    "eventhubs_tu_hour": 0.030,
    "eventhubs_million_ingress": 0.028,
    "adls_hot_gb_month": 0.019,
    "synapse_serverless_tb": 5.0,
    "keyvault_10k_operations": 0.03,
}
#: Where and when the prices were read. The pricing pages render their USD figures with
#: script, which the build machine cannot run; the figures are Microsoft's published list
#: prices as last read in 2024 (azure.microsoft.com/pricing), cross-checked on 2026-12-07
#: against the one table the machine could read (azure.cn: IoT Hub S1 CNY 254.40, S2 2,544,
#: S3 25,440 per unit-month, the same 1 : 10 : 100 ratio). Re-read them before a budget.
PRICES_READ = "list prices as published in 2024; ratios re-checked 2026-12-07 (see cloud/sizing.py)"

_IOTHUB_PER_UNIT = {"S1": 400_000, "S2": 6_000_000, "S3": 300_000_000}
_IOTHUB_MAX_UNITS = {"S1": 200, "S2": 200, "S3": 10}
_TWIN_CHUNK = 512          # twin operations are metered in 0.5 KB chunks
_HEADROOM = 1.25
_HOURS_MONTH = 730
_DAYS_MONTH = 30.4


def _iothub(messages_per_day: float) -> tuple[str, int, float]:
    """Cheapest (tier, units, monthly USD) carrying ``messages_per_day`` with headroom."""
    best = None
    for tier, per_unit in _IOTHUB_PER_UNIT.items():
        units = max(1, math.ceil(messages_per_day * _HEADROOM / per_unit))
        if units > _IOTHUB_MAX_UNITS[tier]:
            continue
        cost = units * PRICES["iothub_unit_month"][tier]
        if best is None or cost < best[2]:
            best = (tier, units, cost)
    if best is None:
        raise ValueError("more messages than one IoT Hub carries: split the fleet over several hubs")
    return best


def size(stores: int, profile: StoreProfile = StoreProfile(), measured: Measured = Measured(), *,
         retention_days: int = 90, synapse_tb_per_100_stores_month: float = 0.5) -> dict:
    """The sizing of one environment for ``stores`` stores (see the module docstring)."""
    events_day = stores * profile.events_per_day
    events_s = events_day / 86_400
    batch_msgs_day = events_day / 1e6 * measured.iothub_msgs_per_million_events
    reports_day = 86_400 / profile.health_every_s
    twin_msgs_day = stores * reports_day * (math.ceil(profile.twin_patch_bytes / _TWIN_CHUNK)
                                            + math.ceil(profile.twin_read_bytes / _TWIN_CHUNK))
    tier, units, iothub_cost = _iothub(batch_msgs_day + twin_msgs_day)
    wire_bytes_day = events_day * measured.wire_bytes_per_event
    peak_bytes_s = wire_bytes_day / 86_400 * profile.peak_factor
    # Event Hubs counts an ingress event per 64 KB of a message: a 256 KB batch is 4.
    eh_events_day = wire_bytes_day / 65_536
    peak_eh_events_s = eh_events_day / 86_400 * profile.peak_factor
    # One TU: 1 MB/s or 1,000 events/s in, 2 MB/s out (the lake and the stream job read it).
    tus = max(1, math.ceil(peak_bytes_s / 1e6), math.ceil(peak_eh_events_s / 1_000), math.ceil(2 * peak_bytes_s / 2e6))
    partitions = min(32, max(4, 2 ** math.ceil(math.log2(max(1.0, stores / 64)))))
    bronze_gb_day = events_day * measured.bronze_bytes_per_event / 1e9
    lake_gb_day = bronze_gb_day * (1 + measured.silver_to_bronze)
    stored_gb = lake_gb_day * retention_days
    costs = {
        "iothub": iothub_cost,
        "eventhubs": tus * PRICES["eventhubs_tu_hour"] * _HOURS_MONTH
        + eh_events_day * _DAYS_MONTH / 1e6 * PRICES["eventhubs_million_ingress"],
        "storage": stored_gb * PRICES["adls_hot_gb_month"],
        "synapse": stores / 100 * synapse_tb_per_100_stores_month * PRICES["synapse_serverless_tb"],
        "keyvault": 1.0,
    }
    return {
        "stores": stores,
        "events_per_store_day": profile.events_per_day,
        "events_s": round(events_s),
        "events_s_peak": round(events_s * profile.peak_factor),
        "iothub_messages_day": round(batch_msgs_day + twin_msgs_day),
        "iothub_sku": tier,
        "iothub_units": units,
        "eventhubs_tus": tus,
        "eventhubs_max_tus": max(4, 2 * tus),
        "partitions": partitions,
        "wire_mb_day": round(wire_bytes_day / 1e6, 1),
        "lake_gb_day": round(lake_gb_day, 1),
        "stored_gb": round(stored_gb),
        "retention_days": retention_days,
        "cost_month": {k: round(v, 2) for k, v in costs.items()},
        "cost_month_total": round(sum(costs.values()), 2),
    }


def table(sizes: list[dict]) -> str:
    """The markdown table of docs/deploy.md."""
    rows = [
        ("events per store per day (assumed profile)", lambda s: f"{s['events_per_store_day']:,}"),
        ("events/s, average / peak hour", lambda s: f"{s['events_s']:,} / {s['events_s_peak']:,}"),
        ("IoT Hub messages per day (4 KB batches + 0.5 KB twin chunks)", lambda s: f"{s['iothub_messages_day']:,}"),
        ("IoT Hub tier x units (25 % headroom)", lambda s: f"{s['iothub_sku']} x {s['iothub_units']}"),
        ("Event Hubs throughput units (auto-inflate max)", lambda s: f"{s['eventhubs_tus']} ({s['eventhubs_max_tus']})"),
        ("partitions (IoT Hub events, stream hub)", lambda s: f"{s['partitions']}"),
        ("uplink bytes per day", lambda s: f"{s['wire_mb_day']:,} MB"),
        ("lake growth per day (bronze + silver)", lambda s: f"{s['lake_gb_day']:,} GB"),
        ("lake stored at the retention", lambda s: f"{s['stored_gb']:,} GB ({s['retention_days']} days)"),
        ("IoT Hub, USD/month", lambda s: f"{s['cost_month']['iothub']:,.2f}"),
        ("Event Hubs, USD/month", lambda s: f"{s['cost_month']['eventhubs']:,.2f}"),
        ("ADLS Gen2 hot storage, USD/month", lambda s: f"{s['cost_month']['storage']:,.2f}"),
        ("Synapse serverless (0.5 TB scanned per 100 stores), USD/month", lambda s: f"{s['cost_month']['synapse']:,.2f}"),
        ("Key Vault, USD/month", lambda s: f"{s['cost_month']['keyvault']:,.2f}"),
        ("**total, USD/month**", lambda s: f"**{s['cost_month_total']:,.2f}**"),
    ]
    head = "| | " + " | ".join(f"{s['stores']:,} stores" for s in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    lines += [f"| {name} | " + " | ".join(fmt(s) for s in sizes) + " |" for name, fmt in rows]
    return "\n".join(lines)


def bicepparam(s: dict) -> str:
    """A ``.bicepparam`` file for ``deployment/azure/main.bicep`` with this sizing."""
    return (f"// Generated by `python -m cloud.sizing --bicepparam {s['stores']}`; docs/deploy.md has the table.\n"
            "using 'main.bicep'\n\n"
            "param prefix = 'gondola'\n"
            f"param storeCount = {s['stores']}\n"
            f"param iotHubSku = '{s['iothub_sku']}'\n"
            f"param iotHubUnits = {s['iothub_units']}\n"
            f"param partitions = {s['partitions']}\n"
            f"param eventHubsThroughputUnits = {s['eventhubs_tus']}\n"
            f"param eventHubsMaxThroughputUnits = {s['eventhubs_max_tus']}\n"
            "param engineersGroupObjectId = readEnvironmentVariable('GONDOLA_ENGINEERS_GROUP_ID')\n"
            "param synapseSqlAdminPassword = readEnvironmentVariable('GONDOLA_SYNAPSE_SQL_PASSWORD')\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m cloud.sizing", description=__doc__.splitlines()[0])
    p.add_argument("stores", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--bicepparam", type=int, metavar="STORES", help="print the .bicepparam for STORES stores")
    args = p.parse_args(argv)
    if args.bicepparam:
        print(bicepparam(size(args.bicepparam)), end="")
    else:
        print(table([size(n) for n in args.stores]))
        print(f"\nprices: {PRICES_READ}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
