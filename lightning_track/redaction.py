"""The one rule for secrets, used by everything a run writes, prints, mirrors or exports.

Why one module at the bottom: config.yaml, meta.json's argv, pipeline commands and their state file,
sbatch scripts, notification URLs, migrated legacy files and the console all decide "is this a
secret?" the same way, so a name is never redacted in one file and kept in the next. Torch-free,
standard library only.

The rule, by name (a config key, a command-line option, an environment variable). The name is split
into whole parts on ``_ - .`` and camelCase (``hfToken`` -> ``hf token``, ``WANDB_API_KEY`` ->
``wandb api key``), lower-cased; it is a secret when:

* a part is a secret word (:data:`SECRET_WORDS`: password, passwd, pwd, passphrase, secret, credentials,
  apikey, auth, authorization, bearer, cookie, dsn, webhook, ...);
* two neighbouring parts are a known compound (:data:`SECRET_PAIRS`: api key, access key, private key,
  session id, connection string, ...), or the last part is ``key`` after a service or key kind
  (:data:`KEY_OWNERS`: ``wandb_key``, ``openai_key``, ``hf_key``, ``ssh_key`` ...; ``sort_key`` and
  ``text_key`` stay);
* the last part is ``token`` (``token``, ``hf_token``, ``hub_token``, ``access_token``), except after a
  tokenizer's word (:data:`TOKENIZER_WORDS`: ``pad_token``, ``eos_token``, ``mask_token`` ...).

Never substrings: ``max_new_tokens``, ``num_tokens`` (``tokens``), ``pad_token_id`` (ends in ``id``),
``tokenizer``, ``tokenizer_name`` and ``author`` are hyperparameters and stay.

Values: under a secret name the whole value becomes :data:`REDACTED`; in every other string, the
credentials of a URL (``https://user:pw@host`` -> ``https://***@host``) are taken out. A command line
is read as ``--k v``, ``--k=v`` and ``k=v`` (OmegaConf/Hydra overrides, ``+k=v`` too). Short options
(``-p hunter2``) are not read: ``-p`` is a port or a patience as often as a password, so give secrets
by a long option or the environment. Console output (``logs.txt``) is masked by value: every string
the run knows as a secret (from its config, its command line, its environment), at least
:data:`MIN_MASKED` characters long, is replaced wherever it appears (:class:`Masker`).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["REDACTED", "SECRET_WORDS", "SECRET_PAIRS", "KEY_OWNERS", "TOKENIZER_WORDS", "MIN_MASKED", "name_parts",
           "is_secret_key", "redact", "redact_argv", "redact_env", "redact_command", "strip_url_credentials",
           "redact_url", "secret_leaves", "secret_values", "command_secrets", "Masker"]

REDACTED = "***REDACTED***"
MIN_MASKED = 4  # shorter values are not masked in free text (a "1" or "abc" would hide ordinary output)

SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "pwd", "passphrase", "secret", "secrets", "credential", "credentials",
    "creds", "apikey", "apikeys", "auth", "authorization", "bearer", "cookie", "cookies", "dsn", "webhook",
    "webhooks", "privatekey", "accesskey", "secretkey", "sessionid",
})
SECRET_PAIRS = frozenset({
    ("api", "key"), ("api", "keys"), ("access", "key"), ("private", "key"), ("signing", "key"),
    ("encryption", "key"), ("session", "id"), ("session", "key"), ("connection", "string"), ("conn", "str"),
})
KEY_OWNERS = frozenset({  # <owner>_key is a secret (a key to a service or a kind of secret key)
    "wandb", "openai", "anthropic", "hf", "hub", "huggingface", "swanlab", "comet", "neptune", "clearml", "mlflow",
    "aws", "gcp", "azure", "google", "gemini", "mistral", "cohere", "groq", "together", "replicate", "deepseek",
    "dashscope", "zhipu", "moonshot", "kaggle", "github", "gitlab", "slack", "stripe", "sendgrid", "twilio",
    "ssh", "gpg", "pgp", "rsa", "license", "licence", "master", "deploy", "account", "service", "client", "app",
    "storage", "subscription", "user", "admin", "root",
})
TOKENIZER_WORDS = frozenset({  # <word>_token is a tokenizer's special token, not a credential
    "pad", "bos", "eos", "unk", "mask", "sep", "cls", "start", "end", "stop", "eot", "eom", "special",
    "additional", "image", "audio", "video", "vision", "boi", "eoi", "think", "tool", "decoder", "sentinel",
    "prefix", "suffix", "middle", "fim", "default", "new", "first", "last", "next", "text", "placeholder",
})
# the shell's working directories, the SSH agent's socket, the login session: matching names, values not secret
_ENV_NOT_SECRET = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "XDG_SESSION_ID"})

_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_URL_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/@?#]+)@")


def name_parts(name: str) -> list[str]:
    """``"hfToken"`` -> ``["hf", "token"]``; ``"WANDB_API_KEY"`` -> ``["wandb", "api", "key"]``."""
    return [p.lower() for chunk in re.split(r"[\W_]+", name) for p in _PARTS.findall(chunk)]


def is_secret_key(name: object) -> bool:
    """Whether values under this name (config key, option, environment variable) are secrets; see the module doc."""
    if not isinstance(name, str):
        return False
    parts = name_parts(name)
    if not parts:
        return False
    if any(p in SECRET_WORDS for p in parts):
        return True
    if any(pair in SECRET_PAIRS for pair in zip(parts, parts[1:], strict=False)):
        return True
    last, before = parts[-1], (parts[-2] if len(parts) > 1 else None)
    if last == "key":
        return before in KEY_OWNERS
    if last == "token":
        return before not in TOKENIZER_WORDS
    return False


def strip_url_credentials(text: str) -> str:
    """``https://user:pw@host/x`` -> ``https://***@host/x`` wherever a URL appears in ``text``."""
    return _URL_CREDENTIALS.sub(r"\1***@", text) if "@" in text else text


def redact(value: Any) -> Any:
    """Copy of ``value`` (dicts and lists, at any depth) with the value under every secret key replaced by
    :data:`REDACTED`, and credentials taken out of URLs in every other string."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(k) and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return strip_url_credentials(value)
    return value


def _option_name(arg: str) -> str | None:
    """``--wandb-key`` -> ``wandb-key``; ``+model.hf_token`` (a Hydra override's key) -> ``model.hf_token``."""
    if arg.startswith("--"):
        return arg[2:]
    if arg.startswith("-") or any(c.isspace() for c in arg):
        return None  # short options (see the module doc); a whole quoted command is read word by word
    return arg.lstrip("+~")


def _argv_secrets(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the redacted command line, the secret values found in it)."""
    out: list[str] = []
    found: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            hide_next = False
            if not arg.startswith("--"):
                out.append(REDACTED)
                found.append(arg)
                continue
        key, sep, value = arg.partition("=")
        name = _option_name(key)
        if sep and name is not None and is_secret_key(name):
            out.append(f"{key}={REDACTED}")
            found.append(value)
        elif not sep and arg.startswith("--") and is_secret_key(arg[2:]):
            out.append(arg)
            hide_next = True
        else:
            out.append(strip_url_credentials(arg))
    return out, found


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with secret values hidden: ``--hf-token X``, ``--api-key=X``, ``model.hf_token=X``,
    ``+wandb_key=X`` (Hydra); credentials out of URLs in any argument."""
    return _argv_secrets(list(argv))[0]


def redact_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Environment variables with the values of secret names (``HF_TOKEN``, ``WANDB_API_KEY``) hidden."""
    return {k: (REDACTED if k not in _ENV_NOT_SECRET and is_secret_key(k) else strip_url_credentials(v))
            for k, v in environ.items()}


def _shell_words(text: str) -> list[str]:
    """Words as the shell reads them; where the whole text does not parse (a comment line's apostrophe in a
    script), line by line, skipping comment lines; a line that still does not parse, split on whitespace."""
    try:
        return shlex.split(text)
    except ValueError:
        pass
    words: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        try:
            words += shlex.split(line)
        except ValueError:
            words += line.split()
    return words


def command_secrets(text: str, _depth: int = 0) -> set[str]:
    """The secret values in shell text (a pipeline command, an sbatch script): option values as
    :func:`redact_argv` finds them, also inside quoted ``sh -c '...'`` words, and URL credentials."""
    words = _shell_words(text)
    found = {v for v in _argv_secrets(words)[1] if v}
    for match in _URL_CREDENTIALS.finditer(text):
        found.add(match.group(2))
    if _depth < 3:
        for word in words:
            if any(c.isspace() for c in word):
                found |= command_secrets(word, _depth + 1)
    return found


def redact_command(text: str) -> str:
    """Shell text as written, with every secret value of :func:`command_secrets` replaced by :data:`REDACTED`."""
    secrets = command_secrets(text)
    return Masker(secrets, min_length=1)(strip_url_credentials(text)) if secrets else text


def redact_url(url: str) -> str:
    """A notification URL as ``scheme://…#<fingerprint>``: apprise URLs hold their secret anywhere (the user,
    the host in ``pbul://TOKEN``, the path in Slack's token triple), so only the scheme is shown, and a short
    hash tells two URLs apart."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    fingerprint = hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()[:8]
    return f"{scheme}://…#{fingerprint}" if scheme else f"<url>#{fingerprint}"


def secret_leaves(value: Any) -> set[str]:
    """Every value (as text, of any length) under a secret key of a config, and the credentials of its URLs."""
    found: set[str] = set()
    _secret_leaves(value, False, found)
    return found


def _secret_leaves(value: Any, under_secret: bool, out: set[str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _secret_leaves(v, under_secret or is_secret_key(k), out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _secret_leaves(v, under_secret, out)
    elif under_secret and isinstance(value, (str, int)) and not isinstance(value, bool):
        out.add(str(value))
    elif isinstance(value, str) and "@" in value:
        out.update(m.group(2) for m in _URL_CREDENTIALS.finditer(value))


def secret_values(config: Any = None, argv: Iterable[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret value a run knows: under secret keys of its config, in its command line, in secret
    environment variables (at least :data:`MIN_MASKED` characters each)."""
    found: set[str] = set()
    if config is not None:
        found |= secret_leaves(config)
    if argv is not None:
        found.update(_argv_secrets(list(argv))[1])
        for arg in argv:
            found.update(m.group(2) for m in _URL_CREDENTIALS.finditer(arg))
    if environ is not None:
        found.update(v for k, v in environ.items() if k not in _ENV_NOT_SECRET and is_secret_key(k))
    return {v for v in found if len(v) >= MIN_MASKED and v != REDACTED}


class Masker:
    """Replaces every occurrence of the given secret values in text by :data:`REDACTED` (longest first, so a
    secret that contains another is hidden whole). Empty: text passes unchanged at no cost."""

    def __init__(self, secrets: Iterable[str], *, min_length: int = MIN_MASKED) -> None:
        values = sorted({s for s in secrets if len(s) >= min_length and s != REDACTED}, key=len, reverse=True)
        self.secrets = tuple(values)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text
