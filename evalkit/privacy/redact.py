"""Secrets kept out of published files: params redacted before papermill injects them,
executed notebooks scrubbed after."""
from __future__ import annotations

import copy
import html as _html
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..results import write_text_atomic
from .errors import PrivacyError

__all__ = ["DEFAULT_SECRET_KEYS", "REDACTED", "redact_notebook", "redact_params", "scrub"]

REDACTED = "***"


DEFAULT_SECRET_KEYS = ("password", "passwd", "pwd", "token", "secret", "key", "credentials",
                       "credential", "connection_url", "connection_string", "dsn", "apikey",
                       "sig", "signature")
# words that, after a secret word inside a dotted key, say the setting is about the
# secret rather than the secret itself: spark.io.encryption.keySizeBits, ssl.keyStore.type
_ABOUT_SECRET_WORDS = frozenset((
    "size", "bits", "length", "len", "column", "col", "columns", "count", "id", "name",
    "names", "file", "path", "type", "algorithm", "provider", "store", "location", "format",
    "map", "mode", "prefix", "field", "fields", "enabled", "enable", "class", "factory",
    "endpoint", "uri", "url", "expiry", "expiration", "ttl", "timeout", "interval", "version"))

_URL_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)"
                              r"(?P<pw>[^@/\s]+)(?P<at>@)")
# a token written as the user of a URL (https://ghp_xxxxxxxxxxxxxxxx@host/...)
_URL_TOKEN_USER = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<pw>[^:/@\s]{16,})"
                             r"(?P<at>@)")
# name=value settings inside a URL's query string or a connection string
# (?password=..., &sig=..., ;AccountKey=...;)
_QUERY_SETTING = re.compile(r"(?P<head>(?:^|[?&;])\s*(?P<name>[A-Za-z][\w.\-]*)\s*=\s*)"
                            r"(?P<pw>[^&;#\s'\"]+)")


def _words(key) -> list[str]:
    """'dbPassword' -> ['db', 'password']; 'API_Key' -> ['api', 'key']."""
    s = str(key)
    return [w.lower() for w in re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", s)]


def _is_secret_key(key, names: list[list[str]]) -> bool:
    """Whether a key names a secret: its last words are a secret name (``db_password``),
    or, for a dotted setting, a secret name is followed only by words that are not about
    the secret (``fs.azure.account.key.ACCOUNT.blob.core.windows.net``, but not
    ``spark.io.encryption.keySizeBits``)."""
    w = _words(key)
    if any(n and w[-len(n):] == n for n in names):
        return True
    if "." not in str(key):
        return False
    for i in range(len(w)):
        for n in names:
            if n and w[i:i + len(n)] == n and not _ABOUT_SECRET_WORDS.intersection(
                    w[i + len(n):]):
                return True
    return False


def redact_params(params_dict, secret_keys: Iterable[str] = DEFAULT_SECRET_KEYS):
    """A copy of a params mapping with secret values replaced by ``"***"``.

    A key is secret when its last words (split at ``_``, ``-``, ``.``, spaces and
    camelCase, compared case-insensitively) are one of ``secret_keys``:
    ``db_password``, ``apiToken``, ``client_secret``, ``api_key``, ``aws_credentials``
    and ``warehouse.connection_url`` match; ``key_column`` or ``token_count`` do not.
    A dotted key (a Spark or Hadoop setting) is also secret when a secret word is
    followed only by words that do not describe it: ``fs.azure.account.key.ACCOUNT.
    blob.core.windows.net`` and ``spark.hadoop.fs.s3a.secret.key`` match,
    ``spark.io.encryption.keySizeBits`` and ``spark.ssl.keyStore`` do not. Keys are
    checked at any depth. The whole value of a secret key is replaced, nested dicts
    included (a ``credentials`` block). In every other string, credentials embedded in
    a URL or connection string are replaced too: the password of the user-info
    (``postgresql://user:PASSWORD@host/db``), a long token written as the user
    (``https://TOKEN@host``), and query or connection-string settings whose name is a
    secret key (``?password=...``, ``&sig=...``, ``;AccountKey=...;``).

    Parameters
    ----------
    params_dict : mapping (nested dicts and lists allowed), or an object with
        ``to_dict()`` / ``model_dump()`` such as :class:`evalkit.params.Params`. Not
        modified.
    secret_keys : names that mark a key as secret.

    Returns
    -------
    (redacted, secrets)
        ``redacted`` a new dict; ``secrets`` the list of distinct secret strings removed
        (leaf values of secret keys, numbers as text, and URL passwords both as written
        and percent-decoded), for :func:`redact_notebook` and :func:`scan_outputs`.

    Examples
    --------
    >>> red, found = redact_params({"db": {"user": "ana", "password": "s3cr3t!"}})
    >>> red, found
    ({'db': {'user': 'ana', 'password': '***'}}, ['s3cr3t!'])
    """
    if hasattr(params_dict, "to_dict") and not isinstance(params_dict, Mapping):
        params_dict = params_dict.to_dict()
    elif hasattr(params_dict, "model_dump") and not isinstance(params_dict, Mapping):
        params_dict = params_dict.model_dump()
    if not isinstance(params_dict, Mapping):
        raise PrivacyError(f"redact_params: expected a mapping of params, got "
                           f"{type(params_dict).__name__}")
    if isinstance(secret_keys, str):
        secret_keys = [secret_keys]
    names = [_words(k) for k in secret_keys]
    secrets: list[str] = []

    def keep(s: str) -> None:
        if s and s != REDACTED and s not in secrets:
            secrets.append(s)

    def leaves(v) -> None:
        if isinstance(v, Mapping):
            for x in v.values():
                leaves(x)
        elif isinstance(v, (list, tuple, set)):
            for x in v:
                leaves(x)
        elif isinstance(v, str):
            keep(v)
            scrub_url(v)
        elif v is not None and not isinstance(v, bool):
            keep(str(v))

    def found(m) -> str:
        keep(m["pw"])
        keep(urllib.parse.unquote(m["pw"]))
        return m["head"] + REDACTED + m["at"]

    def query(m) -> str:
        if not _is_secret_key(m["name"], names):
            return m.group()
        keep(m["pw"])
        keep(urllib.parse.unquote_plus(m["pw"]))
        return m["head"] + REDACTED

    def scrub_url(v: str) -> str:
        v = _URL_CREDENTIALS.sub(lambda m: found(m), v)
        v = _URL_TOKEN_USER.sub(lambda m: found(m), v)
        return _QUERY_SETTING.sub(query, v)

    def walk(v):
        if isinstance(v, Mapping):
            out = {}
            for k, x in v.items():
                if _is_secret_key(k, names) and x is not None and x != "":
                    leaves(x)
                    out[k] = REDACTED
                else:
                    out[k] = walk(x)
            return out
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if isinstance(v, str):
            return scrub_url(v)
        return copy.deepcopy(v)

    return walk(params_dict), secrets


def _secret_forms(secret: str) -> list[str]:
    """The ways a secret shows up in files: as is, HTML-, JSON-, Python- and URL-escaped."""
    forms = {secret, _html.escape(secret, quote=True), _html.escape(secret, quote=False),
             json.dumps(secret)[1:-1], repr(secret)[1:-1],
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    return sorted((f for f in forms if f), key=len, reverse=True)


def _as_secret_list(secrets) -> list[str]:
    if secrets is None:
        return []
    if isinstance(secrets, str):
        secrets = [secrets]
    out = []
    for s in secrets:
        if s is None:
            continue
        s = str(s)
        if s and s != REDACTED and s not in out:
            out.append(s)
    return out


def _is_binary_mime(key) -> bool:
    k = str(key)
    return (k.startswith("image/") and k != "image/svg+xml") or k in (
        "application/pdf", "application/octet-stream")


def scrub(value, secrets, replacement: str = REDACTED):
    """``value`` with every occurrence of each of ``secrets`` replaced, in every string
    of it at any depth (dicts, lists and tuples are copied, other values kept).

    >>> scrub({"title": "db at postgresql://u:pw123@h/db", "n": [1, "pw123"]}, ["pw123"])
    {'title': 'db at postgresql://u:***@h/db', 'n': [1, '***']}
    """
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)
    if isinstance(value, str):
        for secret in ordered:
            value = value.replace(secret, replacement)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, ordered, replacement) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v, ordered, replacement) for v in value)
    return value


def redact_notebook(path, secrets, replacement: str = REDACTED) -> int:
    """Replace every secret in an executed notebook by ``"***"``, in place, atomically.

    Sources, outputs (text, HTML, JSON, error tracebacks), notebook and cell metadata
    (papermill keeps the injected parameters in ``metadata.papermill.parameters``) are
    all rewritten. Each secret is also looked for in its HTML-, JSON-, Python- and
    URL-escaped forms. Base64 image outputs are left alone. The new file replaces the
    old one by an atomic rename (a reader never sees a half-written notebook); a
    notebook without any secret is not rewritten. Run it before the HTML export.

    Parameters
    ----------
    path : the ``.ipynb`` file.
    secrets : strings to remove, e.g. the second value returned by :func:`redact_params`.
    replacement : the text put in their place.

    Returns
    -------
    int
        Number of replacements made.
    """
    path = Path(path)
    if not path.is_file():
        raise PrivacyError(f"redact_notebook: {path} is not a file")
    forms = []
    for s in _as_secret_list(secrets):
        forms.extend(_secret_forms(s))
    forms = sorted(dict.fromkeys(forms), key=len, reverse=True)
    if not forms:
        return 0
    try:
        # the notebook as JSON, not through nbformat: nbformat loads jsonschema, which
        # every workbook kernel would pay for when it imports evalkit
        nb = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(nb, dict) or "cells" not in nb:
            raise ValueError("no cells")
    except (OSError, ValueError) as err:
        raise PrivacyError(f"redact_notebook: cannot read {path} as a notebook ({err})") from None
    count = 0

    def fix(s: str) -> str:
        nonlocal count
        for f in forms:
            if f in s:
                count += s.count(f)
                s = s.replace(f, replacement)
        return s

    def walk(v):
        if isinstance(v, dict):
            for k in list(v):
                if _is_binary_mime(k):
                    continue
                v[k] = walk(v[k])
            return v
        if isinstance(v, list):
            if (len(v) > 1 and all(isinstance(x, str) for x in v)
                    and all(x.endswith("\n") for x in v[:-1])):
                # a multi-line text stored as a list of lines: a secret may span lines
                return fix("".join(v)).splitlines(keepends=True)
            for i, x in enumerate(v):
                v[i] = walk(x)
            return v
        if isinstance(v, str):
            return fix(v)
        return v

    walk(nb)
    if count == 0:
        return 0
    # the layout nbformat writes: one-space indent, sorted keys, text as it is
    write_text_atomic(path, json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                      mode=path.stat().st_mode & 0o777)
    return count
