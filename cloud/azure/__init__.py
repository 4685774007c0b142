"""Azure adapters of the cloud side: the only cloud modules that import an Azure SDK.

* ``cloud.azure.eventhubs``  ``EventHubSource``: the lake's stream source on Event Hubs (the IoT
  Hub built-in endpoint), with the blob checkpoint store and the SDK's partition balancing;
* ``cloud.azure.adls``       ``AdlsAdmin``: file system, bronze/silver/gold folders and ACLs;
* ``cloud.azure.twins``      ``IotHubTwinRegistry``: module-twin desired/reported properties for
  model rollout;
* ``cloud.azure.storage``    ``storage_options`` for ``deltalake`` on ADLS Gen2 or Azurite (no SDK).

Import the submodule you need; this package imports nothing at import time.
docs/azure.md maps each adapter onto a real deployment and lists its settings.
"""

__all__ = ["adls", "eventhubs", "storage", "twins"]
