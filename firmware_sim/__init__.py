"""Simulated stores: devices, ground truth and faults, for tests, the demo and model evaluation.

One store model, two modes. Live: a store advances on a clock and returns what its devices
send (``run_until``), to publish over MQTT. History: many stores x days straight to files.

Public API::

    from firmware_sim import StoreSim, Scenario, DeviceMessage, GroundTruth, write_master_data

    scenario = Scenario.load("scenarios/default.toml")   # or Scenario.default(), Scenario(...)
    scenario = Scenario.no_faults()                       # faults are all off unless switched on
    scenario = Scenario.with_faults(duplicates=0.05, drops=0.01)
    sim = StoreSim(store_id="s001", skus=200, seed=7, start_ms=<midnight UTC, epoch ms>,
                   scenario=scenario, sensor_share=0.5)
    msgs = sim.run_until(t_ms)      # list[DeviceMessage], in send order, since the last call
    sim.truth                       # GroundTruth, cumulative up to the last run_until:
    #   .emitted[etype] -> {(device_id, seq)} valid distinct events sent
    #   .dropped -> {(device_id, seq)} lost before the broker     .malformed -> {(device_id, seq)}
    #   .faults -> {kind: count}   .windows -> reboots / outages / power losses / stuck sensors
    #   .stockouts -> [(store_id, facing_id, sku, start_ms, end_ms | None)]
    #   .lost_sales -> {(facing_id, sku): units}   .shelf_units(facing_id) -> [(ts, units)]
    #   .oos_rate()   .daily()   .to_tables() -> pyarrow tables for Parquet
    sim.planogram   # [{store_id, facing_id, sku, capacity, has_sensor}]
    sim.products    # [{sku, name, category, price_cents, unit_weight_g, pack_size}]
    write_master_data(out_dir, [sim, ...])   # master/stores.csv, products.csv, planogram.csv

    DeviceMessage(topic, payload, device_id, seq, etype, ts, valid, sent_at)   # frozen

MQTT (paho-mqtt 1.6 only, in ``firmware_sim.mqtt``): ``MqttPublisher(host, port, window=1000)``
with ``publish_many(msgs) -> int`` (returns once every message is PUBACKed, at most ``window``
in flight). Live loop: ``firmware_sim.live.run_live``. Files: ``firmware_sim.history.generate``.
CLI: ``gondola sim generate|live|scenario`` (``firmware_sim.cli:main``).
``docs/simulator.md`` documents the model, its parameters and their sources.
"""

from firmware_sim.history import write_master_data
from firmware_sim.scenario import Scenario
from firmware_sim.store import DeviceMessage, StoreSim
from firmware_sim.truth import GroundTruth

__all__ = ["StoreSim", "Scenario", "DeviceMessage", "GroundTruth", "write_master_data"]
