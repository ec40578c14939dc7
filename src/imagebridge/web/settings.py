"""Staff page, the ``[web]`` configuration table and operator password hashes.

```toml
[web]
# session_secret = "..."      # else IMAGEBRIDGE_WEB_SESSION_SECRET, else random per start
viewer_url = "http://127.0.0.1:8042/app/explorer.html#study?uuid={orthanc_study_id}"
# users_file = "operators.txt" # lines "name = scrypt$...", relative to the config file
session_minutes = 480
search_deadline = 30           # seconds for each discovery/query phase of a search

[web.users]
alice = "scrypt$16384$8$1$<salt>$<hash>"   # from `imagebridge web-user add alice`
```

Passwords are never stored: only ``scrypt`` hashes (salted, :func:`hash_password`).
The viewer URL template may use ``{study_uid}``, ``{patient_id}`` and
``{orthanc_study_id}`` (Orthanc's identifier of the study), each URL-encoded.
Pure apart from reading ``users_file``; every error is a :class:`ConfigError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from imagebridge.errors import ConfigError

SECRET_ENV: Final = "IMAGEBRIDGE_WEB_SESSION_SECRET"  # noqa: S105 (a variable name)
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_KEYS: Final = frozenset(
    {"session_secret", "viewer_url", "users", "users_file", "session_minutes", "search_deadline"}
)
_PLACEHOLDERS: Final = frozenset({"study_uid", "patient_id", "orthanc_study_id"})


@dataclass(frozen=True, slots=True)
class WebConfig:
    """``[web]``: who may log in to the staff page and how it links to the local viewer."""

    users: Mapping[str, str] = field(default_factory=dict)
    """Operator name -> scrypt password hash."""
    session_secret: str = ""
    """Signs the session cookie; empty: a random secret per start (sessions end on restart)."""
    viewer_url: str = ""
    """Template of a link to the local PACS viewer (empty: no link)."""
    session_minutes: int = 480
    search_deadline: float = 30.0


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` (base64) of *password*."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    encode = base64.b64encode
    return (
        f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}$"
        f"{encode(salt).decode()}${encode(digest).decode()}"
    )


def verify_password(password: str, stored: str) -> bool:
    """True when *password* matches the *stored* hash (constant-time comparison)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = base64.b64decode(parts[4]), base64.b64decode(parts[5])
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=2**27
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def _check_hash(name: str, value: Any, where: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{where}: operator name {name[:70]!r} is not a plain user name")
    if not isinstance(value, str) or not value.startswith("scrypt$") or value.count("$") != 5:
        raise ConfigError(
            f"{where}: the password of {name} must be a scrypt hash "
            "(run `imagebridge web-user add NAME`), never the password itself"
        )
    return value


def _users_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read web.users_file {path}: {exc.strerror}") from exc
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"web.users_file line {number}: expected NAME = HASH")
        name = name.strip()
        users[name] = _check_hash(name, value.strip().strip('"'), f"web.users_file:{number}")
    return users


def web_config(
    table: Any, environ: Mapping[str, str], *, base_dir: Path | None = None
) -> WebConfig:
    """Parse the ``[web]`` table (the session secret may come from the environment)."""
    if not isinstance(table, Mapping):
        raise ConfigError("[web] must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) in [web]: {', '.join(sorted(unknown))}")
    raw_users = table.get("users", {})
    if not isinstance(raw_users, Mapping):
        raise ConfigError("web.users must be a table of name = scrypt hash")
    users = {str(k): _check_hash(str(k), v, "web.users") for k, v in raw_users.items()}
    if table.get("users_file"):
        path = Path(str(table["users_file"]))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        users.update(_users_file(path))
    viewer = str(table.get("viewer_url", ""))
    for name in re.findall(r"{([^{}]*)}", viewer):
        if name not in _PLACEHOLDERS:
            raise ConfigError(
                f"web.viewer_url: unknown placeholder {{{name}}} "
                f"(use {', '.join('{' + p + '}' for p in sorted(_PLACEHOLDERS))})"
            )
    try:
        minutes = int(table.get("session_minutes", 480))
        deadline = float(table.get("search_deadline", 30.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError("web.session_minutes and web.search_deadline must be numbers") from exc
    if not 1 <= minutes <= 7 * 24 * 60 or not 1 <= deadline <= 600:
        raise ConfigError("web.session_minutes must be 1..10080 and search_deadline 1..600")
    secret = str(environ.get(SECRET_ENV) or table.get("session_secret", ""))
    if secret and len(secret) < 16:
        raise ConfigError("web.session_secret must be at least 16 characters")
    return WebConfig(users, secret, viewer, minutes, deadline)
