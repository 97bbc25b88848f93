"""Tier backends: what answers a query once :class:`~sona.engine.SONAEngine` has routed it.

A :class:`Backend` is anything callable as ``backend(prompt: str) -> str``. Provided:

- :class:`CallableBackend`: wraps any function ``str -> str``, optionally with a wall-clock timeout
  (the call runs on a worker thread; past the timeout the caller gets :class:`TimeoutError` and the
  worker's late answer is discarded).
- :class:`OpenAIChatBackend`: an OpenAI-compatible ``/v1/chat/completions`` endpoint — llama.cpp's
  server, vLLM, Ollama or a hosted API — through the official ``openai`` client (its timeouts and
  retries with backoff). Needs ``pip install "sona[llm]"`` (or ``openai``).

:func:`as_backend` turns a callable or backend into a backend and rejects anything else. The engine
wraps every backend failure in :class:`~sona.errors.BackendError`.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from sona.errors import ConfigError, InvalidInputError, MissingDependencyError

__all__ = ["Backend", "CallableBackend", "OpenAIChatBackend", "as_backend"]

Message = Mapping[str, str]


@runtime_checkable
class Backend(Protocol):
    """A model tier: takes the prompt, returns the answer text."""

    def __call__(self, prompt: str) -> str:
        """The answer to ``prompt``."""
        ...


class CallableBackend:
    """Any function ``str -> str`` as a backend.

    Args:
        fn: the function.
        name: shown in errors and ``repr`` (default: the function's name).
        timeout: seconds; ``None`` waits forever. With a timeout each call runs on a worker thread
            and raises :class:`TimeoutError` when it takes longer (a function that cannot be
            interrupted keeps running in the background; its result is dropped).
    """

    def __init__(
        self, fn: Callable[[str], str], *, name: str | None = None, timeout: float | None = None
    ) -> None:
        if not callable(fn):
            raise InvalidInputError(f"fn: expected a callable, got {type(fn).__name__}")
        if timeout is not None and not (timeout > 0 and timeout < float("inf")):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.timeout = timeout
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def __call__(self, prompt: str) -> str:
        """``fn(prompt)``, within the timeout if one is set."""
        if self.timeout is None:
            return self.fn(prompt)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix=f"sona-backend-{self.name}"
            )
        future = self._pool.submit(self.fn, prompt)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"backend {self.name!r} did not answer within {self.timeout} s"
            ) from None

    def __repr__(self) -> str:
        return f"CallableBackend({self.name!r}, timeout={self.timeout})"


class OpenAIChatBackend:
    """An OpenAI-compatible chat-completions endpoint as a backend.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8080/v1`` (llama.cpp ``llama-server``),
            ``http://localhost:11434/v1`` (Ollama), ``http://localhost:8000/v1`` (vLLM) or
            ``https://api.openai.com/v1``.
        model: the model name the server expects.
        api_key_env: environment variable holding the API key, read at construction. Local servers
            usually need none: when the variable is unset a placeholder key is sent.
        timeout: seconds per HTTP attempt.
        max_retries: extra attempts on connection errors, timeouts, 408/409/429 and 5xx answers
            (the client's exponential backoff).
        system_prompt: sent before the user's prompt when given.
        max_tokens, temperature: passed through when given.

    ``backend(prompt)`` sends one user message; :meth:`complete` sends a message list. Errors are
    the ``openai`` client's (``APITimeoutError``, ``APIStatusError``, ...); the engine wraps them
    in :class:`~sona.errors.BackendError`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        system_prompt: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        if not (timeout > 0 and timeout < float("inf")):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout}")
        if not 0 <= max_retries <= 20:
            raise ConfigError(f"max_retries must be in [0, 20], got {max_retries}")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(f"max_tokens must be ≥ 1, got {max_tokens}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        try:
            import openai
        except ImportError as exc:
            raise MissingDependencyError(
                'OpenAIChatBackend needs the `openai` package: pip install "sona[llm]"'
                " (or pip install openai)"
            ) from exc
        self.base_url = base_url
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "sk-no-key-required",
            timeout=timeout,
            max_retries=max_retries,
        )

    def complete(self, messages: Sequence[Message]) -> str:
        """The assistant's reply to a chat ``messages`` list (``{"role", "content"}`` dicts)."""
        extra: dict[str, Any] = {}
        if self.max_tokens is not None:
            extra["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        reply = self._client.chat.completions.create(
            model=self.model,
            # Plain role/content dicts; typed as the client's message union only when openai's
            # stubs are installed, so cast rather than an ignore that is unused without them.
            messages=cast(Any, [dict(m) for m in messages]),
            **extra,
        )
        if not reply.choices:
            raise ValueError(f"{self.base_url}: the reply has no choices")
        content = reply.choices[0].message.content
        if not isinstance(content, str):
            raise ValueError(f"{self.base_url}: the reply has no text content")
        return content

    def __call__(self, prompt: str) -> str:
        """The reply to one user message (after the system prompt, if any)."""
        messages: list[Message] = []
        if self.system_prompt is not None:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": prompt})
        return self.complete(messages)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __repr__(self) -> str:
        return f"OpenAIChatBackend({self.base_url!r}, model={self.model!r})"


def as_backend(obj: Any, name: str = "backend") -> Backend:
    """``obj`` as a :class:`Backend`: backends and plain callables are accepted as they are."""
    if isinstance(obj, Backend):
        return obj
    raise InvalidInputError(f"{name}: expected a callable str -> str, got {type(obj).__name__}")
