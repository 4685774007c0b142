"""Ingest into bronze: the stream (hub / Event Hubs) and batch files (master data, sales exports)."""
