"""Where desired states come from (MQTT, HTTP polling) and where reports go, behind small seams."""
