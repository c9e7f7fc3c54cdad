"""MLflow's client as every export uses it: its settings (no minutes of retries, credentials through its
own variables, its INFO lines quiet), reached once, and its errors cut to their useful end.

Why apart from :mod:`.mlflow` (what of a run goes where, and how far it went): the client's set-up and
error text are the same for ``lt export`` and the live sink (:mod:`lightning_track.sinks.mlflow`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ExportError, one_line
from .target import Target

__all__ = ["MlflowConnection", "client_env", "failure_reason", "error_code"]

_ENV_DEFAULTS = {  # a dead server fails in seconds, not MLflow's minutes of retries; no URL printed
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


@contextmanager
def client_env(target: Target) -> Iterator[None]:
    """MLflow's client settings for the export's duration; credentials through its own variables, never
    in a URL (so no message of its can show them)."""
    wanted = {k: v for k, v in _ENV_DEFAULTS.items() if k not in os.environ}
    if target.username:
        wanted["MLFLOW_TRACKING_USERNAME"] = target.username
    if target.password:
        wanted["MLFLOW_TRACKING_PASSWORD"] = target.password
    before = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]  # its INFO lines (database set-up)
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def failure_reason(exc: BaseException, target: Target) -> str:
    """The useful end of an MLflow/requests error (``Connection refused``), on one line, no credentials."""
    text = one_line(exc, limit=2000)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        text = found.group(1)
    else:
        text = re.sub(r"^API request to \S+ failed with exception ", "", text)
    return target.scrub(text)[:300]


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", ""))


class MlflowConnection:
    """MLflow's client for one target, reached once: its first call fails at once (nothing sent) when the
    tracker is not usable; its settings hold until :meth:`close`."""

    def __init__(self, target: Target) -> None:
        self._env: Any = client_env(target)
        try:
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ExportError("lt export --to MLflow needs MLflow's client: pip install 'lightning-track[mlflow]'") \
                from None
        self.Metric, self.Param, self.RunTag, self.Error = Metric, Param, RunTag, MlflowException
        self._env.__enter__()
        try:
            self.client = MlflowClient(tracking_uri=target.uri)
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure of the first call: the tracker is not usable
            self.close()
            raise ExportError(f"{target.uri}: the MLflow tracker cannot be reached ({failure_reason(exc, target)}); "
                              "nothing was sent") from None

    def close(self) -> None:
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None
