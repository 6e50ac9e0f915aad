"""
The pure half of the Redis backend: URL options, key names, FCALL arguments and the
parsing of replies, shared by the async source and its generated sync twin.

Nothing here does I/O, so the two classes differ only by ``await`` and the unasync
script can produce one from the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, cast, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError
from ._types import (
    TOMBSTONE_RETENTION_MS,
    Denial,
    Event,
    HoldRecord,
    HoldState,
    LineKey,
    LineRequest,
    LineState,
    OnExpiry,
    ReserveOutcome,
    ReserveStatus,
    SettleMode,
    SettleOutcome,
    SettleStatus,
)

DEFAULT_PREFIX: Final = "eb:"
#: Options execbudget reads from the URL query; every other one must be redis-py's.
OWN_OPTIONS: Final = ("prefix", "wait_aof", "window_grace_s", "retries")
DRIVER_OPTIONS: Final = (
    "db",
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "max_connections",
    "health_check_interval",
    "ssl_check_hostname",
    "ssl_min_version",
    "protocol",
    "timeout",
)
DEFAULT_SOCKET_TIMEOUT_S: Final = 5.0
#: Connections per pool; more concurrent callers wait for one (a blocking pool).
DEFAULT_MAX_CONNECTIONS: Final = 64
DEFAULT_RETRIES: Final = 3
#: WAITAOF appeared in Redis 7.2.
WAITAOF_MIN_VERSION: Final = (7, 2)
WAITAOF_TIMEOUT_MS: Final = 1000

LIBRARY_TEMPLATE: Final = (
    resources.files("execbudget.ledger").joinpath("_lua/ledger.lua").read_text(encoding="utf-8")
)
#: Changes whenever the Lua changes, so old and new clients never replace each other's code.
LIBRARY_VERSION: Final = hashlib.sha1(LIBRARY_TEMPLATE.encode()).hexdigest()[:10]
LIBRARY_SOURCE: Final = LIBRARY_TEMPLATE.replace("@V@", LIBRARY_VERSION)


def function(op: str) -> str:
    """The FCALL name of one operation of this library version."""
    return f"eb{LIBRARY_VERSION}_{op}"


RESERVE: Final = function("reserve")
SETTLE: Final = function("settle")

#: A command as one RESP bytes object, or None without hiredis (the caller then packs
#: with redis-py's connection). hiredis packs str and int in C, so the hot calls skip
#: redis-py's per-argument encoder.
PACK: Callable[[tuple[str | int, ...]], bytes] | None
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis comes with the redis extra
    PACK = None
else:
    PACK = cast(Callable[[tuple[str | int, ...]], bytes], pack_command)


# -- URL --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RedisOptions:
    """What the URL asks of the ledger (the rest of the URL goes to redis-py)."""

    driver_url: str
    prefix: str = DEFAULT_PREFIX
    wait_aof: bool = False
    window_grace_s: int = 0
    retries: int = DEFAULT_RETRIES


def parse_url(url: str) -> RedisOptions:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"not a Redis URL: {url!r}; use redis:// or rediss://")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in OWN_OPTIONS}
    unknown = sorted({k for k, _ in query if k not in OWN_OPTIONS and k not in DRIVER_OPTIONS})
    if unknown:
        raise ConfigurationError(
            f"unknown Redis URL option(s) {unknown}; allowed: "
            f"{', '.join((*OWN_OPTIONS, *DRIVER_OPTIONS))}"
        )
    driver_query = urlencode([(k, v) for k, v in query if k in DRIVER_OPTIONS])
    driver_url = urlunsplit(parts._replace(query=driver_query))
    return RedisOptions(
        driver_url=driver_url,
        prefix=check_prefix(own.get("prefix", DEFAULT_PREFIX)),
        wait_aof=_flag(own.get("wait_aof", "0"), "wait_aof"),
        window_grace_s=_whole(own.get("window_grace_s", "0"), "window_grace_s"),
        retries=_whole(own.get("retries", str(DEFAULT_RETRIES)), "retries"),
    )


def check_prefix(prefix: str) -> str:
    if not prefix or "{" in prefix or "}" in prefix or len(prefix) > 100:
        raise ConfigurationError(
            f"Redis key prefix {prefix!r} must be 1–100 characters without braces "
            "(the ledger wraps it in a hash tag itself)"
        )
    return prefix


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"Redis URL option {name}={value!r} must be 0 or 1")


def _whole(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigurationError(f"Redis URL option {name}={value!r} must be a whole number ≥ 0")
    return number


def version_tuple(info: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])


# -- keys -------------------------------------------------------------------------------
def escape(part: str) -> str:
    """Per-character escape, so a key name splits back into scope, window and dimension."""
    return part.replace("%", "%25").replace("/", "%2F")


def unescape(part: str) -> str:
    return part.replace("%2F", "/").replace("%25", "%")


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


#: Line names each Keys object remembers (each way) before it starts over.
_CACHED_NAMES: Final = 4096


class Keys:
    """
    Key names of one ledger. Every key carries the hash tag ``{prefix}``, so a whole
    ledger lives in one cluster slot and every script touches one slot only.
    """

    def __init__(self, prefix: str) -> None:
        self.base = "{" + check_prefix(prefix) + "}"
        self.plen = str(len(self.base))
        self.expiry = self.base + "ex"
        self.events = self.base + "ev"
        self.seq = self.base + "seq"
        # Key names of the lines in use and their parses: a chain's four names are built
        # and parsed on every reserve and settle otherwise. Bounded by clearing.
        self._names: dict[LineKey, str] = {}
        self._keys: dict[str, LineKey] = {}

    @staticmethod
    def line_name(key: LineKey) -> str:
        return f"l:{escape(key.scope)}/{escape(key.window)}/{escape(key.dimension)}"

    def line(self, key: LineKey) -> str:
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _CACHED_NAMES:
                self._names.clear()
            name = self._names[key] = self.base + self.line_name(key)
        return name

    def hold(self, rid: str) -> str:
        return self.base + "h:" + rid

    def line_pattern(self, scope_prefix: str) -> str:
        return glob_escape(self.base + "l:" + escape(scope_prefix)) + "*"

    def hold_pattern(self) -> str:
        return glob_escape(self.base + "h:") + "*"

    def everything(self) -> str:
        return glob_escape(self.base) + "*"

    def parse_line(self, name: str) -> LineKey:
        """``l:<scope>/<window>/<dim>`` (or the full key name) → LineKey."""
        key = self._keys.get(name)
        if key is None:
            if len(self._keys) >= _CACHED_NAMES:
                self._keys.clear()
            short = name[len(self.base) :] if name.startswith(self.base) else name
            scope, window, dimension = short[2:].split("/")
            key = LineKey(unescape(scope), unescape(window), unescape(dimension))
            self._keys[name] = key
        return key


# -- arguments --------------------------------------------------------------------------
def now_arg(now_ms: int | None) -> str:
    """An explicit time for the script, or '' to use the server's TIME."""
    return "" if now_ms is None else str(now_ms)


def reserve_call(
    keys: Keys,
    rid: str,
    lines: Sequence[LineRequest],
    ttl_ms: int,
    now_ms: int | None,
    on_expiry: OnExpiry,
    charge_now: bool,
    window_grace_s: int,
) -> tuple[str | int, ...]:
    """
    ``FCALL reserve`` with numkeys, KEYS and ARGV, validated so the script never sees
    junk. Numbers stay ints: the packer writes them as decimal strings.
    """
    n = len(lines)
    if not n:
        raise ConfigurationError("a reserve needs at least one line")
    if ttl_ms < 1:
        raise ConfigurationError(f"hold ttl must be at least 1 ms, got {ttl_ms}")
    line = keys.line
    names = [line(req[0]) for req in lines]
    numbers: list[int] = []
    for _, limit, amount, window_end_ms in lines:
        numbers += (limit, amount, window_end_ms or 0)
    return (
        "FCALL",
        RESERVE,
        n + 1,
        keys.base + "h:" + rid,
        *names,
        keys.plen,
        rid,
        ttl_ms,
        "" if now_ms is None else now_ms,
        OnExpiry(on_expiry).value,
        1 if charge_now else 0,
        window_grace_s * 1000,
        n,
        *numbers,
    )


def settle_call(
    keys: Keys,
    rid: str,
    mode: SettleMode,
    actual: Mapping[str, int] | None,
    now_ms: int | None,
) -> tuple[str | int, ...]:
    """``FCALL settle`` with numkeys, KEYS and ARGV."""
    call: tuple[str | int, ...] = (
        "FCALL",
        SETTLE,
        1,
        keys.base + "h:" + rid,
        keys.plen,
        rid,
        SettleMode(mode).value,
        "" if now_ms is None else now_ms,
        TOMBSTONE_RETENTION_MS,
    )
    if mode is SettleMode.COMMIT and actual:
        for dim, value in actual.items():
            call += (escape(dim), value)
    return call


# -- replies ----------------------------------------------------------------------------
class ReplyBooks(Sequence[LineState]):
    """
    The lines' books a granted reserve's reply carries (limit, spent, held, overrun per
    line, as the reserve left them), parsed on first use: most callers never look, and
    the gateway looks while the provider works.
    """

    __slots__ = ("_lines", "_parsed", "_reply")

    def __init__(self, lines: Sequence[LineRequest], reply: Sequence[Any]) -> None:
        self._lines = lines
        self._reply = reply
        self._parsed: tuple[LineState, ...] | None = None

    def _states(self) -> tuple[LineState, ...]:
        parsed = self._parsed
        if parsed is None:
            reply = self._reply
            parsed = self._parsed = tuple(
                [
                    LineState(
                        req.key,
                        int(reply[i]),
                        int(reply[i + 1]),
                        int(reply[i + 2]),
                        int(reply[i + 3]),
                    )
                    for req, i in zip(self._lines, range(2, len(reply), 4), strict=True)
                ]
            )
        return parsed

    @overload
    def __getitem__(self, index: int) -> LineState: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[LineState, ...]: ...
    def __getitem__(self, index: int | slice) -> LineState | tuple[LineState, ...]:
        return self._states()[index]

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[LineState]:
        return iter(self._states())

    def __repr__(self) -> str:
        return f"ReplyBooks({list(self._states())!r})"


def reserve_outcome(reply: Sequence[Any], lines: Sequence[LineRequest]) -> ReserveOutcome:
    code = int(reply[0])
    if code == 1:
        return ReserveOutcome(ReserveStatus.OK, int(reply[1]), books=ReplyBooks(lines, reply))
    if code == 2:
        return ReserveOutcome(ReserveStatus.DUP, int(reply[1]))
    if code == 3:
        return ReserveOutcome(ReserveStatus.SETTLED, int(reply[1]))
    index = int(reply[1])
    req = lines[index]
    denial = Denial(
        index, req.key, int(reply[2]), int(reply[3]), int(reply[4]), req.amount, str(reply[5])
    )
    return ReserveOutcome(ReserveStatus.DENIED, denial=denial)


_SETTLE_STATUS: Final = {
    0: SettleStatus.UNKNOWN,
    1: SettleStatus.OK,
    2: SettleStatus.OVERRUN,
    3: SettleStatus.SETTLED,
}


def settle_outcome(keys: Keys, reply: Sequence[Any]) -> SettleOutcome:
    parse = keys.parse_line
    charged = {parse(reply[i]): int(reply[i + 1]) for i in range(1, len(reply), 2)}
    return SettleOutcome(_SETTLE_STATUS[reply[0]], charged)


def hold_record(keys: Keys, rid: str, fields: Mapping[str, str]) -> HoldRecord | None:
    if not fields:
        return None
    amounts: dict[LineKey, int] = {}
    charged: dict[LineKey, int] = {}
    for name, value in fields.items():
        if name.startswith("a:"):
            amounts[keys.parse_line(name[2:])] = int(value)
        elif name.startswith("c:"):
            charged[keys.parse_line(name[2:])] = int(value)
    settled = fields.get("se")
    return HoldRecord(
        rid,
        HoldState(fields["st"]),
        amounts,
        charged,
        int(fields["cr"]),
        int(fields["ex"]),
        OnExpiry(fields["oe"]),
        None if settled is None else int(settled),
    )


def event(keys: Keys, entry_id: str, fields: Mapping[str, str]) -> Event:
    amounts = {keys.parse_line(k): int(v) for k, v in fields.items() if not k.startswith("_")}
    return Event(
        int(entry_id.split("-")[0]), int(fields["_t"]), fields["_k"], fields["_r"], amounts
    )


def line_fields() -> tuple[str, ...]:
    """The HMGET fields ``line_state`` reads, in order."""
    return ("lim", "ov", "sp", "hd", "or", "bl")


def line_state_args(row: Sequence[str | None]) -> tuple[int, int, int, int, str | None]:
    lim, override, spent, held, overrun, blocked = row
    limit = override if override is not None else lim
    return int(limit or 0), int(spent or 0), int(held or 0), int(overrun or 0), blocked


def unavailable_hint(where: str) -> str:
    return (
        f"cannot reach Redis at {where}; check that redis-server is running and reachable "
        "from this host, and the URL's host, port, password and TLS (rediss://) settings"
    )
