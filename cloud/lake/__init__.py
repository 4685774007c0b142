"""The medallion lake: storage, table definitions, and the bronze -> silver -> gold runner."""
