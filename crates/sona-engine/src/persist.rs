//! `save(dir)` / `load(dir)`: every learned piece of an engine.
//!
//! Three checkpoint files (the project container: versioned, CRC-checked, written through
//! `sona_core::fsio`: unique temporary file, fsync, rename, directory fsync):
//! - `engine.ckpt`: config, counters, metrics, the published weights (router, base, micro, head
//!   micro), loop-A momentum, Adam moments, RNG states, the replay reservoir, and (from version 2)
//!   the trajectories awaiting feedback, so a feedback for a decision made before `save` still
//!   works after `load`;
//! - `ewc.ckpt`: the EWC++ state; `bank.ckpt`: the ReasoningBank.
//!
//! Each file carries the same random `save_token`, so a directory mixing files of two saves is
//! refused. Not saved: the task-boundary detector's windows (it refills from new traffic). Version-1
//! files (no pending trajectories) still load, with none pending.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sona_core::{Checkpoint, Result, SeededRng, SonaError};
use sona_ewc::EwcPlusPlus;
use sona_lora::LoraWeights;
use sona_reasoning::index::AnyIndex;
use sona_reasoning::ReasoningBank;

use crate::adam::Adam;
use crate::config::EngineConfig;
use crate::engine::Inner;
use crate::latency::OpLatency;
use crate::loop_b::flat_len;
use crate::metrics::Metrics;
use crate::model::Model;
use crate::pending::PendingEntry;
use crate::replay::{Replay, ReplayItem};

/// Kind and format version of `engine.ckpt` (tests and tools read them from here).
pub const KIND: &str = "sona-engine";
/// 2 added the pending trajectories (`pending.*`), the router's read-out (`readout`) and the replay
/// items' arrival numbers (`replay.arrivals`); a version-1 file loads with nothing pending, a zero
/// read-out (exactly the router it was saved from) and its replay items arriving in stored order.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counters {
    next_id: u64,
    processed: u64,
    feedbacks: u64,
    loop_b_runs: u64,
    generation: u64,
    rejected: u64,
    cycles: u64,
    boundaries: u64,
    replay_seen: u64,
    adam_t: u64,
}

fn bad(msg: impl Into<String>) -> SonaError {
    SonaError::checkpoint(msg)
}

fn ck_err(e: SonaError) -> SonaError {
    match e {
        SonaError::Checkpoint(_) => e,
        other => bad(other.to_string()),
    }
}

fn put_lora(ck: &mut Checkpoint, name: &str, w: &LoraWeights) {
    ck.put_f32(&format!("{name}.a"), &[w.rank, w.d_in], &w.a);
    ck.put_f32(&format!("{name}.bt"), &[w.rank, w.d_out], &w.bt);
}

fn get_lora(ck: &Checkpoint, name: &str, like: &LoraWeights) -> Result<LoraWeights> {
    let mut w = like.clone();
    w.a = ck.get_f32_shaped(&format!("{name}.a"), &[w.rank, w.d_in])?;
    w.bt = ck.get_f32_shaped(&format!("{name}.bt"), &[w.rank, w.d_out])?;
    if !w.is_finite() {
        return Err(bad(format!("{name}: non-finite weights")));
    }
    Ok(w)
}

/// The pending trajectories as tensors: `pending.data` (`n × width`: query and statistics),
/// `pending.ids` (`n × k` recalled ids), `pending.keys` (`n × 2`: trajectory id, time in ms) and
/// `pending.meta` (`n × 2`: tier, propensity).
fn put_pending(ck: &mut Checkpoint, entries: &[(u64, PendingEntry)], width: usize, k: usize) {
    let n = entries.len();
    let mut data = Vec::with_capacity(n * width);
    let mut ids = Vec::with_capacity(n * k);
    let mut keys = Vec::with_capacity(n * 2);
    let mut meta = Vec::with_capacity(n * 2);
    for (id, e) in entries {
        data.extend_from_slice(&e.data);
        ids.extend_from_slice(&e.ids);
        keys.extend_from_slice(&[*id, e.ts_ms]);
        meta.extend_from_slice(&[e.tier as f32, e.propensity]);
    }
    ck.put_f32("pending.data", &[n, width], &data);
    ck.put_u64("pending.ids", &ids);
    ck.put_u64("pending.keys", &keys);
    ck.put_f32("pending.meta", &[n, 2], &meta);
}

/// Reads and validates what [`put_pending`] wrote: at most the pending capacity, ids strictly
/// increasing and below `next_id`, tiers in range, propensities in `(0, 1]`, finite vectors.
fn get_pending(ck: &Checkpoint, inner: &Inner, next_id: u64) -> Result<Vec<(u64, PendingEntry)>> {
    let cfg = &inner.cfg;
    let (k, width) = (cfg.k_recall, cfg.dim + cfg.k_recall * inner.s_width);
    let (shape, data) = ck.get_f32("pending.data")?;
    if shape.len() != 2 || shape[1] != width {
        return Err(bad("pending.data has the wrong width"));
    }
    let n = shape[0];
    if n > inner.budget.pending {
        return Err(bad(format!(
            "{n} pending trajectories exceed the capacity of {}",
            inner.budget.pending
        )));
    }
    let ids = ck.get_u64("pending.ids")?;
    let keys = ck.get_u64("pending.keys")?;
    let meta = ck.get_f32_shaped("pending.meta", &[n, 2])?;
    if ids.len() != n * k || keys.len() != n * 2 {
        return Err(bad("pending trajectory sizes are inconsistent"));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| bad("pending trajectories: out of memory"))?;
    let mut last = 0u64;
    for i in 0..n {
        let (id, ts) = (keys[2 * i], keys[2 * i + 1]);
        let (tier, prop) = (meta[2 * i], meta[2 * i + 1]);
        let row = &data[i * width..(i + 1) * width];
        let valid = id > last
            && id < next_id
            && tier >= 0.0
            && (tier as usize) < cfg.n_tiers
            && tier.fract() == 0.0
            && prop > 0.0
            && prop <= 1.0
            && row.iter().all(|x| x.is_finite());
        if !valid {
            return Err(bad(format!("pending trajectory {i} is out of range")));
        }
        last = id;
        out.push((
            id,
            PendingEntry {
                data: row.into(),
                ids: ids[i * k..(i + 1) * k].into(),
                tier: tier as u8,
                propensity: prop,
                ts_ms: ts,
                projected: None,
            },
        ));
    }
    Ok(out)
}

impl Inner {
    /// Writes every learned piece into directory `dir` (created if missing) and returns the
    /// interaction-log sequence number the state reflects. [`crate::checkpoint`] makes the
    /// directory atomic.
    pub(crate) fn save_files(&self, dir: &Path) -> Result<u64> {
        let inner = self;
        inner.check_open()?;
        std::fs::create_dir_all(dir)?;
        let token = {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            SeededRng::new(t ^ inner.next_id.load(Relaxed)).next_u64()
        };
        // Hold the learner (no loop-B cycle) and the writer (no loop-A step) while copying, so the
        // weights, optimiser states and counters are from one moment.
        let learner = inner.learner.lock();
        // No `process` / `feedback` in flight either: the log sequence number is an exact cut.
        let gate = inner.durable.gate.write();
        let log_seq = inner.durable.seq();
        let wr = inner.writer.lock();
        let model = inner.model.load_full();
        let mut ck = Checkpoint::new(KIND, VERSION);
        ck.set_meta("save_token", &token)?;
        ck.set_meta("config", &inner.cfg)?;
        ck.set_meta("log_seq", &log_seq)?;
        let replay = inner.replay.lock().clone();
        ck.set_meta(
            "counters",
            &Counters {
                next_id: inner.next_id.load(Relaxed),
                processed: inner.processed.load(Relaxed),
                feedbacks: inner.feedbacks.load(Relaxed),
                loop_b_runs: inner.loop_b_runs.load(Relaxed),
                generation: model.generation,
                rejected: wr.rejected,
                cycles: learner.cycles,
                boundaries: learner.boundaries,
                replay_seen: replay.seen,
                adam_t: learner.adam.t,
            },
        )?;
        ck.set_meta("metrics", &*inner.metrics.lock())?;
        ck.set_meta("latency", &inner.latency.saved())?;
        ck.set_meta("phi", &*inner.last_phi.lock())?;
        ck.set_meta("writer_rng", &wr.rng)?;
        ck.set_meta("replay_rng", &replay.rng)?;
        ck.put_f32("router", &[model.router.len()], &model.router);
        put_lora(&mut ck, "base", &model.base);
        put_lora(&mut ck, "micro", &model.micro);
        put_lora(&mut ck, "head", &model.head);
        ck.put_f32("readout", &[model.readout.len()], &model.readout);
        let (ma, mb) = wr.micro_opt.momentum();
        ck.put_f32("micro_mom.a", &[ma.len()], ma);
        ck.put_f32("micro_mom.bt", &[mb.len()], mb);
        let (ha, hb) = wr.head_opt.momentum();
        ck.put_f32("head_mom.a", &[ha.len()], ha);
        ck.put_f32("head_mom.bt", &[hb.len()], hb);
        inner.tenants.write_into(&mut ck, &inner.cfg)?;
        ck.put_f32("adam.m", &[learner.adam.m.len()], &learner.adam.m);
        ck.put_f32("adam.v", &[learner.adam.v.len()], &learner.adam.v);
        let n = replay.items.len();
        let width = inner.cfg.dim + inner.cfg.k_recall * inner.s_width;
        let mut data = Vec::with_capacity(n * width);
        let mut ids = Vec::with_capacity(n * inner.cfg.k_recall);
        let mut meta = Vec::with_capacity(n * 3);
        for it in &replay.items {
            data.extend_from_slice(&it.data);
            ids.extend_from_slice(&it.ids);
            meta.extend_from_slice(&[it.tier as f32, it.reward, it.propensity]);
        }
        ck.put_f32("replay.data", &[n, width], &data);
        ck.put_u64("replay.ids", &ids);
        ck.put_f32("replay.meta", &[n, 3], &meta);
        put_pending(&mut ck, &inner.pending.entries(), width, inner.cfg.k_recall);
        ck.put_u64("replay.arrivals", &replay.arrivals);
        let mut ewc = learner.ewc.to_checkpoint()?;
        ewc.set_meta("save_token", &token)?;
        drop(wr);
        drop(learner);
        let mut bank = inner.bank.to_checkpoint()?;
        bank.set_meta("save_token", &token)?;
        drop(gate);
        ewc.save(dir.join("ewc.ckpt"))?;
        bank.save(dir.join("bank.ckpt"))?;
        ck.save(dir.join("engine.ckpt"))?;
        Ok(log_seq)
    }

    /// Loads the files written by [`Inner::save_files`] and the log sequence number they reflect.
    /// Every mismatch (kind, version, shapes, tokens, values out of range) is a
    /// [`SonaError::Checkpoint`].
    pub(crate) fn load_files(dir: &Path) -> Result<(Inner, u64)> {
        let ck = Checkpoint::load(dir.join("engine.ckpt"), KIND, VERSION)?;
        let log_seq: u64 = ck.meta("log_seq")?;
        let token: u64 = ck.meta("save_token")?;
        let cfg: EngineConfig = ck.meta("config")?;
        cfg.validate().map_err(ck_err)?;
        let c: Counters = ck.meta("counters")?;
        let metrics: Metrics = ck.meta("metrics")?;
        // Absent in checkpoints written before latency was recorded.
        let latency = match ck.meta::<serde_json::Value>("latency") {
            Ok(_) => OpLatency::from_saved(&ck.meta("latency")?).map_err(ck_err)?,
            Err(_) => OpLatency::default(),
        };
        // Φ of the last deep cycle; absent in checkpoints written before it was saved. An
        // algebraic connectivity of a normalised Laplacian lies in [0, 2].
        let phi = match ck.meta::<serde_json::Value>("phi") {
            Ok(_) => ck.meta::<Option<f64>>("phi")?,
            Err(_) => None,
        };
        if phi.is_some_and(|p| !(0.0..=2.0).contains(&p)) {
            return Err(bad("phi is outside [0, 2]"));
        }
        if metrics.tiers != cfg.n_tiers
            || metrics.window != cfg.metrics_window
            || metrics.current.tier_counts.len() != cfg.n_tiers
            || metrics.current.ips.len() != cfg.n_tiers
            || metrics.total.tier_counts.len() != cfg.n_tiers
            || metrics.total.ips.len() != cfg.n_tiers
        {
            return Err(bad("metrics do not match the configuration"));
        }
        let writer_rng: SeededRng = ck.meta("writer_rng")?;
        let replay_rng: SeededRng = ck.meta("replay_rng")?;
        let mut inner = Inner::new(cfg.clone()).map_err(ck_err)?;
        let cur = inner.model.load_full();
        let router = ck.get_f32_shaped("router", &[inner.layout.n_params()])?;
        if !router.iter().all(|x| x.is_finite()) {
            return Err(bad("router: non-finite weights"));
        }
        let readout = if ck.version() >= 2 {
            let r = ck.get_f32_shaped("readout", &[cur.readout.len()])?;
            if !r.iter().all(|x| x.is_finite()) {
                return Err(bad("readout: non-finite weights"));
            }
            r
        } else {
            vec![0.0; cur.readout.len()]
        };
        let model = Model {
            generation: c.generation,
            router: Arc::new(router),
            base: Arc::new(get_lora(&ck, "base", &cur.base)?),
            micro: Arc::new(get_lora(&ck, "micro", &cur.micro)?),
            head: Arc::new(get_lora(&ck, "head", &cur.head)?),
            readout: Arc::new(readout),
        };
        {
            let wr = inner.writer.get_mut();
            let (ma, mb) = (ck.get_f32("micro_mom.a")?.1, ck.get_f32("micro_mom.bt")?.1);
            wr.micro_opt.set_momentum(&ma, &mb).map_err(ck_err)?;
            let (ha, hb) = (ck.get_f32("head_mom.a")?.1, ck.get_f32("head_mom.bt")?.1);
            wr.head_opt.set_momentum(&ha, &hb).map_err(ck_err)?;
            wr.rng = writer_rng;
            wr.rejected = c.rejected;
        }
        {
            let p = flat_len(&cfg, &inner.layout);
            let l = inner.learner.get_mut();
            let m = ck.get_f32_shaped("adam.m", &[p])?;
            let v = ck.get_f32_shaped("adam.v", &[p])?;
            if !m.iter().chain(&v).all(|x| x.is_finite()) || v.iter().any(|&x| x < 0.0) {
                return Err(bad("adam moments out of range"));
            }
            l.adam = Adam {
                m,
                v,
                t: c.adam_t,
                ..Adam::new(0)
            };
            l.cycles = c.cycles;
            l.boundaries = c.boundaries;
            let ewc_ck = Checkpoint::load(dir.join("ewc.ckpt"), "ewc", u32::MAX)?;
            if ewc_ck.meta::<u64>("save_token")? != token {
                return Err(bad("ewc.ckpt is from another save than engine.ckpt"));
            }
            let ewc = EwcPlusPlus::from_checkpoint(&ewc_ck).map_err(ck_err)?;
            if ewc.param_count() != p {
                return Err(bad(format!(
                    "ewc.ckpt protects {} parameters, the engine has {p}",
                    ewc.param_count()
                )));
            }
            l.ewc = ewc;
        }
        {
            let width = cfg.dim + cfg.k_recall * inner.s_width;
            let (shape, data) = ck.get_f32("replay.data")?;
            if shape.len() != 2 || shape[1] != width {
                return Err(bad("replay.data has the wrong width"));
            }
            let n = shape[0];
            let ids = ck.get_u64("replay.ids")?;
            let meta = ck.get_f32_shaped("replay.meta", &[n, 3])?;
            if ids.len() != n * cfg.k_recall || n > inner.budget.replay || c.replay_seen < n as u64
            {
                return Err(bad("replay reservoir sizes are inconsistent"));
            }
            let arrivals = if ck.version() >= 2 {
                ck.get_u64("replay.arrivals")?
            } else {
                (c.replay_seen - n as u64 + 1..=c.replay_seen).collect()
            };
            if arrivals.len() != n || arrivals.iter().any(|&a| a == 0 || a > c.replay_seen) {
                return Err(bad("replay arrival numbers are out of range"));
            }
            let mut r = Replay::new(inner.budget.replay, cfg.seed);
            r.rng = replay_rng;
            r.seen = c.replay_seen;
            r.arrivals = arrivals;
            for i in 0..n {
                let (tier, reward, prop) = (meta[3 * i], meta[3 * i + 1], meta[3 * i + 2]);
                let row = &data[i * width..(i + 1) * width];
                let valid = tier >= 0.0
                    && (tier as usize) < cfg.n_tiers
                    && tier.fract() == 0.0
                    && (0.0..=1.0).contains(&reward)
                    && prop > 0.0
                    && prop <= 1.0
                    && row.iter().all(|x| x.is_finite());
                if !valid {
                    return Err(bad(format!("replay item {i} is out of range")));
                }
                r.items.push(Arc::new(ReplayItem {
                    data: row.into(),
                    ids: ids[i * cfg.k_recall..(i + 1) * cfg.k_recall].into(),
                    tier: tier as u8,
                    reward,
                    propensity: prop,
                }));
            }
            *inner.replay.get_mut() = r;
        }
        let bank_ck = Checkpoint::load(
            dir.join("bank.ckpt"),
            sona_reasoning::persist::KIND,
            sona_reasoning::persist::VERSION,
        )?;
        if bank_ck.meta::<u64>("save_token")? != token {
            return Err(bad("bank.ckpt is from another save than engine.ckpt"));
        }
        let bank_cfg: sona_reasoning::BankConfig = bank_ck.meta("config")?;
        let index = AnyIndex::new(cfg.dim, bank_cfg.index).map_err(ck_err)?;
        let bank = ReasoningBank::from_checkpoint(&bank_ck, Box::new(index)).map_err(ck_err)?;
        if bank.config().dim != cfg.dim || bank.config().n_tiers != cfg.n_tiers {
            return Err(bad("bank.ckpt has another dimension or tier count"));
        }
        inner.bank = bank;
        if ck.version() >= 2 {
            let now = crate::engine::now_ms();
            for (id, mut e) in get_pending(&ck, &inner, c.next_id)? {
                // A time in the future would keep the entry from ever expiring.
                e.ts_ms = e.ts_ms.min(now);
                inner.pending.insert(id, e, now);
            }
        }
        inner.tenants = crate::tenants::Tenants::read_from(&ck, &cfg)?;
        if c.next_id == 0 || c.processed >= c.next_id || c.feedbacks > c.processed {
            return Err(bad("counters are inconsistent"));
        }
        inner.next_id.store(c.next_id, Relaxed);
        inner.processed.store(c.processed, Relaxed);
        inner.feedbacks.store(c.feedbacks, Relaxed);
        inner.loop_b_runs.store(c.loop_b_runs, Relaxed);
        *inner.metrics.get_mut() = metrics;
        inner.latency = latency;
        *inner.last_phi.get_mut() = phi;
        *inner.recent.get_mut() = VecDeque::new();
        inner.model.store(Arc::new(model));
        Ok((inner, log_seq))
    }
}
