"""Tests of the central server."""
