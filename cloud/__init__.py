"""Gondola's cloud side: ingest, the bronze / silver / gold lake, warehouse and dashboard.

Entry points: ``cloud.wiring.build_cloud`` (Python) and ``cloud.cli.main`` (``gondola cloud``).
Modules: ``cloud.ingest`` (stream sources and batch files -> bronze), ``cloud.lake`` (storage,
table definitions, silver / gold transformations, engines, the incremental runner),
``cloud.warehouse``, ``cloud.dashboard``, ``cloud.synth`` (test / benchmark input). The Azure
SDK adapters live in ``cloud.azure``. ``docs/lake.md`` describes the whole.
"""
