"""Structured logs: one JSON object per line on stderr, as cluster log pipelines (and ``kubectl logs | jq``)
expect of a Kubernetes component. python-json-logger renders the records; the fields a caller passes as
``extra`` (``workloadSpread``, ``pod``, ...) become keys of their own instead of text inside the message."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

LEVELS = ("debug", "info", "warning", "error")


def configure(level: str = "info") -> None:
    """Route every logger of the process (spreadhook's, and the libraries' that propagate) to JSON lines.
    Called once by each long-running command; gunicorn keeps its own access and error loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
        "{asctime}{levelname}{name}{message}", style="{", datefmt="%Y-%m-%dT%H:%M:%S%z",
        rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"}))
    logging.basicConfig(handlers=[handler], level=level.upper(), force=True)
