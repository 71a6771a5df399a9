"""Fixtures of the Schemathesis runs live in each test module; helpers in fuzz_kit.py."""
