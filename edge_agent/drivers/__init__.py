"""Device drivers: each protocol library lives behind one adapter module here."""
