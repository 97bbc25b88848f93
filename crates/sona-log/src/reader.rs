//! [`LogReader`]: validated reads of a log, in sequence order. A file that is not a SONA log, a
//! different format version, a malformed row or an out-of-range value is a `Checkpoint` error.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use sona_core::{Result, SonaError};

use crate::record::{
    blob_f32, blob_u64, FeedbackRec, Logged, Record, TrajectoryRec, MAX_RECALLED, MAX_VALUES,
};
use crate::schema::{meta, sql_err, FORMAT, KIND_FEEDBACK, KIND_TRAJECTORY};

/// Most rows one `read_after` call returns.
pub const MAX_CHUNK: usize = 100_000;

const COLUMNS: &str =
    "seq, kind, id, ts_ms, tier, propensity, reward, source, query, features, recalled";

/// A read-only view of a log.
pub struct LogReader {
    conn: Connection,
    dim: usize,
}

fn bad(msg: impl Into<String>) -> SonaError {
    SonaError::checkpoint(format!("interaction log: {}", msg.into()))
}

fn int(row: &Row<'_>, i: usize) -> Result<u64> {
    match row.get_ref(i).map_err(sql_err)? {
        ValueRef::Integer(v) if v >= 0 => Ok(v as u64),
        _ => Err(bad(format!("column {i} is not a non-negative integer"))),
    }
}

fn real(row: &Row<'_>, i: usize) -> Result<f64> {
    match row.get_ref(i).map_err(sql_err)? {
        ValueRef::Real(v) => Ok(v),
        ValueRef::Integer(v) => Ok(v as f64),
        _ => Err(bad(format!("column {i} is not a number"))),
    }
}

fn blob<'a>(row: &'a Row<'_>, i: usize) -> Result<&'a [u8]> {
    match row.get_ref(i).map_err(sql_err)? {
        ValueRef::Blob(b) => Ok(b),
        _ => Err(bad(format!("column {i} is not a blob"))),
    }
}

impl LogReader {
    /// Opens an existing log read-only (never creates one). `dim`, when given, must match.
    pub fn open(path: impl AsRef<Path>, dim: Option<usize>) -> Result<LogReader> {
        let path = path.as_ref();
        let meta_ok = std::fs::metadata(path)?;
        if !meta_ok.is_file() {
            return Err(bad(format!("{} is not a regular file", path.display())));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql_err)?;
        let format = meta(&conn, "format")?;
        if format != Some(FORMAT) {
            return Err(bad(format!("format {format:?} is not {FORMAT}")));
        }
        let d = meta(&conn, "dim")?.ok_or_else(|| bad("no dimension recorded"))?;
        if !(1..=MAX_VALUES as i64).contains(&d) {
            return Err(bad(format!("dimension {d} out of range")));
        }
        let d = d as usize;
        if let Some(want) = dim {
            if want != d {
                return Err(bad(format!("written for dim {d}, expected {want}")));
            }
        }
        Ok(LogReader { conn, dim: d })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn parse(&self, row: &Row<'_>) -> Result<Logged> {
        let seq = int(row, 0)?;
        let kind = int(row, 1)? as i64;
        let id = int(row, 2)?;
        let ts_ms = int(row, 3)?;
        let record = match kind {
            KIND_TRAJECTORY => {
                let tier = int(row, 4)?;
                if tier > u8::MAX as u64 {
                    return Err(bad(format!("tier {tier} out of range")));
                }
                let query = blob_f32(blob(row, 8)?, MAX_VALUES)?;
                if query.len() != self.dim {
                    return Err(bad(format!(
                        "query of {} values, the log's dim is {}",
                        query.len(),
                        self.dim
                    )));
                }
                Record::Trajectory(TrajectoryRec {
                    id,
                    ts_ms,
                    tier: tier as u8,
                    propensity: real(row, 5)? as f32,
                    query,
                    features: blob_f32(blob(row, 9)?, MAX_VALUES)?,
                    recalled: blob_u64(blob(row, 10)?, MAX_RECALLED)?,
                })
            }
            KIND_FEEDBACK => {
                let source = match row.get_ref(7).map_err(sql_err)? {
                    ValueRef::Text(t) if t.len() <= 16 => String::from_utf8(t.to_vec())
                        .map_err(|_| bad("feedback source is not UTF-8"))?,
                    _ => return Err(bad("feedback source is not a short text")),
                };
                Record::Feedback(FeedbackRec {
                    id,
                    reward: real(row, 6)? as f32,
                    source,
                    ts_ms,
                })
            }
            k => return Err(bad(format!("unknown record kind {k}"))),
        };
        record.validate()?;
        Ok(Logged { seq, record })
    }

    /// Up to `limit` (≤ [`MAX_CHUNK`]) records with `seq > after`, in sequence order.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Logged>> {
        let limit = limit.clamp(1, MAX_CHUNK);
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(sql_err)?;
        let mut rows = st
            .query(rusqlite::params![
                after.min(i64::MAX as u64) as i64,
                limit as i64
            ])
            .map_err(sql_err)?;
        let mut out = Vec::new();
        let mut prev = after;
        while let Some(r) = rows.next().map_err(sql_err)? {
            let l = self.parse(r)?;
            if l.seq <= prev {
                return Err(bad("sequence numbers are not increasing"));
            }
            prev = l.seq;
            out.push(l);
        }
        Ok(out)
    }

    /// Every record after `after`, chunk by chunk, to `f` (stops at the first error).
    pub fn for_each_after(
        &self,
        after: u64,
        mut f: impl FnMut(Logged) -> Result<()>,
    ) -> Result<u64> {
        let mut at = after;
        let mut n = 0;
        loop {
            let chunk = self.read_after(at, 10_000)?;
            if chunk.is_empty() {
                return Ok(n);
            }
            for l in chunk {
                at = l.seq;
                n += 1;
                f(l)?;
            }
        }
    }

    /// The trajectory record of `id`, if logged (and not deleted by retention).
    pub fn trajectory(&self, id: u64) -> Result<Option<(u64, TrajectoryRec)>> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM records WHERE id = ?1 AND kind = {KIND_TRAJECTORY} ORDER BY seq LIMIT 1"
            ))
            .map_err(sql_err)?;
        let mut rows = st
            .query([id.min(i64::MAX as u64) as i64])
            .map_err(sql_err)?;
        match rows.next().map_err(sql_err)? {
            Some(r) => match self.parse(r)? {
                Logged {
                    seq,
                    record: Record::Trajectory(t),
                } => Ok(Some((seq, t))),
                _ => Err(bad("kind mismatch")),
            },
            None => Ok(None),
        }
    }

    /// `(trajectories, feedbacks)` stored.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let q = |k: i64| -> Result<u64> {
            let n: i64 = self
                .conn
                .query_row("SELECT COUNT(*) FROM records WHERE kind = ?1", [k], |r| {
                    r.get(0)
                })
                .map_err(sql_err)?;
            Ok(n.max(0) as u64)
        };
        Ok((q(KIND_TRAJECTORY)?, q(KIND_FEEDBACK)?))
    }

    /// The highest sequence number stored (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| {
                r.get(0)
            })
            .map_err(sql_err)?;
        u64::try_from(n).map_err(|_| bad("negative sequence number"))
    }
}
