"""Edge agent: polls a site's battery monitors and publishes every reading over MQTT."""
