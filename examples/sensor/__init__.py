"""A simulated sensor over MQTT, shown live in a web page over WebSocket through a group."""
