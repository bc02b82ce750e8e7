"""MQTT ingest: decide each message (``process``), write it (``store``), run it (``service``), as
a program with its engine and broker connection (``loop``)."""
