"""deerflow-parallel controller: the daemon, its pure scheduling core, and the client SDK.

The SDK DeerFlow imports is :mod:`deerflow_controller.client`."""

__version__ = "0.1.0"
