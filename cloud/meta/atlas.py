"""The catalog as Apache Atlas type definitions and entities (what Microsoft Purview ingests).

Purview takes custom types first (``POST /datamap/api/atlas/v2/types/typedefs``) and then
entities in bulk (``POST .../atlas/v2/entity/bulk``). ``TYPEDEFS`` are Gondola's types, built on
Atlas' base model (``Referenceable`` -> ``Asset`` -> ``DataSet`` / ``Process``);
``atlas_entities`` turns a catalog into the bulk payload; ``validate`` checks a payload against
the type definitions the way Atlas does on ingest (known types, required and typed attributes,
references that resolve, known classifications, unique qualified names), so a malformed export
fails in the tests, not in Purview.
"""

from __future__ import annotations

__all__ = ["TYPEDEFS", "BASE_TYPES", "atlas_entities", "validate", "AtlasError"]


class AtlasError(ValueError):
    """An Atlas payload that does not match the type definitions."""


def _attr(name: str, type_name: str, *, optional: bool = True, unique: bool = False) -> dict:
    return {"name": name, "typeName": type_name, "cardinality": "SET" if type_name.startswith("array<") else "SINGLE",
            "isOptional": optional, "isUnique": unique, "isIndexable": False}


#: The Atlas base model types Gondola's types extend (attributes as Atlas defines them).
BASE_TYPES: dict[str, dict] = {
    "Referenceable": {"superTypes": [], "attributeDefs": [_attr("qualifiedName", "string", optional=False, unique=True)]},
    "Asset": {"superTypes": ["Referenceable"], "attributeDefs": [
        _attr("name", "string", optional=False), _attr("description", "string"), _attr("owner", "string")]},
    "DataSet": {"superTypes": ["Asset"], "attributeDefs": []},
    "Process": {"superTypes": ["Asset"], "attributeDefs": [
        _attr("inputs", "array<DataSet>"), _attr("outputs", "array<DataSet>")]},
}

#: Gondola's custom types, in the typedefs payload Purview accepts.
TYPEDEFS: dict = {
    "enumDefs": [],
    "structDefs": [],
    "classificationDefs": [
        {"name": "gondola_personal", "description": "pseudonymized personal data: masked, erasable on request",
         "superTypes": [], "attributeDefs": []},
        {"name": "gondola_confidential", "description": "business figures for staff of the retail chain",
         "superTypes": [], "attributeDefs": []},
        {"name": "gondola_public", "description": "master data also printed on shelf labels",
         "superTypes": [], "attributeDefs": []},
    ],
    "entityDefs": [
        {"name": "gondola_delta_table", "superTypes": ["DataSet"], "serviceType": "gondola", "typeVersion": "1.0",
         "description": "a Delta Lake table of the Gondola lake",
         "attributeDefs": [_attr("layer", "string", optional=False), _attr("location", "string"),
                           _attr("key", "array<string>"), _attr("producedBy", "string")]},
        {"name": "gondola_column", "superTypes": ["DataSet"], "serviceType": "gondola", "typeVersion": "1.0",
         "description": "a column of a Gondola table, with its unit and classification",
         "attributeDefs": [_attr("dataType", "string", optional=False), _attr("unit", "string"),
                           _attr("table", "gondola_delta_table", optional=False)]},
        {"name": "gondola_warehouse_view", "superTypes": ["DataSet"], "serviceType": "gondola", "typeVersion": "1.0",
         "description": "a table or view of the warehouse (DuckDB / Synapse serverless)",
         "attributeDefs": [_attr("kind", "string", optional=False), _attr("sql", "string")]},
        {"name": "gondola_model", "superTypes": ["DataSet"], "serviceType": "gondola", "typeVersion": "1.0",
         "description": "a stock-out model artifact (int8 TFLite, float TFLite or ONNX)",
         "attributeDefs": [_attr("format", "string", optional=False), _attr("sha256", "string", optional=False),
                           _attr("bytes", "long"), _attr("threshold", "double"), _attr("signed", "boolean")]},
        {"name": "gondola_pipeline_step", "superTypes": ["Process"], "serviceType": "gondola", "typeVersion": "1.0",
         "description": "a step of the Gondola pipeline that writes a table or a model",
         "attributeDefs": [_attr("code", "string")]},
    ],
    "relationshipDefs": [
        {"name": "gondola_table_columns", "relationshipCategory": "COMPOSITION", "typeVersion": "1.0",
         "endDef1": {"type": "gondola_delta_table", "name": "columns", "isContainer": True, "cardinality": "SET"},
         "endDef2": {"type": "gondola_column", "name": "table", "isContainer": False, "cardinality": "SINGLE"}},
    ],
}


def _qn(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def atlas_entities(catalog: dict, *, lake_uri: str, warehouse_uri: str = "duckdb://warehouse",
                   models_uri: str = "models://gondola") -> dict:
    """The catalog as an Atlas bulk-entities payload (``{"entities": [...]}``) plus the glossary.

    Qualified names follow Purview's habit of using the location: ``<lake>/<layer>/<table>``
    for a table, ``<table qn>#<column>`` for a column.
    """
    entities: list[dict] = []
    table_qn = {t["name"]: _qn(lake_uri, t["name"].replace(".", "/")) for t in catalog["tables"]}
    guid = iter(range(-1, -10**9, -1))
    refs: dict[str, str] = {}

    def add(type_name: str, qn: str, attrs: dict, classifications: list[str] = ()) -> dict:
        g = str(next(guid))
        refs[qn] = g
        ent = {"typeName": type_name, "guid": g, "attributes": {"qualifiedName": qn, **attrs}}
        if classifications:
            ent["classifications"] = [{"typeName": f"gondola_{c}"} for c in classifications]
        entities.append(ent)
        return ent

    for t in catalog["tables"]:
        classes = sorted({c["classification"] for c in t["columns"]} & {"personal"})
        add("gondola_delta_table", table_qn[t["name"]], {
            "name": t["name"], "description": t["description"], "owner": t["owner"], "layer": t["layer"],
            "location": table_qn[t["name"]], "key": t["key"], "producedBy": t["produced_by"]}, classes)
        for c in t["columns"]:
            add("gondola_column", f"{table_qn[t['name']]}#{c['name']}", {
                "name": c["name"], "description": c["description"], "dataType": c["type"], "unit": c["unit"],
                "table": {"guid": refs[table_qn[t["name"]]]}}, [c["classification"]])
    for w in catalog["warehouse"]:
        add("gondola_warehouse_view", _qn(warehouse_uri, w["name"]), {
            "name": w["name"], "description": w["description"], "owner": w["owner"], "kind": w["kind"],
            "sql": w.get("sql", "")})
    for m in catalog["models"]:
        add("gondola_model", _qn(models_uri, m["file"]), {
            "name": m["file"], "description": m["description"], "owner": m["owner"], "format": m["format"],
            "sha256": m["sha256"], "bytes": m["bytes"], "threshold": m["threshold"], "signed": m["signed"]})
    # Lineage: one process per table (or view, or model) with inputs, linking the datasets.
    for t in catalog["tables"]:
        if t["upstream"]:
            add("gondola_pipeline_step", f"{table_qn[t['name']]}@process", {
                "name": f"build {t['name']}", "code": t["produced_by"],
                "inputs": [{"guid": refs[table_qn[u]]} for u in t["upstream"] if u in table_qn],
                "outputs": [{"guid": refs[table_qn[t["name"]]]}]})
    for w in catalog["warehouse"]:
        sources = w.get("sources") or [w.get("source")]
        add("gondola_pipeline_step", f"{_qn(warehouse_uri, w['name'])}@process", {
            "name": f"build {w['name']}", "code": "cloud.warehouse.build_warehouse",
            "inputs": [{"guid": refs[table_qn[s]]} for s in sources if s in table_qn],
            "outputs": [{"guid": refs[_qn(warehouse_uri, w["name"])]}]})
    for m in catalog["models"]:
        add("gondola_pipeline_step", f"{_qn(models_uri, m['file'])}@process", {
            "name": f"train {m['file']}", "code": "models.train",
            "inputs": [{"guid": refs[table_qn[u]]} for u in m["upstream"] if u in table_qn],
            "outputs": [{"guid": refs[_qn(models_uri, m["file"])]}]})
    glossary = {"name": "Gondola", "terms": [
        {"name": g["name"], "longDescription": g["definition"],
         "assignedEntities": [{"guid": refs[table_qn[x]]} for x in g["tables"] if x in table_qn]}
        for g in catalog["glossary"]]}
    return {"entities": entities, "glossary": glossary}


# ---- validation --------------------------------------------------------------------------------

_PRIMITIVES = {"string": str, "long": int, "int": int, "double": (int, float), "float": (int, float),
               "boolean": bool}


def _all_types(typedefs: dict) -> dict[str, dict]:
    types = dict(BASE_TYPES)
    types.update({d["name"]: d for d in typedefs["entityDefs"]})
    return types


def _ancestors(types: dict[str, dict], name: str) -> list[str]:
    out, todo = [], [name]
    while todo:
        n = todo.pop()
        if n not in out:
            out.append(n)
            todo.extend(types[n]["superTypes"])
    return out


def _attrs(types: dict[str, dict], name: str) -> dict[str, dict]:
    attrs: dict[str, dict] = {}
    for n in _ancestors(types, name):
        for a in types[n]["attributeDefs"]:
            attrs.setdefault(a["name"], a)
    return attrs


def validate(payload: dict, typedefs: dict = TYPEDEFS) -> int:
    """Check ``payload`` against ``typedefs`` (on top of the Atlas base types); return the entity count.

    Raises:
        AtlasError: an unknown type or classification, a missing required attribute, an attribute
            of the wrong type, a reference to no entity of a fitting type, or a repeated qualified name.
    """
    types = _all_types(typedefs)
    for d in typedefs["entityDefs"]:
        for s in d["superTypes"]:
            if s not in types:
                raise AtlasError(f"type {d['name']}: unknown super type {s}")
    for r in typedefs.get("relationshipDefs", []):
        for end in (r["endDef1"], r["endDef2"]):
            if end["type"] not in types:
                raise AtlasError(f"relationship {r['name']}: unknown type {end['type']}")
    classes = {c["name"] for c in typedefs["classificationDefs"]}
    by_guid: dict[str, dict] = {}
    names: set[str] = set()
    for e in payload["entities"]:
        if e.get("typeName") not in types:
            raise AtlasError(f"entity {e.get('guid')}: unknown type {e.get('typeName')!r}")
        if e["guid"] in by_guid:
            raise AtlasError(f"guid {e['guid']} used twice")
        by_guid[e["guid"]] = e
        qn = e["attributes"].get("qualifiedName")
        if qn in names:
            raise AtlasError(f"qualifiedName {qn!r} used twice")
        names.add(qn)

    def check_ref(where: str, value, type_name: str) -> None:
        if not isinstance(value, dict) or "guid" not in value:
            raise AtlasError(f"{where}: expected a reference {{'guid': ...}} to {type_name}, got {value!r}")
        target = by_guid.get(value["guid"])
        if target is None:
            raise AtlasError(f"{where}: reference {value['guid']} resolves to no entity in the payload")
        if type_name not in _ancestors(types, target["typeName"]):
            raise AtlasError(f"{where}: {target['typeName']} is not a {type_name}")

    for e in payload["entities"]:
        defs = _attrs(types, e["typeName"])
        where = f"{e['typeName']} {e['attributes'].get('qualifiedName')!r}"
        for name, a in defs.items():
            if not a["isOptional"] and e["attributes"].get(name) in (None, ""):
                raise AtlasError(f"{where}: required attribute {name} missing")
        for name, value in e["attributes"].items():
            if name not in defs:
                raise AtlasError(f"{where}: attribute {name} is not defined for {e['typeName']}")
            if value is None:
                continue
            t = defs[name]["typeName"]
            inner = t[6:-1] if t.startswith("array<") else None
            if inner is not None:
                if not isinstance(value, list):
                    raise AtlasError(f"{where}.{name}: expected a list")
                for v in value:
                    if inner in _PRIMITIVES:
                        if not isinstance(v, _PRIMITIVES[inner]):
                            raise AtlasError(f"{where}.{name}: {v!r} is not {inner}")
                    else:
                        check_ref(f"{where}.{name}", v, inner)
            elif t in _PRIMITIVES:
                ok = isinstance(value, _PRIMITIVES[t]) and not (t != "boolean" and isinstance(value, bool))
                if not ok:
                    raise AtlasError(f"{where}.{name}: {value!r} is not {t}")
            else:
                check_ref(f"{where}.{name}", value, t)
        for c in e.get("classifications", []):
            if c["typeName"] not in classes:
                raise AtlasError(f"{where}: unknown classification {c['typeName']}")
    for term in payload.get("glossary", {}).get("terms", []):
        for ref in term.get("assignedEntities", []):
            if ref.get("guid") not in by_guid:
                raise AtlasError(f"glossary term {term['name']!r}: assigned entity {ref} not in the payload")
    return len(payload["entities"])
