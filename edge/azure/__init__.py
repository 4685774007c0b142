"""Azure adapters of the gateway: the only edge modules that import an Azure SDK.

``IotHubTransport`` is the production ``HubTransport`` (gateway -> IoT Hub / edgeHub over MQTT)
and the module-twin access the model manager uses. Import it from ``edge.azure.iothub``; this
package does not import the SDK at import time.
"""

__all__ = ["iothub"]
