//! Exporting and importing patterns: [`PatternRecord`]s (every field but the centroid) plus a
//! row-major centroid matrix, as JSON + numpy in Python, for moving patterns between banks.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sona_core::types::{ArmStats, Pattern};
use sona_core::{kernels, validate, Result, SonaError};

use crate::bank::ReasoningBank;
use crate::config::BankConfig;
use crate::node::PatternNode;

/// Most exemplar ids a record may carry (the bound of `BankConfig::max_exemplars`).
const MAX_EXEMPLARS: usize = 1 << 16;

/// Largest pattern id [`ReasoningBank::import`] accepts: the id counter continues after the largest
/// id, so an id near 2⁶⁴ would leave no room for new patterns (and a saved bank could not reload).
pub const MAX_IMPORT_ID: u64 = crate::node::ID_LIMIT - 1;

/// A pattern without its centroid (stored as a tensor / numpy matrix alongside), plus the
/// bookkeeping that keeps merges exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternRecord {
    pub id: u64,
    #[serde(default)]
    pub level: u8,
    pub support: u32,
    pub arms: Vec<ArmStats>,
    pub avg_reward: f32,
    #[serde(default)]
    pub created_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
    #[serde(default)]
    pub last_access_ms: u64,
    #[serde(default)]
    pub access_count: u64,
    #[serde(default)]
    pub exemplars: Vec<u64>,
    #[serde(default)]
    pub payload: Option<Vec<u8>>,
    /// Mean resultant length of the members (1 when unknown: members assumed identical).
    #[serde(default = "one")]
    pub resultant: f32,
    /// Statistics of all rewards; when absent on import, pooled from the arms.
    #[serde(default)]
    pub rewards: Option<ArmStats>,
}

fn one() -> f32 {
    1.0
}

impl PatternRecord {
    pub fn of(p: &Pattern, resultant: f32, rewards: ArmStats) -> Self {
        PatternRecord {
            id: p.id,
            level: p.level,
            support: p.support,
            arms: p.arms.clone(),
            avg_reward: p.avg_reward,
            created_ms: p.created_ms,
            updated_ms: p.updated_ms,
            last_access_ms: p.last_access_ms,
            access_count: p.access_count,
            exemplars: p.exemplars.clone(),
            payload: p.payload.clone(),
            resultant,
            rewards: Some(rewards),
        }
    }

    /// Checks every field against `cfg` (centroid unit-normalised by the caller) and builds the node.
    pub(crate) fn into_node(self, centroid: Vec<f32>, cfg: &BankConfig) -> Result<PatternNode> {
        let bad = |m: String| Err(SonaError::invalid(format!("pattern {}: {m}", self.id)));
        if self.arms.len() != cfg.n_tiers {
            return bad(format!(
                "{} arms, expected {}",
                self.arms.len(),
                cfg.n_tiers
            ));
        }
        let stats_ok = |a: &ArmStats| a.is_plausible();
        if !self.arms.iter().all(stats_ok) {
            return bad("arm statistics out of range".into());
        }
        if !(self.avg_reward.is_finite() && (0.0..=1.0).contains(&self.avg_reward)) {
            return bad(format!("avg_reward {} outside [0, 1]", self.avg_reward));
        }
        if self.exemplars.len() > MAX_EXEMPLARS {
            return bad(format!(
                "{} exemplars (at most {MAX_EXEMPLARS})",
                self.exemplars.len()
            ));
        }
        if !(self.resultant.is_finite() && self.resultant > 0.0 && self.resultant <= 1.0 + 1e-6) {
            return bad(format!("resultant {} outside (0, 1]", self.resultant));
        }
        let rewards = match self.rewards {
            Some(r) if stats_ok(&r) => r,
            Some(_) => return bad("reward statistics out of range".into()),
            None => {
                let pooled = self
                    .arms
                    .iter()
                    .fold(ArmStats::default(), |a, b| a.merge(b));
                if pooled.count > 0 {
                    pooled
                } else {
                    ArmStats {
                        count: self.support as u64,
                        mean: self.avg_reward as f64,
                        m2: 0.0,
                    }
                }
            }
        };
        let p = Pattern {
            id: self.id,
            level: self.level,
            centroid,
            support: self.support,
            arms: self.arms,
            avg_reward: self.avg_reward,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            last_access_ms: self.last_access_ms,
            access_count: self.access_count,
            exemplars: self.exemplars,
            payload: self.payload,
        };
        Ok(PatternNode::new(p, self.resultant.min(1.0), rewards))
    }
}

/// JSON text of any bank record (used by the Python binding, which has no serde of its own).
pub fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| SonaError::Internal(format!("serialising: {e}")))
}

/// Pattern records from JSON (the format [`to_json`] writes for `Vec<PatternRecord>`).
pub fn records_from_json(s: &str) -> Result<Vec<PatternRecord>> {
    serde_json::from_str(s).map_err(|e| SonaError::invalid(format!("pattern records: {e}")))
}

/// `n` validated unit rows of the row-major `data` (rows already unit are kept bit-exact).
pub(crate) fn unit_rows(what: &str, data: &[f32], n: usize, dim: usize) -> Result<Vec<Vec<f32>>> {
    validate::check_matrix(what, data, n, dim)?;
    data.chunks_exact(dim.max(1))
        .take(n)
        .enumerate()
        .map(|(i, row)| {
            let mut c = row.to_vec();
            let n2 = kernels::norm_sq(&c);
            // Rows that are already unit (saved centroids) are kept bit-exact.
            let norm = if (n2 - 1.0).abs() > 1e-5 {
                kernels::normalize(&mut c)
            } else {
                n2
            };
            // +Inf is the norm of a finite row near 1e38, which `normalize` made unit.
            if norm > 0.0 {
                Ok(c)
            } else {
                Err(SonaError::invalid(format!(
                    "{what}: row {i} is the zero vector"
                )))
            }
        })
        .collect()
}

impl ReasoningBank {
    /// The level-0 patterns as records plus their centroids (row-major `n × dim`), ordered by id.
    pub fn export(&self) -> (Vec<PatternRecord>, Vec<f32>) {
        let st = self.state.read();
        let mut ids: Vec<u64> = st.nodes.keys().copied().collect();
        ids.sort_unstable();
        let mut recs = Vec::with_capacity(ids.len());
        let mut cents = Vec::with_capacity(ids.len() * self.cfg.dim);
        for id in ids {
            let n = &st.nodes[&id];
            let p = n.snapshot();
            cents.extend_from_slice(&p.centroid);
            recs.push(PatternRecord::of(&p, n.resultant, n.rewards));
        }
        (recs, cents)
    }

    /// Records and centroids of the given level-0 patterns, skipping ids that no longer exist (a
    /// concurrent consolidate or prune may remove a pattern between a search and this call).
    pub fn records(&self, ids: &[u64]) -> (Vec<PatternRecord>, Vec<f32>) {
        let st = self.state.read();
        let mut recs = Vec::with_capacity(ids.len());
        let mut cents = Vec::with_capacity(ids.len() * self.cfg.dim);
        for id in ids {
            if let Some(n) = st.nodes.get(id) {
                let p = n.snapshot();
                cents.extend_from_slice(&p.centroid);
                recs.push(PatternRecord::of(&p, n.resultant, n.rewards));
            }
        }
        (recs, cents)
    }

    /// Records and centroids of hierarchy level `level` (0 = [`export`](Self::export)).
    pub fn level_records(&self, level: usize) -> Result<(Vec<PatternRecord>, Vec<f32>)> {
        if level == 0 {
            return Ok(self.export());
        }
        let ps = self.level_patterns(level)?;
        let cents = ps.iter().flat_map(|p| p.centroid.iter().copied()).collect();
        let recs = ps
            .iter()
            .map(|p| PatternRecord::of(p, 1.0, ArmStats::default()))
            .map(|mut r| {
                r.rewards = None;
                r
            })
            .collect();
        Ok((recs, cents))
    }

    /// Adds exported level-0 patterns (e.g. from another bank). Every record is validated first: a
    /// wrong dimension, bad statistics, a level other than 0, or an id repeated in the input or already
    /// in this bank fails the whole import and leaves the bank unchanged. Returns how many were added.
    pub fn import(&self, records: Vec<PatternRecord>, centroids: &[f32]) -> Result<usize> {
        let d = self.cfg.dim;
        let rows = unit_rows("centroids", centroids, records.len(), d)?;
        let mut st = self.state.write();
        self.centroids_changing();
        let mut seen = HashSet::new();
        let level_ids: HashSet<u64> = st
            .levels
            .iter()
            .flat_map(|l| l.patterns.iter().map(|p| p.id))
            .collect();
        let mut nodes = Vec::with_capacity(records.len());
        for (rec, row) in records.into_iter().zip(rows) {
            if rec.level != 0 {
                return Err(SonaError::invalid(format!(
                    "pattern {}: only level-0 patterns can be imported (the hierarchy is rebuilt by build_hierarchy)",
                    rec.id
                )));
            }
            if rec.id > MAX_IMPORT_ID {
                return Err(SonaError::invalid(format!(
                    "pattern id {} is above {MAX_IMPORT_ID}: the bank's id counter would have no room left",
                    rec.id
                )));
            }
            if !seen.insert(rec.id) || st.nodes.contains_key(&rec.id) || level_ids.contains(&rec.id)
            {
                return Err(SonaError::invalid(format!(
                    "duplicate pattern id {} on import",
                    rec.id
                )));
            }
            nodes.push(rec.into_node(row, &self.cfg)?);
        }
        // All checks passed: the inserts below cannot fail on input (ids are fresh, vectors unit);
        // should the index fail anyway, the ones already made are taken back.
        let n = nodes.len();
        let mut added = Vec::with_capacity(n);
        for node in &nodes {
            let id = node.pattern.id;
            if let Err(e) = st.index.add(id, &node.pattern.centroid) {
                for &a in &added {
                    let _ = st.index.remove(a);
                }
                return Err(e);
            }
            added.push(id);
        }
        for node in nodes {
            let id = node.pattern.id;
            st.next_pattern_id = st.next_pattern_id.max(id + 1);
            st.nodes.insert(id, node);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::bank::tests::{feed, small_bank};
    use sona_core::types::RewardSource;
    use sona_index::synthetic::blobs;

    #[test]
    fn import_rejects_duplicates_atomically() {
        let d = 8;
        let (pts, label) = blobs(200, 4, d, 0.2, 3);
        let a = small_bank(d);
        feed(&a, &pts, &label);
        a.extract_patterns().unwrap();
        let (recs, cents) = a.export();
        let b = small_bank(d);
        assert_eq!(b.import(recs.clone(), &cents).unwrap(), recs.len());
        assert_eq!(b.patterns(), a.patterns());
        assert!(
            b.import(recs.clone(), &cents).is_err(),
            "ids already present"
        );
        let mut dup = recs[..2].to_vec();
        dup[1].id = dup[0].id + 1000;
        dup.push(dup[1].clone());
        let c = small_bank(d);
        let mut cents3 = cents[..2 * d].to_vec();
        cents3.extend_from_slice(&cents[d..2 * d]);
        assert!(
            c.import(dup, &cents3).is_err(),
            "duplicate inside the input"
        );
        assert!(c.is_empty(), "nothing imported on failure");
        assert!(c.import(recs[..1].to_vec(), &cents[..d - 1]).is_err());
        // New patterns get ids beyond the imported ones.
        feed(&b, &pts[..d], &label[..1]);
        let mut far = vec![0.0f32; d];
        far[0] = -1.0;
        b.add_trajectory(&far, Some(0.5), None, RewardSource::Explicit, None)
            .unwrap();
        b.extract_patterns().unwrap();
        let max_a = recs.iter().map(|r| r.id).max().unwrap();
        assert!(b.patterns().iter().any(|p| p.id > max_a));
    }
}
