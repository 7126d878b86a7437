"""Keeping secrets out of what goes to the tracking server.

Two rules, applied to everything a run records (params, tags, run name, the config
artifact, error messages):

* by key: the value of a config key whose name looks like a secret is replaced by
  ``***`` (a whole subtree when the key holds a mapping or a list);
* by value: inside any string, the secret part of secret-looking text is replaced by
  ``***``: ``name=value`` pairs with a secret-looking name (SAS ``sig=``, connection
  strings' ``AccountKey=``, ``?token=``), ``Bearer <token>``, the password of
  ``scheme://user:password@host``, well-known token formats (GitHub, AWS, JWT, ...),
  and every value already known to be secret (those under secret keys, and those of
  secret-looking environment variables).

Key names are split into words (``_``, ``-``, ``.`` and camelCase boundaries), so
``keep_last`` or ``tokenizer`` are not secrets while ``storageAccountKey`` is.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Set

MASK = "***"

# A word that makes any key holding it secret.
_STRONG_WORDS = frozenset({
    "password", "passwd", "passphrase", "secret", "secrets", "token", "credential",
    "credentials", "creds", "sas", "bearer", "apikey", "accountkey", "accesskey",
    "privatekey", "secretkey", "sastoken", "connectionstring",
})
# Weaker hints: a key holding one of these is masked too (over-masking is harmless),
# but free text is not searched for them.
_WEAK_WORDS = frozenset({"key", "keys", "pwd", "auth", "authorization", "cookie", "dsn"})
# Compound words written without separators (``storagekey``, ``githubtoken``).
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "key", "keys", "credential", "credentials")
# ``name=value`` names that are secret in URLs (Azure SAS) though not as config keys.
_QUERY_NAMES = frozenset({"sig", "signature", "sharedaccesssignature"})
# Environment variables that are never secret although their names look so.
_ENV_NOT_SECRET = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK"})
# Shorter values are too likely to occur by chance to be replaced wherever they appear.
_MIN_KNOWN_SECRET = 8

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_TEXT_PATTERNS = (
    # Well-known token formats.
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    # An Azure storage account key: 64 bytes in base64.
    re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}=="),
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/-]{8,}=*)")
_URL_PASSWORD = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*+://[^/\s:@]*+):([^/\s@]++)@")
# name=value (query strings, connection strings, command lines) and name: value (not a URL).
_ASSIGNMENTS = (
    re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*+)(\s*=\s*)([^\s\"',;&}\])]+)"),
    re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*+)([\"']?\s*:\s*[\"']?)(?!//)([^\s\"',;&}\])]+)"),
)


def key_words(name: str) -> list[str]:
    """``storageAccountKey`` -> ``['storage', 'account', 'key']``."""
    return [word.lower() for word in _WORD.findall(name)]


def _words_are_secret(words: list[str], weak: bool) -> bool:
    vocabulary = _STRONG_WORDS | _WEAK_WORDS if weak else _STRONG_WORDS
    if any(word in vocabulary for word in words):
        return True
    pairs = {"".join(words[i : i + 2]) for i in range(len(words) - 1)}
    if pairs & _STRONG_WORDS:  # api_key, account_key, connection_string, ...
        return True
    return weak and any(word.endswith(_SECRET_SUFFIXES) for word in words)


def is_secret_key(name: str) -> bool:
    """Whether a config key (one segment, or a dotted path) names a secret.

    Case-insensitive and word-based: ``password``, ``client_secret``, ``hf_token``,
    ``api_key``, ``key``, ``storageAccountKey``, ``sas_url``, ``connection_string``
    are; ``keep_last``, ``tokenizer``, ``max_tokens``, ``keyboard`` and ``api_key_env`` (the
    name of the variable holding it) are not.
    """
    return any(_names_a_secret(key_words(part)) for part in re.split(r"[./]", name) if part)


def _names_a_secret(words: Sequence[str]) -> bool:
    # ``api_key_env`` holds the name of the variable that holds the key, not the key.
    return bool(words) and words[-1] != "env" and _words_are_secret(words, weak=True)


def _is_secret_env(name: str) -> bool:
    if name in _ENV_NOT_SECRET:
        return False
    words = key_words(name)
    return _words_are_secret(words, weak=False) or (bool(words) and words[-1] == "key")


class Masker:
    """Masks secrets in strings and config trees; remembers the secret values it met."""

    def __init__(self, known: Iterable[str] = (), environ: Optional[Mapping[str, str]] = None) -> None:
        self.known: Set[str] = set()
        self.remember(known)
        environ = os.environ if environ is None else environ
        self.remember(value for name, value in environ.items() if _is_secret_env(name))

    def remember(self, values: Iterable[Any]) -> None:
        for value in values:
            if isinstance(value, str) and len(value) >= _MIN_KNOWN_SECRET:
                self.known.add(value)

    def text(self, value: str) -> str:
        """``value`` with every secret-looking part replaced by ``***``."""
        # Longest first, so that a secret containing another is replaced whole.
        for secret in sorted(self.known, key=len, reverse=True):
            value = value.replace(secret, MASK)
        for pattern in _TEXT_PATTERNS:
            value = pattern.sub(MASK, value)
        value = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", value)
        value = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", value)
        for pattern in _ASSIGNMENTS:
            value = pattern.sub(self._assignment, value)
        return value

    @staticmethod
    def _assignment(match: "re.Match[str]") -> str:
        name, separator, secret = match.groups()
        words = key_words(name)
        if "=" in separator:
            hit = _words_are_secret(words, weak=True) or "".join(words) in _QUERY_NAMES
        else:  # "name: value" is common prose ("KeyError: ..."): strong words only
            hit = _words_are_secret(words, weak=False)
        return f"{name}{separator}{MASK}" if hit and secret != MASK else match.group(0)

    def tree(self, node: Any) -> Any:
        """A copy of a plain config tree (dicts, lists, scalars) with secrets masked.

        Call :meth:`collect` on the same tree first, so that a secret under a secret
        key is also masked where it is repeated under another key.
        """
        if isinstance(node, Mapping):
            return {
                key: MASK if is_secret_key(str(key)) and value not in (None, "") else self.tree(value)
                for key, value in node.items()
            }
        if isinstance(node, (list, tuple)):
            return [self.tree(value) for value in node]
        if isinstance(node, str):
            return self.text(node)
        return node

    def collect(self, node: Any, secret: bool = False) -> None:
        """Remember the string values found under secret keys of a config tree."""
        if isinstance(node, Mapping):
            for key, value in node.items():
                self.collect(value, secret or is_secret_key(str(key)))
        elif isinstance(node, (list, tuple)):
            for value in node:
                self.collect(value, secret)
        elif secret and node is not None:
            self.remember([str(node)])


def flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1, "c": [1, 2]}}`` -> ``{"a.b": 1, "a.c": "[1, 2]"}`` (lists as their string)."""
    if isinstance(node, Mapping) and node:
        flat: Dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(node, (list, tuple)):
        return {prefix: str(list(node))}
    return {prefix: node}
