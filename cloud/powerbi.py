"""Power BI: a connection file (``.pbids``) for the Synapse serverless SQL endpoint.

Opening the file in Power BI Desktop opens "Get data" on the Gondola database with the
``bi_*`` views listed (see ``docs/powerbi.md``). The file holds no credential: Power BI asks
for one (Microsoft Entra ID) on first use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gondola.errors import ConfigError

__all__ = ["pbids", "write_pbids", "STAR_SCHEMA"]

#: The star schema analysts build in Power BI over the ``bi_*`` views: facts -> their keys.
STAR_SCHEMA: dict[str, dict] = {
    "facts": {
        "bi_stockouts": ("store_id", "sku", "date"),
        "bi_alert_outcomes": ("store_id", "sku", "date", "kind"),
        "bi_hourly_sales": ("store_id", "sku", "date"),
        # per alert kind: a forecast and an "empty now" are judged apart (issue 11)
        "bi_alert_quality": ("store_id", "date", "kind"),
        # the stock-outs per store-day, apart from the scorers (each counted once in a total)
        "bi_stockout_recall": ("store_id", "date"),
        "bi_fleet_health": ("store_id", "date"),
        "bi_shelf_state": ("store_id", "sku", "date"),
        "bi_stockout_causes": ("store_id", "sku", "date"),
    },
    "dimensions": {"bi_dim_store": "store_id", "bi_dim_product": "sku", "bi_dim_date": "date",
                   "bi_dim_alert_kind": "kind"},
}

_SERVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(,\d{1,5})?$")


def pbids(server: str, database: str, *, mode: str = "DirectQuery") -> dict:
    """The ``.pbids`` document for a Synapse serverless SQL endpoint.

    Args:
        server: the workspace's serverless endpoint, ``<workspace>-ondemand.sql.azuresynapse.net``.
        database: the database holding the views made by ``gondola cloud synapse-ddl``.
        mode: ``DirectQuery`` (always current; the default) or ``Import``.

    Raises:
        ConfigError: a server name that is not a host name, an empty database, or another mode.
    """
    if not _SERVER.match(server or ""):
        raise ConfigError(f"--server {server!r} is not a host name (e.g. myws-ondemand.sql.azuresynapse.net)")
    if not database or not database.strip():
        raise ConfigError("--database must not be empty")
    if mode not in ("DirectQuery", "Import"):
        raise ConfigError(f"--mode must be DirectQuery or Import, got {mode!r}")
    return {
        "version": "0.1",
        "connections": [{
            "details": {"protocol": "tds", "address": {"server": server, "database": database}},
            "options": {},
            "mode": mode,
        }],
    }


def write_pbids(path: str | Path, server: str, database: str, *, mode: str = "DirectQuery") -> Path:
    """Write the connection file; return its path (see ``pbids`` for what it raises)."""
    doc = pbids(server, database, mode=mode)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out
