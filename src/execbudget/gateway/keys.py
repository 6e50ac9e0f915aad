"""
API keys of the gateway: stored hashed, compared in constant time, each bound to a tenant.

Keys are minted by the gateway (``new_key()``: 256 random bits) and only their SHA-256
digest is written to the keys file, so a leaked keys file or backup gives nobody a usable
key. SHA-256 rather than a slow KDF (scrypt, argon2) is deliberate: slow hashes protect
*low-entropy* secrets (passwords a person chose) against offline guessing; a 256-bit random
key cannot be guessed whatever the hash, and a KDF costing 50 ms per request would be the
whole latency budget of the gateway (or need a cache of verified keys, which is a table of
plaintext-equivalents in memory). The presented key is hashed, the digest looked up, and
the stored digest compared again with ``hmac.compare_digest``: the lookup is keyed by a
digest an attacker cannot steer, and the comparison takes the same time wherever two
digests differ.

The keys file (YAML)::

    admin:                      # admin API keys (a separate set; they cannot make model calls)
      - name: ops
        hash: sha256:9f86d0…
    keys:
      - id: search-bot          # public: logs, metrics and the key scope (key:search-bot)
        hash: sha256:2c26b4…
        org: acme               # the tenant: scope org:acme
        team: search            # scope team:acme/search (optional)
        models: ["gpt-4o-mini", "claude-*"]   # allow-list, shell patterns (optional: all)
        revoked: false

A key's scope chain is fixed here, server side: a client can name a workflow and a run in
headers, but those scopes are always inside its own organisation (``run:acme/…``), so it can
neither read nor spend another tenant's budget.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigurationError

__all__ = [
    "AdminKey",
    "KeyRecord",
    "KeyStore",
    "hash_key",
    "new_key",
]

_PREFIX = "sha256:"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: ids, org and team names end up in ledger scope names: keep them plain and unambiguous
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: the shortest key we accept when an operator brings their own (bits of entropy aside)
MIN_KEY_LENGTH = 24


def new_key(prefix: str = "ebk") -> str:
    """A fresh API key: ``ebk-`` and 43 URL-safe characters (256 random bits)."""
    return f"{prefix}-{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    """The digest stored in the keys file: ``sha256:<hex>`` of the UTF-8 key."""
    return _PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A client key: who it belongs to and what it may call. Never holds the key itself."""

    id: str
    """Public name of the key; its ledger scope is ``key:<id>``."""
    digest: str
    """``sha256:<hex>`` of the key."""
    org: str
    """The tenant; every scope this key touches is inside ``org:<org>``."""
    team: str | None = None
    """Optional team inside the org: scope ``team:<org>/<team>``."""
    models: tuple[str, ...] | None = None
    """Allowed models (shell patterns); ``None`` allows every priced model."""
    revoked: bool = False
    """A revoked key is refused like an unknown one (401), with its own log reason."""

    def allows(self, model: str) -> bool:
        if self.models is None:
            return True
        name = model.strip().lower()
        return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.models)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The fixed part of this key's chain, outermost first."""
        org = f"org:{self.org}"
        team = (f"team:{self.org}/{self.team}",) if self.team else ()
        return (org, *team, f"key:{self.id}")


@dataclass(frozen=True, slots=True)
class AdminKey:
    """An admin API key: reads usage, sets limits, kills scopes, releases holds."""

    name: str
    digest: str


class KeyStore:
    """
    Client and admin keys, looked up by digest.

    Build it from a keys file (``KeyStore.load(path)``), from a mapping of the same shape
    (``KeyStore.from_dict``), or in code from records.
    """

    def __init__(self, keys: Iterable[KeyRecord] = (), admins: Iterable[AdminKey] = ()) -> None:
        self._keys: dict[str, KeyRecord] = {}
        self._by_id: dict[str, KeyRecord] = {}
        self._admins: dict[str, AdminKey] = {}
        for record in keys:
            if record.digest in self._keys or record.digest in self._admins:
                raise ConfigurationError(f"key {record.id!r}: the same key is listed twice")
            if record.id in self._by_id:
                raise ConfigurationError(f"key id {record.id!r} is listed twice; ids are unique")
            self._keys[record.digest] = record
            self._by_id[record.id] = record
        for admin in admins:
            if admin.digest in self._keys or admin.digest in self._admins:
                raise ConfigurationError(
                    f"admin key {admin.name!r} is also listed elsewhere; an admin key must not "
                    "be a client key"
                )
            self._admins[admin.digest] = admin

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> KeyStore:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read keys file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            detail = str(exc).replace("\n", " ")
            raise ConfigurationError(f"keys file {path} is not valid YAML: {detail}") from None
        return cls.from_dict(data or {}, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<keys>") -> KeyStore:
        """Parse the keys-file shape; every problem is reported at once, with its path."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{source}: the top level must be a mapping")
        problems: list[str] = []
        unknown = set(data) - {"keys", "admin"}
        if unknown:
            problems.append(f"unknown top-level keys {sorted(unknown)}; allowed: keys, admin")
        keys = [
            record
            for i, raw in enumerate(_list(data.get("keys"), "keys", problems))
            if (record := _key_record(raw, f"keys[{i}]", problems)) is not None
        ]
        admins = [
            admin
            for i, raw in enumerate(_list(data.get("admin"), "admin", problems))
            if (admin := _admin_key(raw, f"admin[{i}]", problems)) is not None
        ]
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise ConfigurationError(f"invalid keys file {source}:\n{lines}")
        return cls(keys, admins)

    # -- lookups -------------------------------------------------------------------------
    def client(self, presented: str) -> KeyRecord | None:
        """The record of a presented client key (revoked ones too), or None."""
        digest = hash_key(presented)
        record = self._keys.get(digest)
        if record is None or not hmac.compare_digest(record.digest, digest):
            return None
        return record

    def admin(self, presented: str) -> AdminKey | None:
        digest = hash_key(presented)
        admin = self._admins.get(digest)
        if admin is None or not hmac.compare_digest(admin.digest, digest):
            return None
        return admin

    def by_id(self, key_id: str) -> KeyRecord | None:
        return self._by_id.get(key_id)

    @property
    def records(self) -> list[KeyRecord]:
        return list(self._by_id.values())

    @property
    def has_admins(self) -> bool:
        return bool(self._admins)

    def __len__(self) -> int:
        return len(self._keys)


# -- parsing helpers --------------------------------------------------------------------
def _list(value: Any, path: str, problems: list[str]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{path}: expected a list, found {type(value).__name__}")
        return []
    return value


def _digest(raw: Mapping[str, Any], path: str, problems: list[str]) -> str | None:
    digest = raw.get("hash")
    if isinstance(digest, str) and _DIGEST.match(digest.strip().lower()):
        return digest.strip().lower()
    if "key" in raw:
        problems.append(
            f"{path}.key: plaintext keys are not accepted in the keys file; store "
            "hash: sha256:<hex> (execbudget gateway-key hash KEY prints it)"
        )
    else:
        problems.append(f"{path}.hash: expected 'sha256:' and 64 hex digits, found {digest!r}")
    return None


def _name(raw: Mapping[str, Any], field: str, path: str, problems: list[str]) -> str | None:
    value = raw.get(field)
    if isinstance(value, str) and _NAME.match(value):
        return value
    problems.append(
        f"{path}.{field}: {value!r} must be 1–64 letters, digits, '.', '_' or '-' "
        "(it becomes part of a ledger scope name)"
    )
    return None


def _key_record(raw: Any, path: str, problems: list[str]) -> KeyRecord | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected a mapping with id, hash and org")
        return None
    unknown = set(raw) - {"id", "hash", "org", "team", "models", "revoked", "key"}
    if unknown:
        problems.append(
            f"{path}: unknown fields {sorted(unknown)}; allowed: id, hash, org, team, "
            "models, revoked"
        )
    key_id = _name(raw, "id", path, problems)
    org = _name(raw, "org", path, problems)
    team = _name(raw, "team", path, problems) if raw.get("team") is not None else None
    digest = _digest(raw, path, problems)
    models = raw.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)
    ):
        problems.append(f"{path}.models: expected a list of model names or patterns")
        models = None
    revoked = raw.get("revoked", False)
    if not isinstance(revoked, bool):
        problems.append(f"{path}.revoked: expected true or false, found {revoked!r}")
    if key_id is None or org is None or digest is None:
        return None
    return KeyRecord(
        key_id,
        digest,
        org,
        team,
        tuple(models) if models is not None else None,
        revoked is True,
    )


def _admin_key(raw: Any, path: str, problems: list[str]) -> AdminKey | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: expected a mapping with name and hash")
        return None
    unknown = set(raw) - {"name", "hash", "key"}
    if unknown:
        problems.append(f"{path}: unknown fields {sorted(unknown)}; allowed: name, hash")
    name = _name(raw, "name", path, problems)
    digest = _digest(raw, path, problems)
    if name is None or digest is None:
        return None
    return AdminKey(name, digest)
