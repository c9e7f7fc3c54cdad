"""Legacy text files carried into a migrated run (``legacy/training_config.yaml``, ``legacy/train.log``, the final
model's small JSON/YAML files), with their secrets taken out by the one rule (:mod:`lightning_track.redaction`).

Why not link them as they are: ``config.yaml`` is redacted, and a file beside it that still holds
``hf_token: ...`` would be mirrored by lt-sync all the same. YAML and JSON are read by key (a value under a
secret name); every text file then has the run's known secret values (from its legacy config) masked and the
credentials taken out of its URLs. A file that holds none is linked unchanged; the source is never written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..redaction import MIN_MASKED, REDACTED, Masker, redact, secret_leaves, strip_url_credentials

__all__ = ["TEXT_SUFFIXES", "MAX_TEXT_BYTES", "redacted_text"]

TEXT_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".txt", ".log", ".cfg", ".ini", ".toml", ".md", ".csv", ".sh"})
MAX_TEXT_BYTES = 1 << 20  # larger files (a tokenizer.json's vocabulary) are data, not settings; linked as they are


def _by_key(path: Path, text: str) -> str:
    """YAML/JSON with every value under a secret name redacted; other text unchanged."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            return text
        cleaned = redact(data)
        return text if cleaned == data else json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n"
    if suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        values = secret_leaves(data)
        if not values:
            return text
        if all(len(v) >= MIN_MASKED for v in values):  # keep the file as written (comments, order): mask the values
            masked = _mask_yaml(text, values)
            try:
                if redact(yaml.safe_load(masked)) == redact(data):
                    return masked
            except yaml.YAMLError:
                pass
        return yaml.safe_dump(redact(data), sort_keys=False, allow_unicode=True)
    return text


def _mask_yaml(text: str, values: set[str]) -> str:
    """Each secret value replaced by the marker, quoted where it stood unquoted (a bare ``***`` is a YAML alias)."""
    pattern = re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))

    def replace(match: re.Match[str]) -> str:
        before, after = text[match.start() - 1:match.start()], text[match.end():match.end() + 1]
        return REDACTED if before in ("'", '"') and after == before else f"'{REDACTED}'"

    return pattern.sub(replace, text)


def redacted_text(path: Path, known: Masker) -> str | None:
    """``path``'s text with its secrets out, or None when it holds none (or is not a small UTF-8 text file)."""
    if path.suffix.lower() not in TEXT_SUFFIXES or path.is_symlink():
        return None
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    cleaned = strip_url_credentials(known(_by_key(path, text)))
    return cleaned if cleaned != text else None
