//! Table layout. One table holds both kinds of record so a scan in `seq` order is one index walk.
//!
//! `kind` is 1 (trajectory) or 2 (feedback); trajectory-only columns are NULL on feedback rows and
//! the other way round. `meta` holds the format version and the query dimension.

use rusqlite::Connection;
use sona_core::{Result, SonaError};

pub const FORMAT: i64 = 1;
pub const KIND_TRAJECTORY: i64 = 1;
pub const KIND_FEEDBACK: i64 = 2;

pub(crate) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    id INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    tier INTEGER,
    propensity REAL,
    reward REAL,
    source TEXT,
    query BLOB,
    features BLOB,
    recalled BLOB
);
CREATE INDEX IF NOT EXISTS records_id ON records (id, kind);
";

pub(crate) fn sql_err(e: rusqlite::Error) -> SonaError {
    SonaError::checkpoint(format!("interaction log: {e}"))
}

/// Reads `meta.key`, if present.
pub(crate) fn meta(conn: &Connection, key: &str) -> Result<Option<i64>> {
    let mut st = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .map_err(sql_err)?;
    let mut rows = st.query([key]).map_err(sql_err)?;
    match rows.next().map_err(sql_err)? {
        Some(r) => Ok(Some(r.get(0).map_err(sql_err)?)),
        None => Ok(None),
    }
}

/// Checks the format version and the dimension of an existing log (or records them in a new one).
pub(crate) fn check_or_init(conn: &Connection, dim: usize) -> Result<()> {
    conn.execute_batch(CREATE).map_err(sql_err)?;
    match (meta(conn, "format")?, meta(conn, "dim")?) {
        (None, None) => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('format', ?1), ('dim', ?2)",
                [FORMAT, dim as i64],
            )
            .map_err(sql_err)?;
            Ok(())
        }
        (Some(FORMAT), Some(d)) if d == dim as i64 => Ok(()),
        (Some(FORMAT), Some(d)) => Err(SonaError::Config(format!(
            "interaction log was written for dim {d}, the engine has dim {dim}"
        ))),
        (f, _) => Err(SonaError::checkpoint(format!(
            "interaction log format {f:?} is not {FORMAT}"
        ))),
    }
}
