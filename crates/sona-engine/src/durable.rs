//! Durability hooks of the engine: the interaction log (`sona-log`) and log replay.
//!
//! `process` and `feedback` run under the read side of [`Durable::gate`] and append their record
//! (a channel send) before leaving it; a checkpoint takes the write side while it copies the
//! state, so the sequence number it stores splits the log exactly into records the checkpoint
//! reflects and records replay must apply. In `sync` mode `feedback` waits for the commit after
//! leaving the gate. `process` never waits: a trajectory's record precedes its feedback's in the
//! log, so a committed feedback implies its trajectory is committed too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use parking_lot::{Mutex, RwLock};
use sona_core::Result;
use sona_log::{Durability, FeedbackRec, Log, LogConfig, LogReader, Record, TrajectoryRec};

use crate::config::EngineConfig;
use crate::engine::{now_ms, FeedbackSource, Inner};
use crate::pending::PendingEntry;

/// The engine's durability state.
pub(crate) struct Durable {
    pub gate: RwLock<()>,
    pub log: Option<Log>,
    /// Set while replay re-applies logged records (which must not be logged again).
    pub replaying: AtomicBool,
    /// Serialises checkpoint saves.
    pub save_lock: Mutex<()>,
    pub checkpoints: AtomicU64,
    pub checkpoint_errors: AtomicU64,
    pub last_checkpoint_seq: AtomicU64,
    pub replayed: AtomicU64,
    pub replay_skipped: AtomicU64,
}

/// A record's sequence number that `sync` mode waits for (0: nothing to wait for).
pub(crate) type Ticket = u64;

impl Durable {
    pub(crate) fn open(cfg: &EngineConfig) -> Result<Self> {
        let mode = Durability::parse(&cfg.durability)?;
        let log = match (&cfg.log_path, mode) {
            (Some(p), Durability::Group | Durability::Sync) => Some(Log::open(LogConfig {
                path: PathBuf::from(p),
                dim: cfg.dim,
                durability: mode,
                group_commit_ms: cfg.group_commit_ms,
                queue_capacity: cfg.log_queue_capacity,
                retention_rows: cfg.log_retention_rows,
                retention_s: cfg.log_retention_s,
            })?),
            _ => None,
        };
        Ok(Durable {
            gate: RwLock::new(()),
            log,
            replaying: AtomicBool::new(false),
            save_lock: Mutex::new(()),
            checkpoints: AtomicU64::new(0),
            checkpoint_errors: AtomicU64::new(0),
            last_checkpoint_seq: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            replay_skipped: AtomicU64::new(0),
        })
    }

    fn active(&self) -> Option<&Log> {
        if self.replaying.load(Relaxed) {
            None
        } else {
            self.log.as_ref()
        }
    }

    /// Appends the record of a decision (`data` = query ++ statistics, `ids` = recall slots).
    pub(crate) fn log_trajectory(
        &self,
        dim: usize,
        id: u64,
        ts_ms: u64,
        tier: usize,
        propensity: f32,
        data: &[f32],
        ids: &[u64],
    ) -> Result<()> {
        if let Some(log) = self.active() {
            log.append(Record::Trajectory(TrajectoryRec {
                id,
                ts_ms,
                tier: tier as u8,
                propensity,
                query: data[..dim].to_vec(),
                features: data[dim..].to_vec(),
                recalled: ids.to_vec(),
            }))?;
        }
        Ok(())
    }

    /// Appends the record of an accepted feedback; the ticket is waited on in `sync` mode.
    pub(crate) fn log_feedback(
        &self,
        id: u64,
        reward: f32,
        source: FeedbackSource,
        ts_ms: u64,
    ) -> Result<Ticket> {
        match self.active() {
            Some(log) => {
                let seq = log.append(Record::Feedback(FeedbackRec {
                    id,
                    reward,
                    source: source_name(source).into(),
                    ts_ms,
                }))?;
                Ok(if log.durability() == Durability::Sync {
                    seq
                } else {
                    0
                })
            }
            None => Ok(0),
        }
    }

    /// Blocks until `ticket` is committed (`sync` mode).
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<()> {
        match (&self.log, ticket) {
            (Some(log), t) if t > 0 => log.wait(t),
            _ => Ok(()),
        }
    }

    /// The last sequence number handed out (call under the gate's write side for a cut).
    pub(crate) fn seq(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.last_seq())
    }

    pub(crate) fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "log": self.log.as_ref().map(|l| l.config().path.display().to_string()),
            "log_seq": self.seq(),
            "log_committed": self.log.as_ref().map_or(0, |l| l.committed()),
            "log_commits": self.log.as_ref().map_or(0, |l| l.commits()),
            "checkpoints": self.checkpoints.load(Relaxed),
            "checkpoint_errors": self.checkpoint_errors.load(Relaxed),
            "last_checkpoint_seq": self.last_checkpoint_seq.load(Relaxed),
            "replayed": self.replayed.load(Relaxed),
            "replay_skipped": self.replay_skipped.load(Relaxed),
        })
    }
}

pub(crate) fn source_name(s: FeedbackSource) -> &'static str {
    match s {
        FeedbackSource::Explicit => "explicit",
        FeedbackSource::Implicit => "implicit",
        FeedbackSource::Judge => "judge",
        FeedbackSource::Error => "error",
    }
}

impl Inner {
    /// Shapes of a logged trajectory against this engine.
    fn fits(&self, t: &TrajectoryRec) -> bool {
        t.query.len() == self.cfg.dim
            && t.features.len() == self.cfg.k_recall * self.s_width
            && t.recalled.len() == self.cfg.k_recall
            && (t.tier as usize) < self.cfg.n_tiers
    }

    fn pending_entry(t: TrajectoryRec, ts_ms: u64) -> PendingEntry {
        let mut data = t.query;
        data.extend_from_slice(&t.features);
        PendingEntry {
            data: data.into(),
            ids: t.recalled.into(),
            tier: t.tier,
            propensity: t.propensity,
            ts_ms,
            projected: None,
        }
    }

    /// Re-applies the log written after sequence number `after`: trajectories become pending again
    /// (and count as processed), feedbacks run loop A again. Records that do not fit this engine
    /// or whose trajectory is gone are counted in `replay_skipped`.
    pub(crate) fn replay_log(&self, after: u64) -> Result<u64> {
        let Some(log) = &self.durable.log else {
            return Ok(0);
        };
        let reader = LogReader::open(&log.config().path, Some(self.cfg.dim))?;
        self.durable.replaying.store(true, Relaxed);
        let skipped = &self.durable.replay_skipped;
        let res = reader.for_each_after(after, |l| {
            let now = now_ms();
            match l.record {
                Record::Trajectory(t) => {
                    if !self.fits(&t) {
                        skipped.fetch_add(1, Relaxed);
                        return Ok(());
                    }
                    let id = t.id;
                    self.next_id.fetch_max(id + 1, Relaxed);
                    self.processed.fetch_add(1, Relaxed);
                    let ts = t.ts_ms.min(now);
                    self.pending.insert(id, Self::pending_entry(t, ts), now);
                }
                Record::Feedback(f) => {
                    let Ok(src) = FeedbackSource::parse(&f.source) else {
                        skipped.fetch_add(1, Relaxed);
                        return Ok(());
                    };
                    if !self.pending.contains(f.id, now) {
                        // Logged before the checkpoint (pending entries are not saved) or expired:
                        // the trajectory record is still in the log.
                        match reader.trajectory(f.id)? {
                            Some((_, t)) if self.fits(&t) => {
                                self.pending.insert(f.id, Self::pending_entry(t, now), now)
                            }
                            _ => {
                                skipped.fetch_add(1, Relaxed);
                                return Ok(());
                            }
                        }
                    }
                    if self.feedback(f.id, f.reward, src).is_err() {
                        skipped.fetch_add(1, Relaxed);
                    }
                }
            }
            Ok(())
        });
        self.durable.replaying.store(false, Relaxed);
        let n = res?;
        self.durable.replayed.fetch_add(n, Relaxed);
        Ok(n)
    }
}
