"""
The upstream side: one pooled ``httpx2.AsyncClient`` per process, and failures named so the
invocation layer's ``classify`` reads them like the SDKs' own.

The client is httpx2 (the maintained fork of httpx that the OpenAI and Anthropic SDKs use),
not httpx: httpcore 1.0's connection pool rescans every pooled connection, and polls each
idle socket, several times per request (quadratic in the pool's size), which cost about
half of the gateway's CPU per request at 32 concurrent calls; httpcore2's pool makes one
linear pass per change, without the re-queueing churn. Whole (non-streamed) exchanges
skip httpx2 for ``pool.KeepAlivePool`` (keep-alive connections speaking HTTP/1.1 with
httptools' parser): less CPU and about 0.4 ms less added latency per call than httpx2's
or httpcore2's layers. Its 2xx answers come back as ``Answer`` (status, headers, the
bytes as sent), not as an ``httpx2.Response``, unless the body is content-encoded.
Streams, injected transports and proxied environments use the httpx2 client.

The gateway authenticates upstream with **its** key (``Authorization: Bearer`` for OpenAI,
``x-api-key`` for Anthropic). The client's credentials are never forwarded: only the
headers named in ``forward_headers`` are (API versions, betas, SDK telemetry), and the
answer's headers are filtered too, so the provider account's identifiers and rate-limit
state are not shown to tenants.

Failures are raised as ``APIStatusError`` (the provider answered an error: nothing billed),
``APIConnectionError`` / ``APITimeoutError`` chained to the httpx2 error (a ``ConnectError``
means nothing was sent; anything later is an unknown outcome, charged in full), and
``APIError`` (a 2xx whose body cannot be read: billed, not readable). The class names are
what ``execbudget.invocation._failures.classify`` looks for.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any, Final

import httpcore2
import httpx2

from .config import GatewayConfig, Upstream
from .pool import KeepAlivePool, PoolAnswer

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "Answer",
    "UpstreamPool",
    "UpstreamStream",
    "response_headers",
]

#: Upstream answer headers a tenant may see.
_PASS_BACK: Final = frozenset(
    {
        "content-type",
        "x-request-id",
        "request-id",
        "openai-processing-ms",
        "openai-version",
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
    }
)


class APIError(Exception):
    """A 2xx answer whose body could not be read (it was billed)."""

    def __init__(self, message: str, *, status_code: int = 502, body: bytes = b"") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class APIStatusError(APIError):
    """The provider answered an error status; its body and headers are passed back."""

    def __init__(self, response: httpx2.Response, body: bytes) -> None:
        super().__init__(f"upstream answered {response.status_code}", body=body)
        self.status_code = response.status_code
        self.response = response


class APIConnectionError(Exception):
    """The exchange with the provider failed (see ``__cause__``)."""


class APITimeoutError(APIConnectionError):
    """The provider did not answer in time."""


def response_headers(headers: httpx2.Headers | Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in _PASS_BACK}


class Answer:
    """
    A whole 2xx/3xx answer of the lean pool, not content-encoded: status, headers (names
    lower-cased, repeated ones joined with ", " as httpx2's ``items()`` does) and body.
    """

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @classmethod
    def of(cls, answer: PoolAnswer) -> Answer | None:
        """The answer as it came, or None if its body is encoded (httpx2 decodes it)."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in answer.headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name == "content-encoding" and value.strip().lower() not in ("", "identity"):
                return None
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return cls(answer.status, headers, answer.body)

    def json(self) -> Any:
        return json.loads(self.content)


class UpstreamStream:
    """An open streamed answer: status 200 and a byte iterator; ``aclose`` when done."""

    def __init__(self, response: httpx2.Response, started: float) -> None:
        self.response = response
        self.started = started
        self.headers = response_headers(response.headers)

    def aiter_bytes(self) -> Any:
        return self.response.aiter_bytes()

    async def aclose(self) -> None:
        await self.response.aclose()


class UpstreamPool:
    """The gateway's HTTP client for every upstream, with its keys and header rules."""

    def __init__(self, config: GatewayConfig, transport: httpx2.AsyncBaseTransport | None = None):
        self.upstreams: Mapping[str, Upstream] = config.upstreams
        self._forward = tuple(h.lower() for h in config.forward_headers)
        self._timeout = config.upstream_timeout_s
        limits = httpx2.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
            keepalive_expiry=30.0,
        )
        self.client = httpx2.AsyncClient(
            limits=limits,
            timeout=httpx2.Timeout(config.upstream_timeout_s, connect=10.0),
            transport=transport,
            follow_redirects=False,
        )
        # Whole exchanges take the lean keep-alive pool (``pool``), unless a transport is
        # injected (tests) or the environment names a proxy: httpx2 honours *_PROXY and
        # NO_PROXY, the lean pool does not, so then every call goes through httpx2.
        self._lean: KeepAlivePool | None = None
        self._targets: dict[str, tuple[tuple[bytes, bytes, int], bytes, bytes]] = {}
        if transport is None and not _proxied():
            tls = any(u.base_url.startswith("https:") for u in self.upstreams.values())
            self._lean = KeepAlivePool(
                config.max_connections, httpx2.create_ssl_context() if tls else None
            )

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._lean is not None:
            await self._lean.aclose()

    def has(self, provider: str) -> bool:
        return provider in self.upstreams

    def _headers(self, upstream: Upstream, incoming: Iterable[tuple[str, str]]) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        for name, value in incoming:
            lower = name.lower()
            if any(
                lower == rule or (rule.endswith("-") and lower.startswith(rule))
                for rule in self._forward
            ):
                headers[lower] = value
        key = upstream.api_key.reveal()
        if key:
            if upstream.name == "anthropic":
                headers["x-api-key"] = key
            else:
                headers["authorization"] = f"Bearer {key}"
        if upstream.name == "anthropic":
            headers.setdefault("anthropic-version", "2023-06-01")
        return headers

    def _request(
        self,
        provider: str,
        method: str,
        path: str,
        incoming: Iterable[tuple[str, str]],
        body: Mapping[str, Any] | None,
        timeout_s: float | None,
        stream: bool,
    ) -> httpx2.Request:
        upstream = self.upstreams[provider]
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        timeout = httpx2.Timeout(timeout_s or self._timeout, connect=10.0)
        headers = self._headers(upstream, incoming)
        if stream:
            headers["accept"] = "text/event-stream"
        return self.client.build_request(
            method,
            upstream.url(path),
            content=content,
            headers=headers,
            timeout=timeout,
        )

    async def send(
        self,
        provider: str,
        method: str,
        path: str,
        incoming: Iterable[tuple[str, str]],
        body: Mapping[str, Any] | bytes | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Answer | httpx2.Response:
        """
        A whole (non-streamed) exchange; an error status is raised as ``APIStatusError``.
        ``body`` is a JSON object, or its bytes as they are to be sent.
        """
        if self._lean is not None:
            return await self._send_lean(provider, method, path, incoming, body, timeout_s)
        data: Mapping[str, Any] | None = json.loads(body) if isinstance(body, bytes) else body
        request = self._request(provider, method, path, incoming, data, timeout_s, False)
        try:
            # httpx2 bounds each phase (pool wait, connect, each read) on its own, so a
            # trickling answer could outlive the hold's TTL: one deadline bounds the whole
            # exchange, as on the lean pool.
            async with asyncio.timeout(timeout_s or self._timeout):
                response = await self.client.send(request)
        except TimeoutError as exc:
            raise APITimeoutError(f"{provider} did not answer in time") from exc
        except httpx2.TimeoutException as exc:
            raise APITimeoutError(f"{provider} did not answer in time") from exc
        except httpx2.HTTPError as exc:
            raise APIConnectionError(f"cannot reach {provider}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise APIStatusError(response, response.content)
        return response

    async def _send_lean(
        self,
        provider: str,
        method: str,
        path: str,
        incoming: Iterable[tuple[str, str]],
        body: Mapping[str, Any] | bytes | None,
        timeout_s: float | None,
    ) -> Answer | httpx2.Response:
        assert self._lean is not None
        upstream = self.upstreams[provider]
        origin, host, target = self._target(upstream.url(path))
        if body is None:
            content = b""
        elif isinstance(body, bytes):
            content = body
        else:
            content = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = [(b"host", host)]
        if body is not None:
            headers.append((b"content-length", str(len(content)).encode()))
        # httpx2 adds these when the client sent none; so does this path
        fields = {"accept": "*/*", "user-agent": _USER_AGENT, **self._headers(upstream, incoming)}
        headers.extend((name.encode(), value.encode()) for name, value in fields.items())
        timeout = timeout_s or self._timeout
        try:
            answer = await self._lean.request(
                origin, method.encode(), target, headers, content, timeout_s=timeout
            )
        except httpcore2.TimeoutException as exc:
            raise APITimeoutError(f"{provider} did not answer in time") from exc
        except _TRANSPORT_ERRORS as exc:
            raise APIConnectionError(f"cannot reach {provider}: {type(exc).__name__}") from exc
        lean = Answer.of(answer)
        if lean is not None and answer.status < 400:
            return lean
        # An encoded body, or an error: built like httpx2's own answers (the body decoded
        # by its content-encoding). A body that does not decode was still answered, so
        # billed: charged in full.
        try:
            response = httpx2.Response(answer.status, headers=answer.headers, content=answer.body)
        except httpx2.HTTPError as exc:
            raise APIError(f"the {provider} answer could not be decoded ({exc})") from exc
        if response.status_code >= 400:
            response.request = httpx2.Request(method, upstream.url(path))
            raise APIStatusError(response, response.content)
        return response

    def _target(self, url: str) -> tuple[tuple[bytes, bytes, int], bytes, bytes]:
        """(scheme, host, port), the Host header and the request target of ``url``."""
        known = self._targets.get(url)
        if known is None:
            parsed = httpcore2.URL(url)
            default = {b"http": 80, b"https": 443}[parsed.scheme]
            port = parsed.port if parsed.port is not None else default
            known = ((parsed.scheme, parsed.host, port), _host(parsed), parsed.target)
            if len(self._targets) >= 1024:
                self._targets.clear()
            self._targets[url] = known
        return known

    async def open_stream(
        self,
        provider: str,
        path: str,
        incoming: Iterable[tuple[str, str]],
        body: Mapping[str, Any],
        *,
        timeout_s: float | None = None,
    ) -> UpstreamStream:
        """Send a streamed request and return once the answer's headers are in."""
        request = self._request(provider, "POST", path, incoming, body, timeout_s, True)
        started = time.perf_counter()
        try:
            response = await self.client.send(request, stream=True)
        except httpx2.TimeoutException as exc:
            raise APITimeoutError(f"{provider} did not answer in time") from exc
        except httpx2.HTTPError as exc:
            raise APIConnectionError(f"cannot reach {provider}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            try:
                body_bytes = await response.aread()
            except httpx2.HTTPError:
                body_bytes = b""
            finally:
                await response.aclose()
            raise APIStatusError(response, body_bytes)
        return UpstreamStream(response, started)


_USER_AGENT: Final = f"python-httpx2/{httpx2.__version__}"

#: httpcore2's failures other than timeouts (they share no base class).
_TRANSPORT_ERRORS: Final = (
    httpcore2.NetworkError,
    httpcore2.ProtocolError,
    httpcore2.ProxyError,
    httpcore2.UnsupportedProtocol,
    httpcore2.ConnectionNotAvailable,
)


def _host(url: httpcore2.URL) -> bytes:
    """The Host header of ``url``: the port only when it is not the scheme's default."""
    host = b"[" + url.host + b"]" if b":" in url.host else url.host  # an IPv6 literal
    default = {b"http": 80, b"https": 443}.get(url.scheme)
    if url.port is None or url.port == default:
        return host
    return host + b":" + str(url.port).encode()


def _proxied() -> bool:
    """Whether the environment names an HTTP proxy (as httpx2 would use it)."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())
