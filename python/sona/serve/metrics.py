"""Prometheus text-format metrics, kept in process.

A few counters and histograms with labels, rendered in the text exposition format (version
0.0.4). Updates are a dict lookup and an add under the GIL, cheap enough for the request path.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Sequence

Labels = tuple[str, ...]

#: Seconds; fine around the gateway's own overhead (sub-millisecond) and upstream times (seconds).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
REWARD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Counter:
    """A monotonically increasing value per label set."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self.values: dict[Labels, float] = {}
        self.kind = "counter"

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        """Add ``amount`` (≥ 0) to the series ``labels``."""
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, labels: Labels = ()) -> float:
        """Current value of one series."""
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        """Text-format lines."""
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in sorted(self.values.items()):
            out.append(f"{self.name}{_fmt_labels(self.labels, labels)} {_num(value)}")
        return out


class Gauge(Counter):
    """A value that goes up and down (set directly)."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        """Replace the series' value."""
        self.values[labels] = value


class Histogram:
    """Cumulative buckets, sum and count per label set."""

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self.buckets = tuple(buckets)
        self.series: dict[Labels, list[float]] = {}  # per-bucket counts + [sum, count]

    def observe(self, labels: Labels, value: float) -> None:
        """Record one observation."""
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.buckets):
            row[i] += 1
        row[-2] += value
        row[-1] += 1

    def count(self, labels: Labels) -> float:
        """How many observations a series has."""
        row = self.series.get(labels)
        return row[-1] if row else 0.0

    def render(self) -> list[str]:
        """Text-format lines (cumulative ``le`` buckets)."""
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, row in sorted(self.series.items()):
            acc = 0.0
            for bound, n in zip(self.buckets, row, strict=False):
                acc += n
                le = f'le="{_num(bound)}"'
                out.append(f"{self.name}_bucket{_fmt_labels(self.labels, labels, le)} {_num(acc)}")
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{_fmt_labels(self.labels, labels, inf)} {_num(row[-1])}")
            out.append(f"{self.name}_sum{_fmt_labels(self.labels, labels)} {_num(row[-2])}")
            out.append(f"{self.name}_count{_fmt_labels(self.labels, labels)} {_num(row[-1])}")
        return out


class GatewayMetrics:
    """Every metric the gateway exports."""

    def __init__(self) -> None:
        self.requests = Counter(
            "sona_requests_total",
            "Chat-completion requests by profile, tier and outcome (ok, error, fallback).",
            ("profile", "tier", "status"),
        )
        self.rejected = Counter(
            "sona_rejected_total", "Requests refused before routing, by HTTP status.", ("status",)
        )
        self.tier_share = Gauge(
            "sona_tier_share",
            "Share of routed requests each tier answered, per profile.",
            ("profile", "tier"),
        )
        self.cost = Counter(
            "sona_cost_total", "Upstream cost from token usage and tier prices.", ("tier",)
        )
        self.tokens = Counter("sona_tokens_total", "Tokens by tier and kind.", ("tier", "kind"))
        self.latency = Histogram(
            "sona_request_duration_seconds",
            "Whole request time seen by the gateway, per tier.",
            ("tier",),
            LATENCY_BUCKETS,
        )
        self.upstream_latency = Histogram(
            "sona_upstream_duration_seconds",
            "Time spent waiting for the upstream, per tier.",
            ("tier",),
            LATENCY_BUCKETS,
        )
        self.overhead = Histogram(
            "sona_gateway_overhead_seconds",
            "Request time minus upstream time (parsing, embedding, routing, proxying).",
            (),
            LATENCY_BUCKETS,
        )
        self.feedback = Counter("sona_feedback_total", "Rewards learned, by source.", ("source",))
        self.rewards = Histogram(
            "sona_reward", "Rewards learned, by source.", ("source",), REWARD_BUCKETS
        )
        self.engine = Gauge(
            "sona_engine_stat",
            "Engine statistics (learning-loop runs, pending trajectories, ...), per router.",
            ("router", "stat"),
        )
        self._lock = threading.Lock()
        self.collectors: list[Callable[[], None]] = []

    def render(self) -> str:
        """The whole exposition text."""
        with self._lock:
            for collect in self.collectors:
                collect()
            totals: dict[str, float] = {}
            for (profile, _tier, status), n in self.requests.values.items():
                if status != "error":
                    totals[profile] = totals.get(profile, 0.0) + n
            shares: dict[Labels, float] = {}
            for (profile, tier, status), n in self.requests.values.items():
                if status != "error" and totals.get(profile):
                    shares[(profile, tier)] = shares.get((profile, tier), 0.0) + n / totals[profile]
            self.tier_share.values = shares
            lines: list[str] = []
            for metric in (
                self.requests,
                self.rejected,
                self.tier_share,
                self.cost,
                self.tokens,
                self.latency,
                self.upstream_latency,
                self.overhead,
                self.feedback,
                self.rewards,
                self.engine,
            ):
                lines.extend(metric.render())
            return "\n".join(lines) + "\n"
