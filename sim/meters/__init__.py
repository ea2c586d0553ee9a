"""Smart-meter simulator: the seeded fleet's readings over MQTT (``energy sim meters``)."""
