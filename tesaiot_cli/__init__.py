"""tesaiot: listen to, simulate, record and replay MQTT telemetry for the TESAIoT platform."""

__version__ = "0.1.0"
