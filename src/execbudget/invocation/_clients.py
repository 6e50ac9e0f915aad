"""
The wrapped clients: the guarded methods, and everything else passed through.

Guarded (held before the call, settled after):

* OpenAI / AsyncOpenAI: ``chat.completions.create`` (incl. ``stream=True``),
  ``responses.create`` (incl. ``stream=True``), ``embeddings.create``;
* Anthropic / AsyncAnthropic: ``messages.create`` (incl. ``stream=True``) and the
  ``messages.stream(...)`` context manager.

Every other attribute is the original client's, unchanged and **not budgeted** (the
docs list them). Guarded calls go through a copy of the client made with
``max_retries=0``: the SDK's own retries would re-send a request under a hold that has
already been settled, so retries are made here instead, each one charged and held anew.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..api import get_enforcer
from ..scopes import CURRENT
from ._apis import CHAT, EMBEDDINGS, MESSAGES, RESPONSES, Api, given
from ._drive import adrive, drive
from ._procedure import Call, Settings, Started
from ._settle import StreamMeter
from ._streams import AsyncBudgetedStream, BudgetedStream

if TYPE_CHECKING:
    from ..enforcer import Enforcer, Hold


def _hide_usage(api: Api, kwargs: Mapping[str, Any]) -> bool:
    """The caller did not ask for the chat usage chunk: it is the wrapper's, hide it."""
    if api is not CHAT:
        return False
    options = kwargs.get("stream_options")
    return not (isinstance(options, Mapping) and options.get("include_usage"))


def _call(
    settings: Settings, api: Api, kwargs: Mapping[str, Any], stream: bool, raw: bool = False
) -> Call:
    enforcer = settings.enforcer or get_enforcer()
    return Call(api, kwargs, stream, enforcer, CURRENT.get(), settings, raw)


def _meter(call: Call, started: Started) -> StreamMeter:
    admitted = started.admitted
    return StreamMeter.begin(
        call.api,
        admitted.plan,
        admitted.price,
        call.settings.counter,
        hide_usage=_hide_usage(call.api, call.kwargs),
    )


def _guard_args(call: Call, started: Started) -> tuple[StreamMeter, Hold, Enforcer, float]:
    admitted = started.admitted
    return _meter(call, started), admitted.hold, call.enforcer, admitted.ttl_s


def invoke(
    settings: Settings, api: Api, kwargs: dict[str, Any], target: Any, raw: bool = False
) -> Any:
    """One guarded sync call of ``target(**kwargs)``."""
    stream = bool(kwargs.get("stream")) and given(kwargs.get("stream"))
    call = _call(settings, api, kwargs, stream, raw)
    result = drive(call, lambda kw: target(**kw))
    if isinstance(result, Started):
        guard: Any = BudgetedStream(result.stream, *_guard_args(call, result))
        return (
            guard if result.raw_response is None else RawStreamResponse(result.raw_response, guard)
        )
    return result


async def ainvoke(
    settings: Settings, api: Api, kwargs: dict[str, Any], target: Any, raw: bool = False
) -> Any:
    """One guarded async call of ``await target(**kwargs)``."""
    stream = bool(kwargs.get("stream")) and given(kwargs.get("stream"))
    call = _call(settings, api, kwargs, stream, raw)

    async def send(kw: dict[str, Any]) -> Any:
        return await target(**kw)

    result = await adrive(call, send)
    if isinstance(result, Started):
        guard: Any = AsyncBudgetedStream(result.stream, *_guard_args(call, result))
        if result.raw_response is None:
            return guard
        if inspect.iscoroutinefunction(result.raw_response.parse):
            return AsyncRawStreamResponse(result.raw_response, guard)
        return RawStreamResponse(result.raw_response, guard)
    return result


class RawStreamResponse:
    """A ``with_raw_response`` stream: the SDK's raw response, whose ``parse()`` is metered."""

    def __init__(self, raw: Any, guard: Any) -> None:
        self._raw = raw
        self._guard = guard

    def parse(self, **_: Any) -> Any:
        return self._guard

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._raw, name)


class AsyncRawStreamResponse(RawStreamResponse):
    """The same, for SDKs whose raw ``parse()`` is a coroutine (anthropic's async client)."""

    async def parse(self, **_: Any) -> Any:
        return self._guard


def _walk(client: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        client = getattr(client, name)
    return client


class _Passthrough:
    """Attributes not guarded here come from the original client's resource."""

    __slots__ = ("_owner", "_path")

    def __init__(self, owner: _Wrapped, path: tuple[str, ...]) -> None:
        self._owner = owner
        self._path = path

    def _original(self) -> Any:
        return _walk(self._owner._client, self._path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._original(), name)


class _Create(_Passthrough):
    """A resource whose ``create`` is guarded (also through ``with_raw_response``)."""

    __slots__ = ("_api", "_raw_view")

    def __init__(
        self, owner: _Wrapped, path: tuple[str, ...], api: Api, raw_view: bool = False
    ) -> None:
        super().__init__(owner, path)
        self._api = api
        self._raw_view = raw_view

    def _original(self) -> Any:
        resource = super()._original()
        return resource.with_raw_response if self._raw_view else resource

    def _target(self) -> Any:
        """The SDK method a guarded call sends through: on the no-retry client copy."""
        resource = _walk(self._owner._raw, self._path)
        return resource.with_raw_response.create if self._raw_view else resource.create

    @property
    def with_raw_response(self) -> _Create:
        """``create`` returns the SDK's raw response (headers, ``parse()``), still budgeted."""
        return type(self)(self._owner, self._path, self._api, raw_view=True)

    def create(self, **kwargs: Any) -> Any:
        owner = self._owner
        return invoke(owner._settings, self._api, kwargs, self._target(), self._raw_view)


class _AsyncCreate(_Create):
    __slots__ = ()

    async def create(self, **kwargs: Any) -> Any:
        owner = self._owner
        return await ainvoke(owner._settings, self._api, kwargs, self._target(), self._raw_view)


class _Wrapped:
    """Shared by the four wrapped clients: the original, the no-retry copy, the settings."""

    def __init__(self, client: Any, settings: Settings) -> None:
        self._client = client
        self._raw = client.with_options(max_retries=0)
        self._settings = settings

    @property
    def unwrapped(self) -> Any:
        """The original client (its calls are not budgeted)."""
        return self._client

    @property
    def settings(self) -> Settings:
        return self._settings

    def with_options(self, **options: Any) -> Any:
        """The SDK's ``with_options``, still wrapped; ``max_retries`` sets our retries."""
        settings = self._settings
        if "max_retries" in options:
            settings = dataclasses.replace(settings, retries=int(options["max_retries"]))
        return type(self)(self._client.with_options(**options), settings)

    copy = with_options

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_client", "_raw", "_settings"):
            raise AttributeError(name)
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<execbudget.wrap({type(self._client).__name__})>"


class _RawRoot:
    """``client.with_raw_response``: the guarded resources' raw views, the rest passed on."""

    __slots__ = ("_guarded", "_owner")

    def __init__(self, owner: _Wrapped, guarded: dict[str, Any]) -> None:
        self._owner = owner
        self._guarded = guarded

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        found = self._guarded.get(name)
        return found if found is not None else getattr(self._owner._client.with_raw_response, name)


# -- OpenAI ------------------------------------------------------------------------------
class _Chat(_Passthrough):
    __slots__ = ("completions",)

    def __init__(self, owner: _Wrapped, completions: _Create) -> None:
        super().__init__(owner, ("chat",))
        self.completions = completions


class _SyncClose(_Wrapped):
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AsyncClose(_Wrapped):
    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _OpenAIResources:
    chat: _Chat
    responses: _Create
    embeddings: _Create

    @property
    def with_raw_response(self) -> _RawRoot:
        """The SDK's raw-response view, with the same calls budgeted."""
        owner: Any = self
        return _RawRoot(
            owner,
            {
                "chat": _Chat(owner, self.chat.completions.with_raw_response),
                "responses": self.responses.with_raw_response,
                "embeddings": self.embeddings.with_raw_response,
            },
        )


class BudgetedOpenAI(_OpenAIResources, _SyncClose):
    """``openai.OpenAI`` with chat completions, responses and embeddings budgeted."""

    def __init__(self, client: Any, settings: Settings) -> None:
        super().__init__(client, settings)
        self.chat = _Chat(self, _Create(self, ("chat", "completions"), CHAT))
        self.responses = _Create(self, ("responses",), RESPONSES)
        self.embeddings = _Create(self, ("embeddings",), EMBEDDINGS)


class AsyncBudgetedOpenAI(_OpenAIResources, _AsyncClose):
    """``openai.AsyncOpenAI`` with chat completions, responses and embeddings budgeted."""

    def __init__(self, client: Any, settings: Settings) -> None:
        super().__init__(client, settings)
        self.chat = _Chat(self, _AsyncCreate(self, ("chat", "completions"), CHAT))
        self.responses = _AsyncCreate(self, ("responses",), RESPONSES)
        self.embeddings = _AsyncCreate(self, ("embeddings",), EMBEDDINGS)


# -- Anthropic ---------------------------------------------------------------------------
class _Messages(_Create):
    __slots__ = ()

    def stream(self, **kwargs: Any) -> MessageStreamManager:
        """``messages.stream(...)``: the SDK's helper over a metered raw stream."""
        return MessageStreamManager(self._owner, kwargs)


class _AsyncMessages(_AsyncCreate):
    __slots__ = ()

    def stream(self, **kwargs: Any) -> AsyncMessageStreamManager:
        return AsyncMessageStreamManager(self._owner, kwargs)


_NO_RAW_STREAM = (
    "this anthropic SDK's MessageStream has no _raw_stream to meter; use "
    "messages.create(stream=True) with execbudget.wrap"
)


def _raw_stream(message_stream: Any) -> Any:
    """The raw event stream the SDK's MessageStream reads (None if the SDK changed).

    ``MessageStream`` reads ``self._raw_stream`` lazily, on the first event, so replacing
    it before any event is read meters everything the helper (text_stream, until_done,
    get_final_message) consumes.
    """
    return getattr(message_stream, "_raw_stream", None)


class MessageStreamManager:
    """``with client.messages.stream(...) as stream:`` — held on enter, settled on exit."""

    def __init__(self, owner: _Wrapped, kwargs: dict[str, Any]) -> None:
        self._owner = owner
        self._kwargs = kwargs
        self._manager: Any = None
        self._guard: BudgetedStream[Any] | None = None

    def __enter__(self) -> Any:
        owner = self._owner
        call = _call(owner._settings, MESSAGES, self._kwargs, True)

        def send(kw: dict[str, Any]) -> Any:
            kw.pop("stream", None)
            manager = owner._raw.messages.stream(**kw)
            return manager, manager.__enter__()

        result = drive(call, send)
        assert isinstance(result, Started)
        self._manager, message_stream = result.stream
        raw = _raw_stream(message_stream)
        if raw is None:  # pragma: no cover - a future SDK; never leave the hold behind
            self._manager.__exit__(None, None, None)
            result.admitted.hold.commit(None)
            raise RuntimeError(_NO_RAW_STREAM)
        self._guard = BudgetedStream(raw, *_guard_args(call, result))
        message_stream._raw_stream = self._guard
        return message_stream

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._manager is not None:
                self._manager.__exit__(exc_type, exc, tb)
        finally:
            if self._guard is not None:
                self._guard.close()


class AsyncMessageStreamManager:
    """``async with client.messages.stream(...) as stream:`` (the async twin)."""

    def __init__(self, owner: _Wrapped, kwargs: dict[str, Any]) -> None:
        self._owner = owner
        self._kwargs = kwargs
        self._manager: Any = None
        self._guard: AsyncBudgetedStream[Any] | None = None

    async def __aenter__(self) -> Any:
        owner = self._owner
        call = _call(owner._settings, MESSAGES, self._kwargs, True)

        async def send(kw: dict[str, Any]) -> Any:
            kw.pop("stream", None)
            manager = owner._raw.messages.stream(**kw)
            return manager, await manager.__aenter__()

        result = await adrive(call, send)
        assert isinstance(result, Started)
        self._manager, message_stream = result.stream
        raw = _raw_stream(message_stream)
        if raw is None:  # pragma: no cover - a future SDK; never leave the hold behind
            await self._manager.__aexit__(None, None, None)
            await result.admitted.hold.acommit(None)
            raise RuntimeError(_NO_RAW_STREAM)
        self._guard = AsyncBudgetedStream(raw, *_guard_args(call, result))
        message_stream._raw_stream = self._guard
        return message_stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._manager is not None:
                await self._manager.__aexit__(exc_type, exc, tb)
        finally:
            if self._guard is not None:
                await self._guard.close()


class _AnthropicResources:
    messages: _Create

    @property
    def with_raw_response(self) -> _RawRoot:
        """The SDK's raw-response view, with ``messages.create`` budgeted."""
        owner: Any = self
        return _RawRoot(owner, {"messages": self.messages.with_raw_response})


class BudgetedAnthropic(_AnthropicResources, _SyncClose):
    """``anthropic.Anthropic`` with messages (create and stream) budgeted."""

    def __init__(self, client: Any, settings: Settings) -> None:
        super().__init__(client, settings)
        self.messages = _Messages(self, ("messages",), MESSAGES)


class AsyncBudgetedAnthropic(_AnthropicResources, _AsyncClose):
    """``anthropic.AsyncAnthropic`` with messages (create and stream) budgeted."""

    def __init__(self, client: Any, settings: Settings) -> None:
        super().__init__(client, settings)
        self.messages = _AsyncMessages(self, ("messages",), MESSAGES)
