"""Shared test fixtures."""

pytest_plugins = ["pytester"]
