"""The product: :class:`SONAEngine`, configured by :class:`SONAConfig` (design §9).

>>> from sona.engine import SONAConfig, SONAEngine, LearningMode
>>> cfg = SONAConfig.builder().dim(64).learning_loops(LearningMode.INSTANT_AND_BACKGROUND).build()
>>> with SONAEngine(cfg, backends=[str.lower, str.upper, str.title, str.swapcase]) as engine:
...     answer = engine.query("Hello World")          # embed → route → call the tier's backend
...     engine.feedback(answer.trajectory_id, 1.0)    # reward in [0, 1] from the application

Per request the Rust engine adapts the query (micro-LoRA + base LoRA), recalls the closest memory
patterns, routes with its FastGRNN router to the tier of best ``predicted reward − cost_weight ×
cost`` (with logged exploration) and records a trajectory; ``feedback`` closes loop A at once and
feeds loop B, which runs on the engine's own background thread.

Every default lives in the Rust engine configuration: :class:`SONAConfig` reads them from
``sona._sona.engine_config_defaults()`` and validates through ``engine_config_validate``; nothing
is restated here.
"""

from __future__ import annotations

import atexit
import enum
import json
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sona import _sona
from sona._fsio import write_atomic
from sona._validate import as_matrix, as_vector
from sona.backends import Backend, as_backend
from sona.embed import Embedder, HashingEmbedder, check_embedding
from sona.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    InvalidInputError,
    SonaError,
    UnknownIdError,
)

__all__ = [
    "Decision",
    "DeepLearningResult",
    "LearningMode",
    "LearningResult",
    "Response",
    "SONAConfig",
    "SONAConfigBuilder",
    "SONAEngine",
]

#: What ``process`` returns: ``trajectory_id``, ``tier``, ``propensity``, ``utilities``,
#: ``predicted``, ``patterns`` (recalled pattern ids) and ``explored``.
Decision = _sona.Decision
#: What ``background_learn`` returns (elapsed time, replayed samples, losses, merges, ...).
LearningResult = _sona.LearningResult
#: What ``deep_learn`` returns (replayed/synthesized, accepted or rolled back with the probe's
#: scores, patterns merged/pruned, edges added/removed, Φ, elapsed time).
DeepLearningResult = _sona.DeepLearningResult

F32 = npt.NDArray[np.float32]

#: Reward sources ``feedback`` accepts (design §1: rewards only come from outside).
SOURCES: Final = ("explicit", "implicit", "judge", "error")

#: The Python layer's file in a saved engine directory (the Rust engine writes its own beside it).
_MANIFEST_FILE: Final = "sona.json"
_MANIFEST_FORMAT: Final = "sona-engine-dir/1"


class LearningMode(enum.StrEnum):
    """Which learning loops run (design §1). Values are the engine configuration's strings."""

    #: Loop A only: every ``feedback`` steps the micro-LoRA, arm statistics and graph edges.
    INSTANT_ONLY = "instant_only"
    #: Loops A and B (B on the engine's background thread, by trajectory count or time).
    INSTANT_AND_BACKGROUND = "instant_and_background"
    #: A, B and C: the background thread also runs loop C (the dream cycle of
    #: :meth:`SONAEngine.deep_learn`) after every ``deep_every_b`` loop-B cycles.
    ALL_THREE_TIERS = "all_three_tiers"


# --- configuration ---------------------------------------------------------------------------


@cache
def _defaults_json() -> str:
    return str(_sona.engine_config_defaults())


def _defaults() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_defaults_json())
    return value


def _plain(name: str, value: Any) -> Any:
    """A JSON-ready copy of a setting (enums → their string, numpy scalars → Python numbers)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(name, v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")
    return value


class SONAConfig:
    """Every setting of the engine, by keyword, validated on construction; immutable.

    ``SONAConfig()`` is the default configuration; ``SONAConfig(dim=768, cost_weight=0.01)``
    changes two settings. :meth:`fields` lists the names and :meth:`defaults` their defaults (read
    from the Rust engine, the only place they are written). Values are read as attributes
    (``cfg.dim``); :meth:`replace` returns a changed copy. An unknown name or a value out of range
    raises :class:`~sona.errors.ConfigError` naming it.

    The main settings: ``dim`` (embedding size), ``n_tiers``, ``tier_names``, ``tier_costs``,
    ``cost_weight`` (utility = predicted reward − cost_weight × cost), ``hidden`` / ``rank_w`` /
    ``rank_u`` (router size), ``k_recall`` (patterns the router reads), ``exploration``
    (``"epsilon"`` or ``"squarecb"``) with ``epsilon`` / ``gamma``, the micro- and base-LoRA ranks
    and step sizes, the loop-B triggers ``loop_b_every`` (feedbacks) and ``loop_b_interval_s``,
    ``learning_mode`` (a :class:`LearningMode`), ``seed`` and ``memory_budget_mb``.
    """

    __slots__ = ("_values",)
    _values: dict[str, Any]

    def __init__(self, **settings: Any) -> None:
        plain = {name: _plain(name, value) for name, value in settings.items()}
        try:
            text = json.dumps(plain, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"settings must be numbers, strings, booleans or lists: {exc}"
            ) from exc
        values = json.loads(_sona.engine_config_validate(text))
        object.__setattr__(self, "_values", values)

    @classmethod
    def fields(cls) -> list[str]:
        """The names of every setting."""
        return list(_defaults())

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting's default, as the Rust engine defines it."""
        return _defaults()

    @classmethod
    def builder(cls) -> SONAConfigBuilder:
        """A fluent builder: ``SONAConfig.builder().lora_rank(8).ewc_lambda(1000.0).build()``."""
        return SONAConfigBuilder()

    @classmethod
    def from_json(cls, text: str) -> SONAConfig:
        """The configuration a JSON object describes (missing settings take their defaults)."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise ConfigError(f"configuration JSON must be a str, got {type(text).__name__}")
        try:
            settings = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, deep nesting
            raise ConfigError(f"configuration JSON does not parse: {exc}") from exc
        if not isinstance(settings, dict):
            raise ConfigError("configuration JSON must be an object")
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        """Every setting (a copy)."""
        value: dict[str, Any] = json.loads(json.dumps(self._values))
        return value

    def to_json(self) -> str:
        """Every setting as a JSON object (what the Rust engine reads)."""
        return json.dumps(self._values, sort_keys=True)

    def replace(self, **changes: Any) -> SONAConfig:
        """A copy with ``changes`` applied (validated like the constructor)."""
        return SONAConfig(**{**self._values, **changes})

    @property
    def learning_mode(self) -> LearningMode:
        """Which loops run."""
        return LearningMode(self._values["learning_mode"])

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"SONAConfig has no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SONAConfig is immutable: use cfg.replace(name=value)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SONAConfig) and self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        defaults = _defaults()
        changed = {k: v for k, v in self._values.items() if defaults.get(k) != v}
        inner = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"SONAConfig({inner})"

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", SONAConfig(**state)._values)


#: Builder names from the overview that differ from the engine's field names.
_ALIASES: Final = {"lora_rank": "base_rank", "learning_loops": "learning_mode"}


class SONAConfigBuilder:
    """Collects settings one call at a time; :meth:`build` validates them all at once.

    Every setting of :meth:`SONAConfig.fields` is a method (``.dim(768)``, ``.cost_weight(0.01)``),
    plus the overview's names: ``lora_rank`` (the base LoRA's rank, ``base_rank``),
    ``learning_loops`` (``learning_mode``) and ``target_latency_us`` (accepted for compatibility;
    this version has no latency target to enforce, so it only warns).
    """

    def __init__(self) -> None:
        self._settings: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Callable[[Any], SONAConfigBuilder]:
        if name.startswith("_"):
            raise AttributeError(name)
        field = _ALIASES.get(name, name)
        if field not in _defaults():
            raise AttributeError(f"SONAConfig has no setting {name!r}")

        def set_value(value: Any) -> SONAConfigBuilder:
            self._settings[field] = value
            return self

        set_value.__name__ = name
        return set_value

    def target_latency_us(self, value: float) -> SONAConfigBuilder:
        """Accepted for the overview's example; not enforced (warns): process takes µs."""
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ConfigError(f"target_latency_us must be a positive number, got {value!r}")
        warnings.warn(
            "target_latency_us is not enforced by this version of SONA (ignored)",
            UserWarning,
            stacklevel=2,
        )
        return self

    def build(self) -> SONAConfig:
        """The validated configuration."""
        return SONAConfig(**self._settings)


# --- responses -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """What :meth:`SONAEngine.query` returns."""

    #: The backend's answer.
    text: str
    #: Pass it to :meth:`SONAEngine.feedback` with the reward the answer earned.
    trajectory_id: int
    #: Index of the tier that answered.
    tier: int
    #: Its name (``SONAConfig.tier_names``).
    tier_name: str
    #: Ids of the memory patterns the router read.
    patterns: tuple[int, ...]
    #: Wall time of the whole call (embedding, routing and the backend), in milliseconds.
    latency_ms: float
    #: Probability the policy gave this tier (for off-policy evaluation).
    propensity: float
    #: Whether the tier was chosen by exploration rather than as the best utility.
    explored: bool


# --- the engine ------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[SONAEngine] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _close_all_at_exit() -> None:
    """Stops every engine's background thread before the interpreter tears down."""
    with _LIVE_LOCK:
        engines = list(_LIVE)
    for engine in engines:
        try:
            engine.close()
        except Exception:  # at exit, closing the others matters more than this error
            pass


atexit.register(_close_all_at_exit)


def _tier_names(cfg: SONAConfig) -> list[str]:
    names = list(cfg.tier_names)
    return names if len(names) == cfg.n_tiers else [f"tier{k}" for k in range(cfg.n_tiers)]


def _backends_for(backends: Any, names: list[str]) -> list[Backend] | None:
    """One backend per tier from ``None``, a sequence in tier order, or a name → backend mapping."""
    if backends is None:
        return None
    if isinstance(backends, Mapping):
        unknown = sorted(set(backends) - set(names))
        missing = [n for n in names if n not in backends]
        if unknown or missing:
            raise ConfigError(f"backends: tiers are {names}; unknown {unknown}, missing {missing}")
        return [as_backend(backends[n], f"backend of tier {n!r}") for n in names]
    if callable(backends) or isinstance(backends, (str, bytes)):
        raise ConfigError("backends: expected one backend per tier (a list or a dict by tier name)")
    items = list(backends)
    if len(items) != len(names):
        raise ConfigError(
            f"backends: {len(names)} tiers need {len(names)} backends, got {len(items)}"
        )
    return [as_backend(b, f"backend of tier {names[k]!r}") for k, b in enumerate(items)]


def _embedder_manifest(embedder: Embedder) -> dict[str, Any] | None:
    if isinstance(embedder, HashingEmbedder):
        return {"kind": "hashing", "dim": embedder.dim, "seed": embedder.seed}
    return None


def _directory(path: object) -> Path:
    """``path`` (str, bytes or os.PathLike) as a Path; anything else, or a NUL byte (which no
    file system accepts), is an InvalidInputError rather than a TypeError/ValueError from
    ``pathlib``."""
    try:
        text = os.fsdecode(path)  # type: ignore[arg-type]
    except TypeError as exc:
        raise InvalidInputError(
            f"expected a path (str, bytes or os.PathLike), got {type(path).__name__}"
        ) from exc
    if "\0" in text:
        raise InvalidInputError(f"path {text!r:.80} contains a NUL byte")
    return Path(text)


class SONAEngine:
    """A self-improving router with memory: process queries, take feedback, learn (design §9).

    Args:
        config: a :class:`SONAConfig` (default: ``SONAConfig()``).
        embedder: turns text into the ``dim``-long vector :meth:`query` routes (default: the
            built-in :class:`~sona.embed.HashingEmbedder` with the config's ``dim`` and ``seed``).
        backends: one per tier, in tier order or as ``{tier_name: backend}``; each a callable
            ``str -> str`` (e.g. :class:`~sona.backends.OpenAIChatBackend`). Needed by
            :meth:`query` only.

    ``process`` / ``process_batch`` route vectors; ``query`` routes text and calls the chosen
    backend; ``feedback`` / ``feedback_batch`` report rewards in [0, 1]. Loop B runs on a background
    thread the engine owns (``background_learn`` runs one cycle now). ``close()`` — also at the end
    of a ``with`` block and at interpreter exit — stops it; any later call raises
    :class:`~sona.errors.SonaError`. Every method is safe to call from several threads.
    """

    def __init__(
        self,
        config: SONAConfig | None = None,
        *,
        embedder: Embedder | None = None,
        backends: Sequence[Callable[[str], str]] | Mapping[str, Callable[[str], str]] | None = None,
    ) -> None:
        if config is None:
            config = SONAConfig()
        if not isinstance(config, SONAConfig):
            raise ConfigError(f"config: expected a SONAConfig, got {type(config).__name__}")
        names = _tier_names(config)
        checked_backends = _backends_for(backends, names)
        checked_embedder = self._check_embedder(embedder, config)
        self._init(_sona.Engine(config.to_json()), checked_embedder, checked_backends)

    @staticmethod
    def _check_embedder(embedder: Embedder | None, config: SONAConfig) -> Embedder:
        if embedder is None:
            return HashingEmbedder(config.dim, seed=config.seed)
        if not callable(getattr(embedder, "embed", None)):
            raise ConfigError(
                f"embedder: expected an object with embed(text), got {type(embedder).__name__}"
            )
        dim = getattr(embedder, "dim", None)
        if dim is not None and dim != config.dim:
            raise ConfigError(f"embedder: its dim is {dim}, the engine's dim is {config.dim}")
        return embedder

    def _init(
        self, engine: _sona.Engine, embedder: Embedder, backends: list[Backend] | None
    ) -> None:
        self._engine = engine
        self.config = SONAConfig.from_json(engine.config_json)
        self.tier_names: list[str] = _tier_names(self.config)
        self.embedder = embedder
        self._backends = backends
        with _LIVE_LOCK:
            _LIVE.add(self)

    # -- properties --

    @property
    def dim(self) -> int:
        """Length of the vectors :meth:`process` takes."""
        return int(self._engine.dim)

    @property
    def n_tiers(self) -> int:
        """Number of tiers."""
        return int(self._engine.n_tiers)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return bool(self._engine.closed)

    @property
    def backends(self) -> list[Backend] | None:
        """The tier backends (``None`` when the engine routes vectors only)."""
        return None if self._backends is None else list(self._backends)

    def _check_open(self) -> None:
        if self._engine.closed:
            raise InvalidInputError("this SONAEngine is closed")

    # -- loop A --

    def process(self, vector: Any, tenant: str | None = None) -> Any:
        """Route one query vector: adapt, recall, choose a tier, record a trajectory.

        Returns a ``Decision`` (``trajectory_id``, ``tier``, ``propensity``, ``utilities``,
        ``predicted``, ``patterns``, ``explored``). ``vector`` has length ``dim`` (float64 and lists
        are converted); wrong length → :class:`~sona.errors.DimensionError`, NaN/Inf →
        :class:`~sona.errors.NonFiniteError`.

        With ``tenant`` (1–256 bytes, no control characters), the decision uses that tenant's own
        micro-LoRA over the shared base and router (created on first use; at most 256 tenants,
        least recently used evicted), and its ``feedback`` steps that micro-LoRA only: nothing
        shared learns from it, so other tenants' outputs do not move.
        """
        x = as_vector(vector, "vector", self.dim)
        if tenant is None:
            return self._engine.process(x)
        if not isinstance(tenant, str):
            raise InvalidInputError(f"tenant: expected a str, got {type(tenant).__name__}")
        return self._engine.process(x, tenant)

    @property
    def tenant_count(self) -> int:
        """Number of tenant micro-LoRAs the engine holds."""
        return int(self._engine.tenant_count)

    def tenant_adapter(self, tenant: str) -> tuple[Any, Any] | None:
        """A copy of ``tenant``'s micro-LoRA as ``(a, bt)`` (``rank × dim`` each), or None."""
        pair = self._engine.tenant_adapter(tenant)
        return None if pair is None else (pair[0], pair[1])

    def process_batch(self, vectors: Any) -> list[Any]:
        """``process`` for each row of an ``(n, dim)`` matrix; one ``Decision`` per row."""
        return list(self._engine.process_batch(as_matrix(vectors, "vectors", self.dim)))

    def feedback(self, trajectory_id: int, reward: float, source: str = "explicit") -> None:
        """Report the reward in [0, 1] a routed query earned (once per trajectory).

        ``source`` is ``"explicit"`` (a rating), ``"implicit"`` (retry, abandon...), ``"judge"``
        or ``"error"``. Unknown, expired or repeated ids raise :class:`~sona.errors.UnknownIdError`;
        a reward outside [0, 1] or NaN raises :class:`~sona.errors.InvalidInputError`.
        """
        self._engine.feedback(trajectory_id, reward, source)

    def feedback_batch(self, trajectory_ids: Any, rewards: Any, source: str = "explicit") -> None:
        """``feedback`` for many trajectories at once (all checked before any is applied)."""
        ids = _trajectory_ids(trajectory_ids)
        rs = as_vector(rewards, "rewards", ids.shape[0])
        self._engine.feedback_batch(ids, rs, source)

    def query(self, text: str) -> Response:
        """Embed ``text``, route it, call the chosen tier's backend and return its answer.

        A backend that raises or times out: the trajectory is recorded as failed (reward 0, source
        ``"error"``), the engine stays usable and :class:`~sona.errors.BackendError` is raised with
        the backend's exception as ``__cause__``. An embedder returning the wrong length or
        non-finite values raises :class:`~sona.errors.DimensionError` /
        :class:`~sona.errors.NonFiniteError` before anything is recorded.
        """
        started = time.perf_counter()
        self._check_open()
        if self._backends is None:
            raise ConfigError("query needs backends: SONAEngine(config, backends=[...])")
        if not isinstance(text, str):
            raise InvalidInputError(f"text: expected a str, got {type(text).__name__}")
        vector = check_embedding(
            self.embedder.embed(text), self.dim, f"{type(self.embedder).__name__} output"
        )
        if vector.ndim != 1:
            raise InvalidInputError(f"embedder returned shape {vector.shape} for one text")
        decision = self._engine.process(vector)
        tier = int(decision.tier)
        name = self.tier_names[tier]
        try:
            answer = self._backends[tier](text)
            if not isinstance(answer, str):
                raise TypeError(f"expected str, got {type(answer).__name__}")
        except Exception as exc:
            try:
                self._engine.feedback(decision.trajectory_id, 0.0, "error")
            except SonaError:
                pass  # the trajectory expired meanwhile; the error below is what matters
            raise BackendError(
                f"backend of tier {tier} ({name!r}) failed: {type(exc).__name__}: {exc}",
                trajectory_id=int(decision.trajectory_id),
                tier=tier,
            ) from exc
        return Response(
            text=answer,
            trajectory_id=int(decision.trajectory_id),
            tier=tier,
            tier_name=name,
            patterns=tuple(int(p) for p in decision.patterns),
            latency_ms=(time.perf_counter() - started) * 1e3,
            propensity=float(decision.propensity),
            explored=bool(decision.explored),
        )

    # -- loops B and C --

    def background_learn(self) -> LearningResult:
        """Run one loop-B cycle now (replay, Adam with EWC++, merge, pattern extraction...).

        Returns a :class:`LearningResult`. The background thread runs the same cycle on its
        triggers; ``process`` never waits for either.
        """
        return self._engine.background_learn()

    def deep_learn(self) -> DeepLearningResult:
        """Run one loop-C ("dream") cycle now (serialised with loop B, off the request path).

        Replays stored decisions by priority (|prediction error|) with the loop-B optimizer and the
        EWC++ penalty, distills pseudo-rehearsal queries sampled around the patterns toward the
        frozen pre-cycle router, and publishes the result only if a held-out probe of stored
        decisions does not regress (otherwise the served weights stay bit-identical); then merges,
        prunes and re-clusters the pattern memory, links patterns the dream recalled together
        where held-out retrieval does not regress ("creative" edges), and computes Φ. Returns the
        cycle's report (``accepted``, ``probe_before``/``probe_after``, ``replayed``,
        ``synthesized``, ``patterns_merged``/``patterns_pruned``, ``edges_before``/``edges_after``,
        ``creative_proposed``/``edges_added``/``edges_removed``, ``phi``, ``elapsed_ms`` ...) as a
        :class:`DeepLearningResult` (``to_dict()`` gives every field).
        Under ``LearningMode.ALL_THREE_TIERS`` the background thread also runs it after every
        ``deep_every_b`` loop-B cycles.
        """
        self._check_open()
        return self._engine.deep_learn()

    def improvement_metrics(self) -> dict[str, Any]:
        """Reward and regret per window of feedback, and how they changed (design §8)."""
        return dict(self._engine.improvement_metrics())

    def stats(self) -> dict[str, Any]:
        """Counters: trajectories, pending, patterns, loop-B cycles, memory in use, ..."""
        return dict(self._engine.stats())

    # -- persistence and lifetime --

    def save(self, path: str | Path) -> None:
        """Save every learned piece into the directory ``path`` (created if needed).

        The directory holds the engine's checkpoints (router, adapters, optimiser state, memory,
        EWC++ state, counters, metrics) and a small manifest naming the embedder (the built-in
        one is restored by :meth:`load`; another must be passed to :meth:`load` again).
        """
        self._check_open()
        directory = _directory(path)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"{directory} exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        self._engine.save(str(directory))
        manifest = {
            "format": _MANIFEST_FORMAT,
            "embedder": _embedder_manifest(self.embedder),
            "tier_names": self.tier_names,
        }
        write_atomic(directory / _MANIFEST_FILE, json.dumps(manifest, indent=1).encode())

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        embedder: Embedder | None = None,
        backends: Sequence[Callable[[str], str]] | Mapping[str, Callable[[str], str]] | None = None,
    ) -> SONAEngine:
        """An engine restored from a directory :meth:`save` wrote.

        Backends are code, not state: pass them again. A missing or corrupted file raises
        :class:`~sona.errors.CheckpointError`.
        """
        directory = _directory(path)
        manifest_path = directory / _MANIFEST_FILE
        try:
            if not manifest_path.is_file():  # reading a FIFO would block until a writer came
                raise OSError(f"{manifest_path} is missing or not a regular file")
            manifest = json.loads(manifest_path.read_text())
            if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
                raise ValueError(f"not a {_MANIFEST_FORMAT} manifest")
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{manifest_path}: {exc}") from exc
        engine = _sona.Engine.load(str(directory))
        config = SONAConfig.from_json(engine.config_json)
        if embedder is None:
            saved = manifest.get("embedder")
            if isinstance(saved, dict) and saved.get("kind") == "hashing":
                try:
                    embedder = HashingEmbedder(int(saved["dim"]), seed=int(saved["seed"]))
                except (KeyError, TypeError, ValueError, SonaError) as exc:
                    engine.close()
                    raise CheckpointError(f"{manifest_path}: bad embedder entry ({exc})") from exc
        try:
            checked_embedder = cls._check_embedder(embedder, config)
            checked_backends = _backends_for(backends, _tier_names(config))
        except SonaError:
            engine.close()
            raise
        self = cls.__new__(cls)
        self._init(engine, checked_embedder, checked_backends)
        return self

    def close(self) -> None:
        """Stop the background thread and release the engine (idempotent)."""
        self._engine.close()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> SONAEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"SONAEngine(dim={self.dim}, tiers={self.tier_names}, {state})"


def _trajectory_ids(ids: Any) -> npt.NDArray[np.uint64]:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidInputError(f"trajectory_ids: expected a 1-D sequence, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise InvalidInputError(f"trajectory_ids: expected integers, got dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise UnknownIdError(f"unknown trajectory id {int(arr.min())}")
    return np.ascontiguousarray(arr, dtype=np.uint64)
