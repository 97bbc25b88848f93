//! Saving and loading a whole bank.
//!
//! A checkpoint (kind `"reasoning_bank"`, the container supplies version and CRC) holds the config,
//! the id counters, the level-0 patterns, the hierarchy, the graph, and the ring buffer, reservoir and
//! pending map. Centroids and trajectory vectors are `f32` tensors; small per-pattern fields are JSON.
//! The vector index is not stored: it is rebuilt from the centroids on load, which keeps the file
//! independent of the index implementation.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sona_core::types::ArmStats;
use sona_core::{Checkpoint, Result, SeededRng, SonaError};

use crate::bank::ReasoningBank;
use crate::buffer::{PendingEntry, PendingMap, Reservoir, RingBuffer, TrajectoryStore};
use crate::config::BankConfig;
use crate::export::{unit_rows, PatternRecord};
use crate::graph::MemoryGraph;
use crate::node::{Level, PatternState};
use crate::trajectory::{TrajectoryMeta, TrajectorySlab};
use sona_index::{first_non_unit_row, AnyIndex, FlatIndex, VectorIndex};

/// Checkpoint kind of a bank.
pub const KIND: &str = "reasoning_bank";
/// Current format version of the bank's checkpoint content.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counters {
    next_trajectory_id: u64,
    next_pattern_id: u64,
    extractions: u64,
    completed: u64,
    dropped: u64,
    expired: u64,
    reservoir_seen: u64,
    reservoir_seed: u64,
    /// The reservoir's RNG state, so a reloaded bank samples exactly as an uninterrupted one would.
    /// Absent in files written before it was stored: those re-seed from `(seed, seen)`.
    #[serde(default)]
    reservoir_rng: Option<SeededRng>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LevelRecord {
    level: u8,
    patterns: Vec<PatternRecord>,
    children: Vec<Vec<u64>>,
}

fn put_slab(ck: &mut Checkpoint, name: &str, s: &TrajectorySlab) {
    ck.put_f32(&format!("{name}.vectors"), &[s.len(), s.dim], &s.data);
    ck.put_u64(
        &format!("{name}.ids"),
        &s.meta.iter().map(|m| m.id).collect::<Vec<_>>(),
    );
    ck.put_u64(
        &format!("{name}.ts"),
        &s.meta.iter().map(|m| m.ts_ms).collect::<Vec<_>>(),
    );
    ck.put_u64(
        &format!("{name}.small"),
        &s.meta.iter().map(|m| m.pack_small()).collect::<Vec<_>>(),
    );
    ck.put_f32(
        &format!("{name}.rewards"),
        &[s.len()],
        &s.meta.iter().map(|m| m.reward).collect::<Vec<_>>(),
    );
}

fn get_slab(ck: &Checkpoint, name: &str, dim: usize, n_tiers: usize) -> Result<TrajectorySlab> {
    let ids = ck.get_u64(&format!("{name}.ids"))?;
    let n = ids.len();
    let data = ck.get_f32_shaped(&format!("{name}.vectors"), &[n, dim])?;
    let ts = ck.get_u64(&format!("{name}.ts"))?;
    let small = ck.get_u64(&format!("{name}.small"))?;
    let rewards = ck.get_f32_shaped(&format!("{name}.rewards"), &[n])?;
    if ts.len() != n || small.len() != n {
        return Err(SonaError::checkpoint(format!(
            "{name}: field lengths differ"
        )));
    }
    // Stored embeddings are unit-norm (clustering relies on it), and each store holds an id once.
    if let Some(i) = first_non_unit_row(&data, dim) {
        return Err(SonaError::checkpoint(format!(
            "{name}: row {i} is not a finite unit vector"
        )));
    }
    let mut seen = HashSet::with_capacity(n);
    if let Some(id) = ids.iter().find(|&&id| !seen.insert(id)) {
        return Err(SonaError::checkpoint(format!(
            "{name}: trajectory id {id} appears twice"
        )));
    }
    let mut slab = TrajectorySlab::new(dim);
    slab.data = data;
    for i in 0..n {
        let (tier, source) = TrajectoryMeta::unpack_small(small[i]);
        let r = rewards[i];
        // Only pending trajectories are still without a reward (stored as NaN).
        let reward_ok = if r.is_nan() {
            name == "pending"
        } else {
            (0.0..=1.0).contains(&r)
        };
        if !reward_ok
            || (tier as usize >= n_tiers && tier != u8::MAX)
            || small[i] >> 16 != 0
            || (small[i] >> 8) & 0xFF > 2
        {
            return Err(SonaError::checkpoint(format!(
                "{name}: bad reward, tier or source at row {i}"
            )));
        }
        slab.meta.push(TrajectoryMeta {
            id: ids[i],
            ts_ms: ts[i],
            reward: r,
            tier,
            source,
        });
    }
    Ok(slab)
}

/// Arm and reward statistics as raw `f64` bits: JSON number parsing is not guaranteed to round-trip
/// the last bit, and a reloaded bank must be identical.
fn put_stats(ck: &mut Checkpoint, name: &str, recs: &[PatternRecord]) {
    let mut bits = Vec::new();
    for r in recs {
        for a in r.arms.iter().chain(r.rewards.as_ref()) {
            bits.extend([a.count, a.mean.to_bits(), a.m2.to_bits()]);
        }
    }
    ck.put_u64(&format!("{name}.stats"), &bits);
}

fn get_stats(ck: &Checkpoint, name: &str, recs: &mut [PatternRecord]) -> Result<()> {
    let bits = ck.get_u64(&format!("{name}.stats"))?;
    let per: usize = recs
        .iter()
        .map(|r| r.arms.len() + usize::from(r.rewards.is_some()))
        .sum();
    if bits.len() != 3 * per {
        return Err(SonaError::checkpoint(format!("{name}.stats: wrong length")));
    }
    let mut it = bits.chunks_exact(3).map(|c| ArmStats {
        count: c[0],
        mean: f64::from_bits(c[1]),
        m2: f64::from_bits(c[2]),
    });
    for r in recs.iter_mut() {
        for a in r.arms.iter_mut() {
            *a = it.next().expect("length checked");
        }
        if let Some(w) = r.rewards.as_mut() {
            *w = it.next().expect("length checked");
        }
        let bad = r
            .arms
            .iter()
            .chain(r.rewards.as_ref())
            .any(|a| !a.is_plausible());
        if bad {
            return Err(SonaError::checkpoint(format!(
                "{name}.stats: a count above 2^53, a mean outside [0, 1] or an m2 outside [0, n/4]"
            )));
        }
    }
    Ok(())
}

fn put_patterns(
    ck: &mut Checkpoint,
    name: &str,
    recs: &[PatternRecord],
    centroids: &[f32],
    dim: usize,
) -> Result<()> {
    ck.set_meta(name, &recs)?;
    ck.put_f32(&format!("{name}.centroids"), &[recs.len(), dim], centroids);
    put_stats(ck, name, recs);
    Ok(())
}

fn to_ckpt_err(e: SonaError) -> SonaError {
    match e {
        SonaError::Checkpoint(_) => e,
        other => SonaError::checkpoint(other.to_string()),
    }
}

impl ReasoningBank {
    /// Serialises the whole bank into a checkpoint (consistent: both locks are held while copying).
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let store = self.store.lock();
        let st = self.state.read();
        let d = self.cfg.dim;
        let mut ck = Checkpoint::new(KIND, VERSION);
        ck.set_meta("config", &self.cfg)?;
        ck.set_meta(
            "counters",
            &Counters {
                next_trajectory_id: store.next_id,
                next_pattern_id: st.next_pattern_id,
                extractions: st.extractions,
                completed: store.completed,
                dropped: store.ring.dropped(),
                expired: store.pending.expired(),
                reservoir_seen: store.reservoir.seen(),
                reservoir_seed: store.reservoir.seed(),
                reservoir_rng: Some(store.reservoir.rng().clone()),
            },
        )?;
        let mut ids: Vec<u64> = st.nodes.keys().copied().collect();
        ids.sort_unstable();
        let mut recs = Vec::with_capacity(ids.len());
        let mut cents = Vec::with_capacity(ids.len() * d);
        for id in &ids {
            let n = &st.nodes[id];
            let p = n.snapshot();
            cents.extend_from_slice(&p.centroid);
            recs.push(PatternRecord::of(&p, n.resultant, n.rewards));
        }
        put_patterns(&mut ck, "patterns", &recs, &cents, d)?;
        let mut levels = Vec::new();
        for (i, l) in st.levels.iter().enumerate() {
            let cents: Vec<f32> = l
                .patterns
                .iter()
                .flat_map(|p| p.centroid.iter().copied())
                .collect();
            ck.put_f32(
                &format!("level{}.centroids", i + 1),
                &[l.patterns.len(), d],
                &cents,
            );
            let recs: Vec<PatternRecord> = l
                .patterns
                .iter()
                .map(|p| PatternRecord::of(p, 1.0, ArmStats::default()))
                .collect();
            put_stats(&mut ck, &format!("level{}", i + 1), &recs);
            levels.push(LevelRecord {
                level: l.level,
                patterns: recs,
                children: l.children.clone(),
            });
        }
        ck.set_meta("levels", &levels)?;
        let edges = st.graph.edges();
        ck.put_u64(
            "graph.edges",
            &edges.iter().flat_map(|e| [e.0, e.1]).collect::<Vec<_>>(),
        );
        ck.put_f32(
            "graph.weights",
            &[edges.len()],
            &edges.iter().map(|e| e.2).collect::<Vec<_>>(),
        );
        put_slab(&mut ck, "ring", &store.ring.snapshot());
        put_slab(&mut ck, "reservoir", store.reservoir.slab());
        let mut pend = TrajectorySlab::new(d);
        for (&id, e) in store.pending.iter() {
            let meta = TrajectoryMeta {
                id,
                ts_ms: e.ts_ms,
                reward: f32::NAN,
                tier: e.tier,
                source: Default::default(),
            };
            pend.push(meta, &e.embedding, usize::MAX);
        }
        put_slab(&mut ck, "pending", &pend);
        Ok(ck)
    }

    /// Writes the bank to `path` (atomically: temporary file + rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.to_checkpoint()?.save(path)
    }

    /// Loads a bank written by [`save`](Self::save), over the index kind its configuration names.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let ck = Checkpoint::load(path, KIND, VERSION)?;
        let cfg: BankConfig = ck.meta("config")?;
        let index = Box::new(AnyIndex::new(cfg.dim.max(1), cfg.index).map_err(to_ckpt_err)?);
        Self::from_checkpoint(&ck, index)
    }

    /// Rebuilds a bank from a checkpoint, inserting the centroids into `index` (which must be empty).
    /// Every inconsistency is a [`SonaError::Checkpoint`].
    pub fn from_checkpoint(ck: &Checkpoint, mut index: Box<dyn VectorIndex>) -> Result<Self> {
        let cfg: BankConfig = ck.meta("config")?;
        cfg.validate().map_err(to_ckpt_err)?;
        if index.dim() != cfg.dim || !index.is_empty() {
            return Err(SonaError::Config(
                "the index must be empty and match the bank's dimension".into(),
            ));
        }
        let c: Counters = ck.meta("counters")?;
        // Both counters stay within 1..=ID_LIMIT (a bank at the limit refuses new ids cleanly).
        for (what, next) in [
            ("next_trajectory_id", c.next_trajectory_id),
            ("next_pattern_id", c.next_pattern_id),
        ] {
            if next == 0 || next > crate::node::ID_LIMIT {
                return Err(SonaError::checkpoint(format!("{what} {next} out of range")));
            }
        }
        let d = cfg.dim;
        let mut recs: Vec<PatternRecord> = ck.meta("patterns")?;
        get_stats(ck, "patterns", &mut recs)?;
        let cents = ck.get_f32_shaped("patterns.centroids", &[recs.len(), d])?;
        let rows = unit_rows("patterns.centroids", &cents, recs.len(), d).map_err(to_ckpt_err)?;
        let mut nodes =
            crate::node::IdMap::with_capacity_and_hasher(recs.len(), Default::default());
        for (rec, row) in recs.into_iter().zip(rows) {
            let id = rec.id;
            if id >= c.next_pattern_id || nodes.contains_key(&id) {
                return Err(SonaError::checkpoint(format!(
                    "pattern id {id} repeated or beyond the counter"
                )));
            }
            let node = rec.into_node(row, &cfg).map_err(to_ckpt_err)?;
            index.add(id, &node.pattern.centroid).map_err(to_ckpt_err)?;
            nodes.insert(id, node);
        }
        let level_recs: Vec<LevelRecord> = ck.meta("levels")?;
        let mut levels = Vec::new();
        // Abstractions take fresh ids from the same counter as level-0 patterns.
        let mut all_ids: HashSet<u64> = nodes.keys().copied().collect();
        for (i, mut lr) in level_recs.into_iter().enumerate() {
            if lr.level as usize != i + 1 {
                return Err(SonaError::checkpoint(format!(
                    "hierarchy level {} stored at position {}",
                    lr.level,
                    i + 1
                )));
            }
            for r in &lr.patterns {
                if r.id >= c.next_pattern_id || !all_ids.insert(r.id) || r.level != lr.level {
                    return Err(SonaError::checkpoint(format!(
                        "level {} pattern id {} repeated, beyond the counter or of another level",
                        lr.level, r.id
                    )));
                }
            }
            get_stats(ck, &format!("level{}", i + 1), &mut lr.patterns)?;
            let n = lr.patterns.len();
            let cents = ck.get_f32_shaped(&format!("level{}.centroids", i + 1), &[n, d])?;
            let rows = unit_rows("level centroids", &cents, n, d).map_err(to_ckpt_err)?;
            if lr.children.len() != n {
                return Err(SonaError::checkpoint(
                    "level children do not match its patterns",
                ));
            }
            let mut lindex = FlatIndex::new(d)?;
            let mut patterns = Vec::with_capacity(n);
            for (rec, row) in lr.patterns.into_iter().zip(rows) {
                let node = rec.into_node(row, &cfg).map_err(to_ckpt_err)?;
                lindex
                    .add(node.pattern.id, &node.pattern.centroid)
                    .map_err(to_ckpt_err)?;
                patterns.push(node.pattern);
            }
            levels.push(Level {
                level: lr.level,
                patterns,
                children: lr.children,
                index: lindex,
            });
        }
        let pairs = ck.get_u64("graph.edges")?;
        let weights = ck.get_f32("graph.weights")?.1;
        if pairs.len() != 2 * weights.len() {
            return Err(SonaError::checkpoint(
                "graph edges and weights differ in length",
            ));
        }
        let edges: Vec<(u64, u64, f32)> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (pairs[2 * i], pairs[2 * i + 1], w))
            .collect();
        if edges.len() > cfg.graph.max_edges {
            return Err(SonaError::checkpoint(format!(
                "{} graph edges, more than max_edges {}",
                edges.len(),
                cfg.graph.max_edges
            )));
        }
        let graph = MemoryGraph::from_edges(cfg.graph, &edges)?;
        if graph.edge_count() != edges.len() {
            return Err(SonaError::checkpoint("a graph edge is stored twice"));
        }
        let ring = get_slab(ck, "ring", d, cfg.n_tiers)?;
        let res = get_slab(ck, "reservoir", d, cfg.n_tiers)?;
        let pend = get_slab(ck, "pending", d, cfg.n_tiers)?;
        let max_id = ring
            .meta
            .iter()
            .chain(&res.meta)
            .chain(&pend.meta)
            .map(|m| m.id)
            .max()
            .unwrap_or(0);
        let seen_ok = res.len() as u64 <= c.reservoir_seen && ring.len() as u64 <= c.completed;
        if max_id >= c.next_trajectory_id
            || ring.len() > cfg.buffer_capacity
            || res.len() > cfg.reservoir_capacity
            || pend.len() > cfg.pending_capacity
            || !seen_ok
        {
            return Err(SonaError::checkpoint(
                "trajectory stores inconsistent with counters or capacities",
            ));
        }
        let entries = (0..pend.len())
            .map(|i| {
                (
                    pend.meta[i].id,
                    PendingEntry {
                        embedding: pend.row(i).into(),
                        ts_ms: pend.meta[i].ts_ms,
                        tier: pend.meta[i].tier,
                    },
                )
            })
            .collect();
        let store = TrajectoryStore {
            dim: d,
            n_tiers: cfg.n_tiers,
            next_id: c.next_trajectory_id,
            ring: RingBuffer::restore(d, cfg.buffer_capacity, ring, c.dropped),
            reservoir: Reservoir::restore(
                d,
                cfg.reservoir_capacity,
                c.reservoir_seed,
                res,
                c.reservoir_seen,
                c.reservoir_rng,
            ),
            pending: PendingMap::restore(
                cfg.pending_capacity,
                cfg.pending_ttl_ms,
                entries,
                c.expired,
            ),
            completed: c.completed,
        };
        let state = PatternState {
            nodes,
            index,
            graph,
            levels,
            next_pattern_id: c.next_pattern_id,
            extractions: c.extractions,
        };
        Ok(ReasoningBank::from_parts(cfg, store, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::tests::{feed, small_bank};
    use sona_core::types::RewardSource;
    use sona_index::synthetic::blobs;

    #[test]
    fn save_load_roundtrip_keeps_everything_and_ids_continue() {
        let d = 16;
        let (pts, label) = blobs(600, 6, d, 0.3, 1);
        let bank = small_bank(d);
        feed(&bank, &pts[..400 * d], &label[..400]);
        bank.extract_patterns().unwrap();
        feed(&bank, &pts[400 * d..], &label[400..]);
        let pend = bank
            .add_trajectory(&pts[..d], None, Some(1), RewardSource::Explicit, None)
            .unwrap();
        bank.record_usage(&[1, 2, 3], &[1, 2]).unwrap();
        bank.build_hierarchy(3, 2).unwrap();
        let dir = std::env::temp_dir().join(format!("sona-bank-{}.ckpt", std::process::id()));
        bank.save(&dir).unwrap();
        let back = ReasoningBank::load(&dir).unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(back.patterns(), bank.patterns());
        assert_eq!(back.graph_edges(), bank.graph_edges());
        assert_eq!(
            back.level_patterns(1).unwrap(),
            bank.level_patterns(1).unwrap()
        );
        let (a, b) = (bank.stats(), back.stats());
        assert_eq!(
            (a.buffered, a.reservoir, a.pending, a.next_trajectory_id),
            (b.buffered, b.reservoir, b.pending, b.next_trajectory_id)
        );
        assert_eq!(back.reservoir(), bank.reservoir());
        assert_eq!(
            back.search(&pts[..d], 3).unwrap(),
            bank.search(&pts[..d], 3).unwrap()
        );
        back.set_reward(pend, 0.5, RewardSource::Judge, None)
            .unwrap();
        let next = back
            .add_trajectory(&pts[..d], Some(1.0), None, RewardSource::Explicit, None)
            .unwrap();
        assert!(next > pend, "ids are never reused after load");
        // Extraction after load continues from the restored buffer.
        assert_eq!(back.extract_patterns().unwrap().trajectories, 200 + 2);
    }

    #[test]
    fn reloaded_reservoir_samples_exactly_like_the_original() {
        let d = 8;
        let (pts, _) = blobs(500, 5, d, 0.3, 9);
        let mut cfg = BankConfig::new(d, 4);
        cfg.reservoir_capacity = 16;
        let bank = ReasoningBank::new(cfg).unwrap();
        let add = |b: &ReasoningBank, i: usize| {
            b.add_trajectory(
                &pts[i * d..(i + 1) * d],
                Some(0.5),
                Some(0),
                RewardSource::Explicit,
                Some(i as u64),
            )
            .unwrap();
        };
        (0..200).for_each(|i| add(&bank, i));
        let path = std::env::temp_dir().join(format!("sona-res-{}.ckpt", std::process::id()));
        bank.save(&path).unwrap();
        let back = ReasoningBank::load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        // Past capacity every offer draws from the RNG: identical samples need identical RNG state.
        for i in 200..500 {
            add(&bank, i);
            add(&back, i);
        }
        assert_eq!(back.reservoir(), bank.reservoir());
    }

    #[test]
    fn corrupted_checkpoint_is_an_error() {
        let bank = small_bank(4);
        bank.add_trajectory(
            &[1.0, 0.0, 0.0, 0.0],
            Some(1.0),
            None,
            RewardSource::Explicit,
            None,
        )
        .unwrap();
        bank.extract_patterns().unwrap();
        let mut bytes = bank.to_checkpoint().unwrap().to_bytes().unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        assert!(matches!(
            Checkpoint::from_bytes(&bytes, KIND, VERSION),
            Err(SonaError::Checkpoint(_))
        ));
    }
}
