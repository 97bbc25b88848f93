//! Latency histograms per operation (design §8): `process`, `feedback`, `background_learn` and
//! `deep_learn`, timed at the engine's public calls (log replay at load is not timed).
//!
//! Recording is two clock reads and one relaxed atomic add ([`LatencyHistogram`]): no lock on the
//! request path. The histograms are saved with the engine, so `sona report` reads the latencies
//! the saved engine served.

use std::collections::BTreeMap;
use std::time::Instant;

use sona_core::{Result, SonaError};
use sona_metrics::LatencyHistogram;

/// The timed operations, in report order.
pub const OPS: [&str; 4] = ["process", "feedback", "background_learn", "deep_learn"];

/// One histogram per operation of [`OPS`].
#[derive(Debug, Default)]
pub struct OpLatency {
    hist: [LatencyHistogram; 4],
}

/// Saved form: operation name → non-empty `(bucket, count)` pairs.
pub type SavedLatency = BTreeMap<String, Vec<(u32, u64)>>;

impl OpLatency {
    /// The histogram of `op` (one of [`OPS`]).
    pub fn of(&self, op: &str) -> Option<&LatencyHistogram> {
        OPS.iter().position(|&o| o == op).map(|i| &self.hist[i])
    }

    /// Runs `f` and, when it succeeds, records its duration under operation `i` of [`OPS`].
    #[inline]
    pub(crate) fn time<T>(&self, i: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let out = f()?;
        self.hist[i].record_since(t0);
        Ok(out)
    }

    /// Records `n` calls of operation `i` that shared the time since `t0` equally (a batch).
    pub(crate) fn record_each(&self, i: usize, t0: Instant, n: usize) {
        if n > 0 {
            let each = (t0.elapsed().as_nanos() / n as u128).min(u128::from(u64::MAX)) as u64;
            for _ in 0..n {
                self.hist[i].record_ns(each);
            }
        }
    }

    /// `{op: {count, p50_us, p99_us}}` (quantiles `null` before the first call).
    pub fn to_json(&self) -> serde_json::Value {
        let us = |h: &LatencyHistogram, q: f64| h.quantile(q).map(|ns| ns / 1e3);
        OPS.iter()
            .zip(&self.hist)
            .map(|(op, h)| {
                let v = serde_json::json!({
                    "count": h.count(),
                    "p50_us": us(h, 0.5),
                    "p99_us": us(h, 0.99),
                });
                (op.to_string(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    pub fn saved(&self) -> SavedLatency {
        OPS.iter()
            .zip(&self.hist)
            .map(|(op, h)| (op.to_string(), h.buckets()))
            .collect()
    }

    /// Histograms read back from a file: unknown operations and bad buckets are refused.
    pub fn from_saved(saved: &SavedLatency) -> Result<Self> {
        let out = OpLatency::default();
        for (op, buckets) in saved {
            let i = OPS
                .iter()
                .position(|o| o == op)
                .ok_or_else(|| SonaError::invalid(format!("unknown latency operation {op:?}")))?;
            out.hist[i].merge(&LatencyHistogram::from_buckets(buckets)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_calls_are_counted_and_failures_are_not() {
        let l = OpLatency::default();
        for _ in 0..10 {
            l.time(0, || {
                std::thread::sleep(std::time::Duration::from_micros(200));
                Ok(())
            })
            .unwrap();
        }
        assert!(l
            .time(1, || Err::<(), _>(SonaError::invalid("no")))
            .is_err());
        let v = l.to_json();
        assert_eq!(v["process"]["count"], 10);
        assert_eq!(v["feedback"]["count"], 0);
        assert!(v["feedback"]["p50_us"].is_null());
        let p50 = v["process"]["p50_us"].as_f64().unwrap();
        let p99 = v["process"]["p99_us"].as_f64().unwrap();
        assert!(p50 >= 180.0 && p99 >= p50, "{p50} {p99}");
        let back = OpLatency::from_saved(&l.saved()).unwrap();
        assert_eq!(back.to_json(), v);
        let mut bad = l.saved();
        bad.insert("teleport".into(), vec![(1, 1)]);
        assert!(OpLatency::from_saved(&bad).is_err());
    }
}
