"""``battery-fleet``: the whole system on one machine, for a demo (the composition root)."""
