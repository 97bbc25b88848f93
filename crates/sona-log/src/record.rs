//! Records and their validation. A record read back from disk is checked as strictly as user input
//! (lengths, finiteness, ranges) before anything uses it.

use sona_core::{Result, SonaError};

/// Largest query / feature vector a record may carry (the engine's `dim` bound plus headroom).
pub const MAX_VALUES: usize = 1 << 20;
/// Most recalled ids a record may carry.
pub const MAX_RECALLED: usize = 1024;

/// A decision the engine returned: what replay needs to accept its feedback again.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryRec {
    pub id: u64,
    pub ts_ms: u64,
    pub tier: u8,
    pub propensity: f32,
    /// The query vector as given to `process`.
    pub query: Vec<f32>,
    /// The router's per-slot statistics at decision time (the rest of the pending entry).
    pub features: Vec<f32>,
    /// Recall slots (pattern ids; `u64::MAX` marks an empty slot).
    pub recalled: Vec<u64>,
}

/// A reward the engine accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRec {
    pub id: u64,
    pub reward: f32,
    /// `explicit`, `implicit`, `judge` or `error`.
    pub source: String,
    pub ts_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Trajectory(TrajectoryRec),
    Feedback(FeedbackRec),
}

/// A record with its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub seq: u64,
    pub record: Record,
}

pub const SOURCES: [&str; 4] = ["explicit", "implicit", "judge", "error"];

fn bad(msg: String) -> SonaError {
    SonaError::checkpoint(format!("interaction log: {msg}"))
}

impl Record {
    /// Checks every field (also used on records read back from disk).
    pub fn validate(&self) -> Result<()> {
        match self {
            Record::Trajectory(t) => {
                if t.id == 0 || t.id > i64::MAX as u64 {
                    return Err(bad(format!("trajectory id {} out of range", t.id)));
                }
                if !(t.propensity > 0.0 && t.propensity <= 1.0) {
                    return Err(bad(format!("propensity {} not in (0, 1]", t.propensity)));
                }
                if t.query.is_empty() || t.query.len() > MAX_VALUES || t.features.len() > MAX_VALUES
                {
                    return Err(bad("vector length out of range".into()));
                }
                if t.recalled.len() > MAX_RECALLED {
                    return Err(bad("too many recalled ids".into()));
                }
                if !t.query.iter().chain(&t.features).all(|v| v.is_finite()) {
                    return Err(bad(format!("trajectory {} has non-finite values", t.id)));
                }
                Ok(())
            }
            Record::Feedback(f) => {
                if f.id == 0 || f.id > i64::MAX as u64 {
                    return Err(bad(format!("feedback id {} out of range", f.id)));
                }
                if !(f.reward.is_finite() && (0.0..=1.0).contains(&f.reward)) {
                    return Err(bad(format!("reward {} not in [0, 1]", f.reward)));
                }
                if !SOURCES.contains(&f.source.as_str()) {
                    return Err(bad(format!("unknown feedback source {:?}", f.source)));
                }
                Ok(())
            }
        }
    }
}

/// Little-endian bytes of `f32`s.
pub fn f32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of `u64`s.
pub fn u64_blob(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes `f32`s, refusing a length that is not a multiple of 4 or above `max` values.
pub fn blob_f32(b: &[u8], max: usize) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) || b.len() / 4 > max {
        return Err(bad(format!("f32 blob of {} bytes", b.len())));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Decodes `u64`s, refusing a length that is not a multiple of 8 or above `max` values.
pub fn blob_u64(b: &[u8], max: usize) -> Result<Vec<u64>> {
    if !b.len().is_multiple_of(8) || b.len() / 8 > max {
        return Err(bad(format!("u64 blob of {} bytes", b.len())));
    }
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}
