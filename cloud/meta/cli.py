"""``gondola catalog``: export the data catalog, dictionary and glossary.

Writes ``catalog.md`` (for people), ``catalog.json`` (for tools), ``atlas-typedefs.json`` and
``atlas-entities.json`` (for Microsoft Purview / Apache Atlas) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["catalog_main"]


def catalog_main(argv: list[str]) -> int:
    from models.runtime import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="gondola catalog", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/catalog", help="folder for the exports (default out/catalog)")
    p.add_argument("--lake", default="out/lake",
                   help="lake URI the qualified names are built on (default out/lake; abfss:// in production)")
    p.add_argument("--models", default=str(Path(DEFAULT_MODEL).parent),
                   help="model package folder to list (default: the shipped package)")
    p.add_argument("--glossary", default=None, metavar="FILE",
                   help="also write the glossary as Markdown to FILE (docs/glossary.md is made this way)")
    args = p.parse_args(argv)

    from cloud.lake.storage import open_storage
    from cloud.meta.atlas import TYPEDEFS, atlas_entities, validate
    from cloud.meta.catalog import build_catalog, catalog_markdown
    from cloud.meta.glossary import glossary_markdown

    catalog = build_catalog(models_dir=args.models)
    lake_uri = open_storage(args.lake).root
    atlas = atlas_entities(catalog, lake_uri=lake_uri)
    n = validate(atlas)  # never hand Purview a payload its type system would refuse
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "catalog.md").write_text(catalog_markdown(catalog))
    (out / "catalog.json").write_text(json.dumps(catalog, indent=2, sort_keys=True) + "\n")
    (out / "atlas-typedefs.json").write_text(json.dumps(TYPEDEFS, indent=2) + "\n")
    (out / "atlas-entities.json").write_text(json.dumps(atlas, indent=2) + "\n")
    if args.glossary:
        Path(args.glossary).write_text(glossary_markdown())
    cols = sum(len(t["columns"]) for t in catalog["tables"])
    print(f"catalog: {len(catalog['tables'])} tables ({cols} columns), {len(catalog['warehouse'])} warehouse "
          f"objects, {len(catalog['models'])} model artifacts, {len(catalog['glossary'])} terms; "
          f"{n} Atlas entities -> {out}", file=sys.stderr)
    return 0


def train_main(argv: list[str]) -> int:
    """``gondola train`` with run lineage: kept in the lake's ``meta.lineage`` when training from
    ``--gold LAKE``, sent to ``GONDOLA_LINEAGE`` in any case (``models.cli`` does the training)."""
    from models.cli import train_main as train

    gold = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--gold"), None)
    gold = gold or next((a.split("=", 1)[1] for a in argv if a.startswith("--gold=")), None)
    if gold:
        from cloud.lake.storage import open_storage
        from cloud.meta.lineage import lake_lineage

        lineage = lake_lineage(open_storage(gold))
    else:
        from gondola.lineage import lineage_from_env

        lineage = lineage_from_env()
    return train(argv, lineage=lineage)


def lineage_main(argv: list[str]) -> int:
    """``gondola lineage MODEL``: where a model came from and which gateways run it."""
    p = argparse.ArgumentParser(prog="gondola lineage",
                                description="walk a model version back to its tables, runs and devices, and forward "
                                            "to the gateways that run it")
    p.add_argument("model", help="model version, or a model / manifest file")
    p.add_argument("--lake", default="out/lake", help="lake with meta.lineage (default out/lake)")
    p.add_argument("--hub", default=None, help="embedded hub with the gateways' twins (optional)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    args = p.parse_args(argv)

    from cloud.lake.storage import open_storage
    from cloud.meta.lineage import model_lineage
    from gondola.errors import ConfigError

    storage = open_storage(args.lake)
    if not storage.exists("meta.lineage"):
        raise ConfigError(f"{args.lake}: no meta.lineage table (is this a Gondola lake?)")
    reported: dict[str, str] = {}
    if args.hub:
        if not Path(args.hub).is_file():
            raise ConfigError(f"hub {args.hub} does not exist")
        from gondola.hub import LocalHub

        hub = LocalHub(args.hub)
        try:
            from cloud.rollout import DEFAULT_MODULE_ID

            for device in hub.twin_devices(DEFAULT_MODULE_ID):
                model = hub.get_twin(device, DEFAULT_MODULE_ID)["reported"].get("model") or {}
                if model.get("status") not in (None, "active"):
                    continue
                if model.get("version"):
                    reported[device] = model["version"]
        finally:
            hub.close()
    result = model_lineage(storage, args.model, reported=reported)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"model {result['model']}")
    print(f"  trained on gold.features version {result['gold_features_version']}")
    for r in result["transform_runs"]:
        outs = ", ".join(f"{o['name']}@{o['version']}" for o in r["outputs"])
        print(f"  <- {r['job']} run {r['run_id']}: {outs}")
    for r in result["ingest_runs"]:
        outs = ", ".join(f"{o['name']}@{o['version']}" for o in r["outputs"])
        print(f"  <- {r['job']} run {r['run_id']}: {outs}")
    print(f"  silver versions: {', '.join(f'{t}@{v}' for t, v in sorted(result['silver'].items())) or '-'}")
    print(f"  devices whose events fed it: {len(result['devices'])}")
    print(f"  published to: {', '.join(result['published_to']) or '-'}")
    print(f"  reported running on: {', '.join(result['running_on']) or '-'}")
    return 0


def privacy_main(argv: list[str]) -> int:
    """``gondola privacy rekey|erase``: key rotation and erasure on request, in the lake."""
    p = argparse.ArgumentParser(prog="gondola privacy", description="personal data in the lake: rekey, erase")
    p.add_argument("--lake", default="out/lake", help="lake folder or URI (default out/lake)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("rekey", help="carry stored pseudonyms forward to the key ring's current version")
    e = sub.add_parser("erase", help="remove one customer's pseudonym from silver and bronze")
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument("--pid", help="the customer's pseudonym")
    who.add_argument("--loyalty-id-stdin", action="store_true",
                     help="read the clear loyalty id from standard input (never from the command line, "
                          "which shells and process lists keep) and pseudonymize it with the key ring")
    e.add_argument("--vacuum-now", action="store_true",
                   help="also remove superseded Delta files at once (ends time travel before this point)")
    args = p.parse_args(argv)

    from cloud.lake.storage import open_storage
    from cloud.meta.lineage import lake_lineage
    from cloud.meta.privacy import erase, rekey_lake
    from gondola.errors import ConfigError
    from gondola.privacy import KeyRing, pseudonymize
    from gondola.secrets import secret_store_from_env

    storage = open_storage(args.lake)
    if not storage.exists("silver.pos_line") and not storage.exists("bronze.events"):
        raise ConfigError(f"{args.lake}: no Gondola lake there")

    def ring() -> KeyRing:
        material = secret_store_from_env().get("pseudonym-key")
        if material is None:
            raise ConfigError("no pseudonym key: set GONDOLA_PSEUDONYM_KEY or GONDOLA_SECRETS (docs/governance.md)")
        return KeyRing.parse(material)

    lineage = lake_lineage(storage)
    if args.command == "rekey":
        result = rekey_lake(storage, ring(), lineage=lineage)
        print(f"pseudonyms at key version {result['version']}: "
              + ", ".join(f"{t} {n} rows re-keyed" for t, n in result["rekeyed"].items()))
        return 0
    if args.loyalty_id_stdin:
        clear = sys.stdin.readline().strip()
        if not clear:
            raise ConfigError("no loyalty id on standard input")
        pid = pseudonymize(clear, ring())
    else:
        pid = args.pid
    changed = erase(storage, pid, lineage=lineage, vacuum_now=args.vacuum_now)
    print("erased: " + ", ".join(f"{t} {n} rows" for t, n in changed.items()))
    return 0
