"""Helpers shared by the tests; fixtures that use them are defined in tests/conftest.py."""
