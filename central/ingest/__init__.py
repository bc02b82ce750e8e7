"""MQTT ingest: decide each message (``process``), write it (``store``), run it (``service``)."""
