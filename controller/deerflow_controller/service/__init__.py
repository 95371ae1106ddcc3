"""The controller's I/O shell: the gRPC services, the shell that alone feeds the core and
flushes its decisions once per event-loop turn, the wire conversions, the cache saver,
splitter loading and embedded mode (see docs/ARCHITECTURE.md)."""
