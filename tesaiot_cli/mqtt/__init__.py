"""The MQTT layer: sessions and per-device fleets of connections over paho-mqtt."""
