"""Governance metadata: the catalog and dictionary, glossary, Atlas export, run lineage."""
