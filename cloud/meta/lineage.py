"""Run lineage in the lake: the ``meta.lineage`` sink and the walk from a model to its sources.

Every cloud run (ingest, transform, warehouse, publish) emits OpenLineage events through
``gondola.lineage``; ``LakeLineageSink`` keeps each one as a row of ``meta.lineage``.
``model_lineage`` walks them: from a model version back to the ``gold.features`` version it
was trained on, the transform runs that wrote it and the silver versions behind them, the
ingest runs that brought those rows, and the devices whose events fed them; and forward to
the gateways the model was published to and those that report running it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa

from cloud.lake.storage import LakeStorage
from cloud.lake.tables import LINEAGE_TABLE, SILVER_EVENT_TABLES, TABLES, conform
from gondola.lineage import Dataset, Lineage, lineage_from_env

__all__ = ["LakeLineageSink", "lake_lineage", "table_dataset", "model_lineage", "read_runs"]

#: where a column is masked on its way from bronze to silver (the column-lineage facet says so)
_MASKED = {"silver.pos_line": {"loyalty_pid": "event_json"}, "silver.quarantine": {"raw": "event_json"}}


class LakeLineageSink:
    """Appends each OpenLineage event to ``meta.lineage`` (one small commit per event)."""

    def __init__(self, storage: LakeStorage):
        self.storage = storage

    def __call__(self, event: dict) -> None:
        def brief(ds: list[dict]) -> str:
            return json.dumps([{"namespace": d["namespace"], "name": d["name"],
                                "version": ((d.get("facets") or {}).get("version") or {}).get("datasetVersion")}
                               for d in ds])

        facets = event["run"].get("facets") or {}
        row = {
            "event_time": int(time.time() * 1000), "run_id": event["run"]["runId"], "job": event["job"]["name"],
            "state": event["eventType"], "inputs_json": brief(event.get("inputs") or []),
            "outputs_json": brief(event.get("outputs") or []),
            "error": (facets.get("errorMessage") or {}).get("message"),
            "event_json": json.dumps(event, sort_keys=True),
        }
        self.storage.write(LINEAGE_TABLE, conform(LINEAGE_TABLE, pa.Table.from_pylist([row])))


def lake_lineage(storage: LakeStorage) -> Lineage:
    """The cloud's ``Lineage``: transport from ``GONDOLA_LINEAGE``, every event kept in the lake."""
    return lineage_from_env(LakeLineageSink(storage))


def table_dataset(storage: LakeStorage, table: str, version: int | None = None) -> Dataset:
    """A lake table as an OpenLineage dataset: namespace = the lake, with version and schema."""
    tdef = TABLES[table]
    lineage: dict = {}
    for col, src in _MASKED.get(table, {}).items():
        lineage[col] = [(storage.root, "bronze.events", src, True)]
    return Dataset(storage.root, table, version if version is not None else storage.version(table),
                   [(c.name, c.type, c.doc) for c in tdef.columns], lineage)


def read_runs(storage: LakeStorage) -> list[dict]:
    """Completed and failed runs from ``meta.lineage``, oldest first, inputs/outputs decoded."""
    rows = storage.read(LINEAGE_TABLE)
    if rows is None:
        return []
    out = []
    for r in rows.sort_by([("event_time", "ascending")]).to_pylist():
        if r["state"] == "START":
            continue
        r["inputs"] = json.loads(r["inputs_json"] or "[]")
        r["outputs"] = json.loads(r["outputs_json"] or "[]")
        out.append(r)
    return out


def _version(d: dict) -> int | None:
    try:
        return int(d["version"])
    except (TypeError, ValueError, KeyError):
        return None


def _writer_of(runs: list[dict], table: str, version: int) -> dict | None:
    """The completed run that wrote ``table`` at the highest version <= ``version``."""
    best = None
    for r in runs:
        if r["state"] != "COMPLETE":
            continue
        for o in r["outputs"]:
            v = _version(o)
            if o["name"] == table and v is not None and v <= version and (best is None or v > best[0]):
                best = (v, r)
    return best[1] if best else None


def _model_manifest(model: str) -> dict | None:
    path = Path(model)
    if path.is_file():
        manifest = path if path.name.endswith(".manifest.json") else path.with_name(path.stem + ".manifest.json")
        if manifest.is_file():
            return json.loads(manifest.read_text())
    return None


def model_lineage(storage: LakeStorage, model: str, *, reported: dict[str, str] | None = None) -> dict:
    """Where a model came from and where it went (module docstring).

    ``model`` is a manifest / model file, or a version string found in ``meta.lineage``
    (a train or publish run's dataset). ``reported`` maps gateway device -> model version it
    reports running (from the twins).
    """
    runs = read_runs(storage)
    manifest = _model_manifest(model)
    version = (manifest or {}).get("version") or model
    gold_version = None
    train_run = None
    for r in runs:
        if r["state"] == "COMPLETE" and any(o["name"] == version for o in r["outputs"]) and r["job"] == "gondola.train":
            train_run = r
    if train_run is not None:
        gold_version = next((_version(i) for i in train_run["inputs"] if i["name"] == "gold.features"), None)
    if gold_version is None and manifest is not None:
        tables = (manifest.get("training") or {}).get("tables") or {}
        gold_version = _version({"version": tables.get("gold.features")})
    result: dict = {"model": version, "gold_features_version": gold_version, "transform_runs": [],
                    "silver": {}, "ingest_runs": [], "devices": {}, "published_to": [], "running_on": []}
    if gold_version is not None:
        seen_runs: set[str] = set()
        todo = [("gold.features", gold_version)]
        while todo:
            table, v = todo.pop()
            run = _writer_of(runs, table, v)
            if run is None or run["run_id"] in seen_runs:
                continue
            seen_runs.add(run["run_id"])
            entry = {"run_id": run["run_id"], "job": run["job"], "state": run["state"],
                     "outputs": run["outputs"], "inputs": run["inputs"]}
            (result["ingest_runs"] if run["job"].startswith("gondola.ingest") else result["transform_runs"]).append(entry)
            for i in run["inputs"]:
                iv = _version(i)
                if iv is None or i["name"] not in TABLES:
                    continue
                if i["name"] in SILVER_EVENT_TABLES.values():
                    result["silver"][i["name"]] = max(iv, result["silver"].get(i["name"], -1))
                todo.append((i["name"], iv))
        # the devices whose events fed those silver versions
        for table, v in result["silver"].items():
            rows = storage.read(table, columns=["device_id"], version=v)
            if rows is None:
                continue
            for dev in rows["device_id"].to_pylist():
                result["devices"][dev] = result["devices"].get(dev, 0) + 1
    for r in runs:
        if r["job"] == "gondola.publish_model" and r["state"] == "COMPLETE" and any(
                i["name"] == version for i in r["inputs"]):
            result["published_to"] += [o["name"] for o in r["outputs"]]
    result["published_to"] = sorted(set(result["published_to"]))
    result["running_on"] = sorted(d for d, v in (reported or {}).items() if v == version)
    return result
