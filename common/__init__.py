"""Shared contract of the fleet: IDs, MQTT topics and schemas, units, time and settings."""
