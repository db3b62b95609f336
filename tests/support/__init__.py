"""Helpers that start real parts (broker, peers) for the tests."""
