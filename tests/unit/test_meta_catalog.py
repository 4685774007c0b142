"""The catalog, dictionary and glossary exported from code, and the Atlas payload Purview ingests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cloud.lake.tables import LINEAGE, TABLES
from cloud.meta.atlas import AtlasError, atlas_entities, validate
from cloud.meta.catalog import build_catalog, catalog_markdown
from cloud.meta.cli import catalog_main
from cloud.meta.glossary import TERMS, glossary_markdown
from models.runtime import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog():
    return build_catalog(models_dir=DEFAULT_MODEL.parent)


def test_every_dictionary_table_and_column_is_in_the_catalog_with_owner_and_classification(catalog):
    from cloud.stream.tables import STATE, STREAM_TABLES, stream_schema
    from models.registry import REGISTRY_TABLE, _schema

    by_name = {t["name"]: t for t in catalog["tables"]}
    assert set(by_name) == set(TABLES) | set(STREAM_TABLES) | {STATE.name, REGISTRY_TABLE}
    # The stream job's tables and the model registry are listed with the columns they are written with.
    for tdef in [*STREAM_TABLES.values(), STATE]:
        assert [c["name"] for c in by_name[tdef.name]["columns"]] == stream_schema(tdef).names
        assert by_name[tdef.name]["owner"] == "streaming-operations"
    assert [c["name"] for c in by_name[REGISTRY_TABLE]["columns"]] == _schema().names
    assert by_name[REGISTRY_TABLE]["owner"] == "ml-engineering"
    for name, tdef in TABLES.items():
        entry = by_name[name]
        assert entry["owner"] and entry["description"] == tdef.doc
        assert [c["name"] for c in entry["columns"]] == [c.name for c in tdef.columns]
        assert {c["classification"] for c in entry["columns"]} <= {"personal", "confidential", "public"}
    pos = {c["name"]: c for c in by_name["silver.pos_line"]["columns"]}
    assert pos["loyalty_pid"]["classification"] == "personal"
    assert pos["ts"]["unit"] == "ms since epoch, UTC" and pos["price_cents"]["unit"] == "cents"
    assert {c["classification"] for c in by_name["silver.products"]["columns"]} == {"public"}


def test_lineage_gives_upstream_and_downstream_both_ways(catalog):
    by_name = {t["name"]: t for t in catalog["tables"]}
    for table, (inputs, _) in LINEAGE.items():
        assert by_name[table]["upstream"] == list(inputs)
        for i in inputs:
            assert table in by_name[i]["downstream"]
    assert "gold.stockouts" in by_name["silver.shelf_reading"]["downstream"]


def test_model_artifacts_are_listed_from_their_manifests(catalog):
    (model,) = [m for m in catalog["models"] if m["file"] == DEFAULT_MODEL.name]
    manifest = json.loads(DEFAULT_MODEL.with_name(DEFAULT_MODEL.stem + ".manifest.json").read_text())
    assert model["sha256"] == manifest["sha256"] and model["upstream"] == ["gold.features"]


def test_glossary_terms_point_at_real_tables_and_docs_glossary_is_generated_from_code():
    for term in TERMS:
        assert set(term.tables) <= set(TABLES), term.name
    assert (ROOT / "docs" / "glossary.md").read_text() == glossary_markdown(), \
        "docs/glossary.md is stale: run gondola catalog --glossary docs/glossary.md"


def test_atlas_export_validates_and_links_columns_lineage_and_glossary(catalog):
    payload = atlas_entities(catalog, lake_uri="abfss://lake@acct.dfs.core.windows.net/lake")
    n = validate(payload)
    columns = sum(len(t.columns) for t in TABLES.values())
    assert n >= len(TABLES) + columns
    ents = payload["entities"]
    by_guid = {e["guid"]: e for e in ents}
    pid = [e for e in ents if e["attributes"]["qualifiedName"].endswith("silver/pos_line#loyalty_pid")]
    assert pid and pid[0]["classifications"] == [{"typeName": "gondola_personal"}]
    step = [e for e in ents if e["attributes"]["qualifiedName"].endswith("gold/stockouts@process")][0]
    inputs = {by_guid[r["guid"]]["attributes"]["name"] for r in step["attributes"]["inputs"]}
    assert inputs == set(LINEAGE["gold.stockouts"][0])
    term = [t for t in payload["glossary"]["terms"] if t["name"] == "Stock-out"][0]
    assert {by_guid[r["guid"]]["attributes"]["name"] for r in term["assignedEntities"]} >= {"gold.stockouts"}


@pytest.mark.parametrize("breakage, message", [
    (lambda p: p["entities"][0]["attributes"].pop("qualifiedName"), "required attribute qualifiedName"),
    (lambda p: p["entities"][0]["attributes"].pop("name"), "required attribute name"),
    (lambda p: p["entities"][0].update(typeName="hive_table"), "unknown type"),
    (lambda p: p["entities"][1].update(classifications=[{"typeName": "PII"}]), "unknown classification"),
    (lambda p: p["entities"][1]["attributes"].update(table={"guid": "-999999"}), "resolves to no entity"),
    (lambda p: p["entities"][0]["attributes"].update(key="store_id"), "expected a list"),
    (lambda p: p["entities"][0]["attributes"].update(layer=3), "is not string"),
    (lambda p: p["entities"].append(copy.deepcopy(p["entities"][0]) | {"guid": "-424242"}), "used twice"),
])
def test_the_atlas_validator_refuses_what_atlas_would_refuse(catalog, breakage, message):
    payload = atlas_entities(catalog, lake_uri="/lake")
    breakage(payload)
    with pytest.raises(AtlasError, match=message):
        validate(payload)


def test_catalog_command_writes_markdown_json_and_atlas_files(tmp_path, capsys):
    assert catalog_main(["--out", str(tmp_path / "cat"), "--lake", str(tmp_path / "lake")]) == 0
    files = sorted(p.name for p in (tmp_path / "cat").iterdir())
    assert files == ["atlas-entities.json", "atlas-typedefs.json", "catalog.json", "catalog.md"]
    md = (tmp_path / "cat" / "catalog.md").read_text()
    assert "### `gold.stockouts`" in md and "| `loyalty_pid` | string |  | personal |" in md
    typedefs = json.loads((tmp_path / "cat" / "atlas-typedefs.json").read_text())
    assert validate(json.loads((tmp_path / "cat" / "atlas-entities.json").read_text()), typedefs) > 200
    assert not (tmp_path / "lake").exists(), "exporting the catalog must not create a lake"
    assert catalog_markdown(build_catalog())  # no models folder: still renders
    assert "Atlas entities" in capsys.readouterr().err
