"""Fixtures shared by every test folder: the real control plane (harness.pytest_plugin)."""

pytest_plugins = ["harness.pytest_plugin"]
