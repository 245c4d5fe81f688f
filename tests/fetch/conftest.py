"""Fetch tests use the suite's `make_workspace` (tests/conftest.py): a Workspace on a fresh
built-in emulator per test, real HTTP over loopback."""
