//! [`Log`]: the bounded queue, the writer thread, group commit and retention.
//!
//! Callers hand records over with [`Log::append`] (a sequence number and a bounded-channel send
//! under one short mutex, so sequence order is queue order) and, in `sync` mode, wait with
//! [`Log::wait`] until the commit that holds their record. The writer takes the first queued
//! record, gathers more (in `group` mode until `group_commit_ms` after the first; in `sync` mode
//! whatever is already queued, so records that arrive during one fsync share the next), writes them
//! in one transaction and publishes the highest committed sequence number. A full queue blocks
//! `append` (back-pressure) instead of dropping records.
//!
//! Both modes run SQLite with `synchronous = FULL` in WAL mode: a commit is on disk when it returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::{params, Connection};
use sona_core::{Result, SonaError};

use crate::record::{f32_blob, u64_blob, Record};
use crate::schema::{check_or_init, sql_err, KIND_FEEDBACK, KIND_TRAJECTORY};

/// When a call that handed a record over returns, relative to the record's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// No log.
    Off,
    /// Returns at once; the record is committed within `group_commit_ms`.
    Group,
    /// Returns after the commit that holds the record.
    Sync,
}

impl Durability {
    /// `"off"`, `"group"` or `"sync"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(Self::Off),
            "group" => Ok(Self::Group),
            "sync" => Ok(Self::Sync),
            _ => Err(SonaError::Config(format!(
                "durability must be \"off\", \"group\" or \"sync\", got {s:?}"
            ))),
        }
    }
}

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub path: PathBuf,
    /// Query dimension (checked against an existing log).
    pub dim: usize,
    pub durability: Durability,
    /// Longest a record waits for its commit in `group` mode.
    pub group_commit_ms: u64,
    /// Records the queue holds before `append` blocks.
    pub queue_capacity: usize,
    /// Keep at most this many newest records (0: no limit).
    pub retention_rows: u64,
    /// Delete records older than this many seconds (0: no limit).
    pub retention_s: f64,
}

/// Most records written in one transaction.
const MAX_BATCH: usize = 4096;

/// Test hook: when this environment variable names a file, the writer records in it whether it is
/// inside a commit (`begin <seq>` before a transaction starts, `end <seq>` after it returned), so a
/// crash test can tell that a SIGKILL landed during a log commit. One fixed-width record
/// overwritten in place (`pwrite` into the page cache, which survives the process); unset, the
/// writer does nothing extra.
pub const COMMIT_MARKER_ENV: &str = "SONA_LOG_COMMIT_MARKER";

/// The file of [`COMMIT_MARKER_ENV`], if set and openable.
struct CommitMarker(Option<std::fs::File>);

impl CommitMarker {
    fn from_env() -> Self {
        let f = std::env::var_os(COMMIT_MARKER_ENV).and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(p)
                .ok()
        });
        CommitMarker(f)
    }

    fn mark(&self, what: &str, seq: u64) {
        #[cfg(unix)]
        if let Some(f) = &self.0 {
            use std::os::unix::fs::FileExt;
            let _ = f.write_all_at(format!("{what:<5} {seq:020}\n").as_bytes(), 0);
        }
        #[cfg(not(unix))]
        let _ = (what, seq);
    }
}
/// How often retention runs (and how long an idle writer sleeps).
const HOUSEKEEPING: Duration = Duration::from_millis(500);

enum Msg {
    Rec(u64, Record),
    Stop,
}

struct Shared {
    committed: Mutex<u64>,
    cv: Condvar,
    failed: Mutex<Option<String>>,
    /// Retention never deletes records after this sequence number (the last checkpoint's).
    protect: AtomicU64,
    commits: AtomicU64,
}

struct Tx {
    next: u64,
    tx: Option<SyncSender<Msg>>,
}

/// The write side of the interaction log. Share it across threads.
pub struct Log {
    cfg: LogConfig,
    tx: Mutex<Tx>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn open_conn(cfg: &LogConfig) -> Result<Connection> {
    if let Some(dir) = cfg.path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let conn = Connection::open(&cfg.path).map_err(sql_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SonaError::checkpoint(format!(
            "interaction log: cannot enable WAL mode (got {mode})"
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(sql_err)?;
    check_or_init(&conn, cfg.dim)?;
    Ok(conn)
}

impl Log {
    /// Opens (or creates) the log at `cfg.path` and starts its writer thread. New records continue
    /// after the highest sequence number already stored.
    pub fn open(cfg: LogConfig) -> Result<Log> {
        if cfg.durability == Durability::Off {
            return Err(SonaError::Config(
                "a log opened with durability \"off\"".into(),
            ));
        }
        let conn = open_conn(&cfg)?;
        let last: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| {
                r.get(0)
            })
            .map_err(sql_err)?;
        let last = u64::try_from(last)
            .map_err(|_| SonaError::checkpoint("interaction log: negative sequence number"))?;
        let (tx, rx) = sync_channel(cfg.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            committed: Mutex::new(last),
            cv: Condvar::new(),
            failed: Mutex::new(None),
            protect: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        });
        let worker = Worker {
            conn,
            marker: CommitMarker::from_env(),
            rx,
            shared: shared.clone(),
            cfg: cfg.clone(),
            last_housekeeping: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("sona-log".into())
            .spawn(move || worker.run())?;
        Ok(Log {
            cfg,
            tx: Mutex::new(Tx {
                next: last,
                tx: Some(tx),
            }),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    pub fn durability(&self) -> Durability {
        self.cfg.durability
    }

    /// Hands `rec` to the writer and returns its sequence number (blocks only while the queue is
    /// full).
    pub fn append(&self, rec: Record) -> Result<u64> {
        self.check_failed()?;
        let mut g = self.tx.lock();
        let seq = g.next + 1;
        let tx =
            g.tx.as_ref()
                .ok_or_else(|| SonaError::invalid("the interaction log is closed"))?;
        tx.send(Msg::Rec(seq, rec))
            .map_err(|_| SonaError::Internal("the interaction log writer stopped".into()))?;
        g.next = seq;
        Ok(seq)
    }

    /// Makes the next sequence number at least `seq + 1` (a checkpoint reflects records up to
    /// `seq`; new records must sort after them).
    pub fn advance_to(&self, seq: u64) {
        let mut g = self.tx.lock();
        if g.next < seq {
            g.next = seq;
            let mut c = self.shared.committed.lock();
            *c = (*c).max(seq);
        }
    }

    /// The last sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.tx.lock().next
    }

    /// The highest committed sequence number.
    pub fn committed(&self) -> u64 {
        *self.shared.committed.lock()
    }

    /// Commits so far (transactions).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Relaxed)
    }

    fn check_failed(&self) -> Result<()> {
        match &*self.shared.failed.lock() {
            Some(m) => Err(SonaError::Internal(format!(
                "the interaction log failed: {m}"
            ))),
            None => Ok(()),
        }
    }

    /// Blocks until record `seq` is committed (or the writer failed).
    pub fn wait(&self, seq: u64) -> Result<()> {
        let mut c = self.shared.committed.lock();
        loop {
            if *c >= seq {
                return Ok(());
            }
            if self.shared.failed.lock().is_some() {
                drop(c);
                return self.check_failed();
            }
            self.shared.cv.wait_for(&mut c, Duration::from_millis(100));
        }
    }

    /// Waits until everything appended so far is committed.
    pub fn flush(&self) -> Result<()> {
        let s = self.last_seq();
        self.wait(s)
    }

    /// Lets retention delete records up to `seq` (the sequence number a durable checkpoint holds).
    pub fn set_checkpointed(&self, seq: u64) {
        self.shared.protect.fetch_max(seq, Relaxed);
    }

    /// Commits what is queued and stops the writer; later appends fail. Idempotent.
    pub fn close(&self) {
        if let Some(tx) = self.tx.lock().tx.take() {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

struct Worker {
    conn: Connection,
    marker: CommitMarker,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    cfg: LogConfig,
    last_housekeeping: Instant,
}

impl Worker {
    fn run(mut self) {
        let group = Duration::from_millis(self.cfg.group_commit_ms);
        let mut batch: Vec<(u64, Record)> = Vec::new();
        loop {
            let mut stop = false;
            match self.rx.recv_timeout(HOUSEKEEPING) {
                Ok(Msg::Rec(s, r)) => batch.push((s, r)),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if !batch.is_empty() && !stop {
                let deadline = Instant::now() + group;
                while batch.len() < MAX_BATCH {
                    let m = if self.cfg.durability == Durability::Group {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match self.rx.recv_timeout(left) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => Msg::Stop,
                        }
                    } else {
                        match self.rx.try_recv() {
                            Ok(m) => m,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => Msg::Stop,
                        }
                    };
                    match m {
                        Msg::Rec(s, r) => batch.push((s, r)),
                        Msg::Stop => {
                            stop = true;
                            break;
                        }
                    }
                }
            }
            if !batch.is_empty() {
                self.commit(&batch);
                batch.clear();
            }
            if stop {
                // Drain whatever raced with the stop message.
                while let Ok(Msg::Rec(s, r)) = self.rx.try_recv() {
                    batch.push((s, r));
                }
                if !batch.is_empty() {
                    self.commit(&batch);
                }
                self.shared.cv.notify_all();
                return;
            }
            if self.last_housekeeping.elapsed() >= HOUSEKEEPING {
                self.last_housekeeping = Instant::now();
                if let Err(e) = self.retention() {
                    *self.shared.failed.lock() = Some(e.to_string());
                    self.shared.cv.notify_all();
                }
            }
        }
    }

    fn commit(&mut self, batch: &[(u64, Record)]) {
        let last = batch.last().map_or(0, |b| b.0);
        self.marker.mark("begin", last);
        let res = write_batch(&mut self.conn, batch);
        self.marker.mark("end", last);
        match res {
            Ok(()) => {
                let mut c = self.shared.committed.lock();
                *c = (*c).max(last);
                self.shared.commits.fetch_add(1, Relaxed);
                drop(c);
                self.shared.cv.notify_all();
            }
            Err(e) => {
                *self.shared.failed.lock() = Some(e.to_string());
                self.shared.cv.notify_all();
            }
        }
    }

    /// Deletes records beyond the retention limits, never one after the last checkpoint.
    fn retention(&mut self) -> Result<usize> {
        let protect = self.shared.protect.load(Relaxed).min(i64::MAX as u64) as i64;
        let mut deleted = 0;
        if self.cfg.retention_rows > 0 {
            let keep = self.cfg.retention_rows.min(i64::MAX as u64) as i64;
            deleted += self
                .conn
                .execute(
                    "DELETE FROM records WHERE seq <= ?1 AND seq <= (SELECT MAX(seq) FROM records) - ?2",
                    params![protect, keep],
                )
                .map_err(sql_err)?;
        }
        if self.cfg.retention_s > 0.0 {
            let now = now_ms() as i64;
            let cutoff = now.saturating_sub((self.cfg.retention_s * 1000.0) as i64);
            deleted += self
                .conn
                .execute(
                    "DELETE FROM records WHERE seq <= ?1 AND ts_ms < ?2",
                    params![protect, cutoff],
                )
                .map_err(sql_err)?;
        }
        Ok(deleted)
    }
}

fn write_batch(conn: &mut Connection, batch: &[(u64, Record)]) -> Result<()> {
    let tx = conn.transaction().map_err(sql_err)?;
    {
        let mut st = tx
            .prepare_cached(
                "INSERT INTO records (seq, kind, id, ts_ms, tier, propensity, reward, source, query, features, recalled)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(sql_err)?;
        for (seq, rec) in batch {
            let seq = *seq as i64;
            match rec {
                Record::Trajectory(t) => st.execute(params![
                    seq,
                    KIND_TRAJECTORY,
                    t.id as i64,
                    t.ts_ms as i64,
                    t.tier as i64,
                    t.propensity as f64,
                    Option::<f64>::None,
                    Option::<String>::None,
                    f32_blob(&t.query),
                    f32_blob(&t.features),
                    u64_blob(&t.recalled),
                ]),
                Record::Feedback(f) => st.execute(params![
                    seq,
                    KIND_FEEDBACK,
                    f.id as i64,
                    f.ts_ms as i64,
                    Option::<i64>::None,
                    Option::<f64>::None,
                    f.reward as f64,
                    f.source,
                    Option::<Vec<u8>>::None,
                    Option::<Vec<u8>>::None,
                    Option::<Vec<u8>>::None,
                ]),
            }
            .map_err(sql_err)?;
        }
    }
    tx.commit().map_err(sql_err)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
