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
