"""Central server: fleet store, ingest, alerts, RUL and the REST and Socket.IO APIs."""
