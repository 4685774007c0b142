"""The business glossary: one definition per term, and the tables each term describes.

``docs/glossary.md`` is generated from this list (``gondola catalog --glossary docs/glossary.md``)
and a test keeps the two equal; the catalog and the Atlas export attach the terms to tables.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Term", "TERMS", "terms_of", "glossary_markdown"]


@dataclass(frozen=True)
class Term:
    name: str
    definition: str
    #: lake tables the term describes (``layer.name``)
    tables: tuple[str, ...] = ()


_EVENTS = ("silver.pos_line", "silver.shelf_reading", "silver.shelf_restock", "silver.inventory_delivery",
           "silver.edge_alert", "silver.edge_health", "silver.shelf_check", "silver.gap_scan")

TERMS: tuple[Term, ...] = (
    Term("Store", "one supermarket; `store_id` like `s001`.", ("silver.stores",)),
    Term("SKU", "a product (stock-keeping unit); `sku` like `sku-00042`.", ("silver.products", "gold.hourly_sales")),
    Term("Facing", "one place on a shelf that holds one SKU; `facing_id`. A SKU may have several.",
         ("silver.planogram", "gold.shelf_state")),
    Term("Planogram", "the map facing -> SKU with the facing's **capacity** in units.", ("silver.planogram",)),
    Term("Shelf sensor", "a load cell under a facing reporting weight and estimated units.",
         ("silver.shelf_reading", "gold.shelf_state")),
    Term("On-shelf units", "units a shopper can take from a facing now.", ("gold.shelf_state",)),
    Term("Stock-out", "(shelf out-of-stock, OOS): a facing with zero on-shelf units. A stock-out **event** is one "
         "interval from empty to refilled; its **duration** is in minutes.", ("gold.stockouts", "gold.shelf_state")),
    Term("Lost sales", "units shoppers wanted but could not buy because the shelf was empty (ground truth in the "
         "simulator; estimated from demand rates in gold).", ("gold.stockouts",)),
    Term("Restock", "staff moving units from the backroom to a facing (`shelf.restock`).", ("silver.shelf_restock",)),
    Term("Delivery", "units arriving into the backroom (`inventory.delivery`).", ("silver.inventory_delivery",)),
    Term("Stock record (book)", "what the store's inventory system believes it holds per SKU, shelf and backroom "
         "together (`book_units`), exported by the ERP each night with that night's cycle counts "
         "(`counted_units`); unrecorded shrink and misplaced cases stay in it until a count.",
         ("silver.stock_record", "gold.stockout_causes")),
    Term("Phantom inventory", "units the system believes are there but are not: the book is above what the shelf "
         "and the backroom hold.", ("gold.stockout_causes", "silver.stock_record")),
    Term("Stock-out cause", "why a shelf ran empty: `shelf_handling` (the backroom had stock: a late round or a "
         "facing too small), `misplaced`, `phantom_inventory` or `backroom_empty`; assigned from restock, delivery, "
         "round and stock-record evidence with a confidence.", ("gold.stockout_causes",)),
    Term("Staff check", "what staff found when they pressed \"done\" on the store page (`shelf.check`: refilled, "
         "was fine, no stock); the outcome of the alert before it and a label.",
         ("silver.shelf_check", "gold.shelf_checks", "gold.alert_outcomes")),
    Term("Gap scan", "a staff round with a handheld that scans every facing found empty (`shelf.gap_scan`). Staff "
         "miss some gaps, so a scan proves a facing empty, but no scan does not prove it full; gap scans label "
         "`gold.features` rows of facings without a sensor.", ("silver.gap_scan", "gold.features")),
    Term("Horizon (H)", "how far ahead a stock-out is predicted (default 120 minutes).",
         ("silver.edge_alert", "gold.features")),
    Term("Alert", "a gateway's `edge.alert`, raised when the stock-out probability crosses the raise threshold and "
         "cleared (hysteresis) when it falls below the clear threshold.", ("silver.edge_alert", "gold.model_performance")),
    Term("Lead time", "minutes from the first alert to the moment the shelf went empty.",
         ("gold.stockouts", "gold.model_performance")),
    Term("Precision / recall", "of alerts: share of judged alerts whose shelf was empty within the horizon (an "
         "alert on a facing without a sensor that no gap scan, check, refill or till sale judged is `unobserved`, "
         "left out) / share of stock-outs preceded by an alert within the horizon.", ("gold.model_performance",)),
    Term("Sequence gap", "a missing `seq` in one device's counter: a counted loss.", ("gold.fleet_status",)),
    Term("Quarantine", "where a payload or row that breaks the contract or an expectation is kept, with its reason, "
         "instead of being dropped silently.", ("silver.quarantine",)),
    Term("Bronze / silver / gold", "raw as received / typed, deduplicated, masked / business tables.",
         ("bronze.events", "bronze.batch_records")),
    Term("Pseudonym", "a keyed hash that replaces a personal identifier (loyalty id). The key is versioned: "
         "a pseudonym reads `v<N>:<hash>` from key version 2 on, and a rotation publishes links from the old "
         "pseudonym to the new one so a customer's history still joins.", ("silver.pos_line",)),
    Term("Personal data", "data about an identifiable person: loyalty ids (pseudonymized at the gateway) and staff "
         "codes. Classified `personal` in the catalog; erasable on request (`gondola erase`).",
         ("silver.pos_line", "silver.shelf_restock", "silver.shelf_check", "silver.gap_scan")),
    Term("Training features", "the model's inputs per facing and instant, computed by the same code on the gateway "
         "and in the cloud (`models.features`).", ("gold.features",)),
    Term("Fleet", "the store gateways and their devices, and their health.", ("gold.fleet_status", "silver.edge_health")),
    Term("Device event", "one message of a store device: a POS line, a shelf reading, a restock, a delivery, a gap scan, "
         "an alert or a health report; identified by `(device_id, seq)`.", _EVENTS),
)


def terms_of(table: str) -> list[str]:
    """Glossary terms attached to ``table``."""
    return [t.name for t in TERMS if table in t.tables]


def glossary_markdown() -> str:
    """``docs/glossary.md``: every term, its definition and the tables it describes."""
    lines = ["# Glossary", "",
             "Terms used in code, tables and the catalog. One definition each. Generated from",
             "`cloud/meta/glossary.py` by `gondola catalog --glossary docs/glossary.md`; the catalog",
             "(`gondola catalog`) attaches each term to the tables listed.", ""]
    for t in TERMS:
        where = f" Tables: {', '.join(f'`{x}`' for x in t.tables)}." if t.tables else ""
        lines.append(f"- **{t.name}**: {t.definition}{where}")
    return "\n".join(lines) + "\n"
