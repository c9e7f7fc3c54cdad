"""Where ``lt export --to`` sends runs: the URI parsed once, credentials kept out of every text.

Why one function: the export record, every message and the tracker's client must agree on the same
target, and a password in ``https://user:pw@host`` must never reach a file or a terminal. Pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ["Target", "parse_target", "wandb_target", "SUPPORTED", "MLFLOW_URI_ENV", "WANDB"]

MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable, read as its client reads it
SUPPORTED = ("mlflow://HOST:PORT", "http(s)://HOST[:PORT][/PATH]", "sqlite:///PATH.db",
             f"${MLFLOW_URI_ENV}", "wandb[:DIR]")
WANDB = "wandb"  # offline W&B runs: in each run's folder, or under DIR (``--to wandb --dir DIR``)


@dataclass(frozen=True)
class Target:
    """A tracker to export to. ``uri`` has no credentials: it is what is written and printed, and what
    the client is given; ``username``/``password`` reach the client another way (never a URL)."""

    tracker: str  # "mlflow" or "wandb"
    uri: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    dir: str | None = None  # wandb: the folder the offline runs go under (None: each run's own folder)

    def scrub(self, text: str) -> str:
        """``text`` (a foreign library's message) with the credentials taken out."""
        for secret in (self.password, self.username):
            if secret:
                text = text.replace(secret, "***")
        return text


def _unknown(text: str) -> ConfigError:
    return ConfigError(f"--to {_strip_text(text)!r}: not a supported tracker; use one of: {', '.join(SUPPORTED)}")


def _strip(parts: SplitResult) -> tuple[str, str | None, str | None]:
    """``parts`` as a URI without user and password, and the two."""
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, "")), parts.username, parts.password


def parse_target(text: str | None, environ: Mapping[str, str] | None = None) -> Target:
    """``--to`` (or ``$MLFLOW_TRACKING_URI`` when it is not given) as a :class:`Target`.

    ``mlflow://HOST:PORT`` is an MLflow tracking server over HTTP; ``http(s)://`` is one as it is;
    ``sqlite:///PATH`` is an MLflow database written directly; ``wandb`` (``wandb:DIR``) offline W&B runs
    (see :func:`wandb_target`). Anything else raises :class:`ConfigError`
    listing what is supported.
    """
    environ = os.environ if environ is None else environ
    if text and text.strip().lower().partition(":")[0] == WANDB:
        return wandb_target(text.strip()[len(WANDB) + 1:] or None)
    if not text:
        text = environ.get(MLFLOW_URI_ENV, "")
        if not text:
            raise ConfigError(f"no tracker given: pass --to URI or set ${MLFLOW_URI_ENV}; "
                              f"supported: {', '.join(SUPPORTED)}")
    text = text.strip()
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme == "sqlite":
        if not text.startswith("sqlite:///") or len(text) <= len("sqlite:///"):
            raise ConfigError(f"--to {text!r}: an MLflow database is sqlite:///PATH.db (three slashes, then the path)")
        return Target("mlflow", text)
    if scheme not in ("mlflow", "http", "https"):
        raise _unknown(text)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"--to {_strip_text(text)!r}: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"--to {_strip_text(text)!r}: no host; e.g. mlflow://127.0.0.1:5000")
    if scheme == "mlflow":
        parts = parts._replace(scheme="http")
    uri, user, password = _strip(parts)
    return Target("mlflow", uri, user or None, password or None)


def wandb_target(folder: str | os.PathLike[str] | None) -> Target:
    """Offline W&B runs under ``folder`` (absolute in the record, so every run names the same target), or
    in each run's own folder when it is None."""
    if not folder:
        return Target(WANDB, WANDB)
    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    return Target(WANDB, f"{WANDB}:{path}", dir=path)


def _strip_text(text: str) -> str:
    """``text`` without what sits between ``://`` and an ``@`` (credentials), for a message."""
    head, sep, rest = text.partition("://")
    return head + sep + rest.rpartition("@")[2] if sep else text
