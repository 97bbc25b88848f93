//! One type for "whichever index the configuration asked for", and loading either from a checkpoint.

use std::path::Path;

use sona_core::{validate, Checkpoint, Result, SonaError};

use super::{
    FlatIndex, HnswIndex, HnswParams, IdFilter, IvfIndex, IvfParams, RetrainJob, RetrainPlan,
    VectorIndex, CHECKPOINT_KIND, CHECKPOINT_VERSION,
};

/// Which index to build.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Exact scan.
    #[default]
    Flat,
    /// HNSW graph with these parameters (`"approx"` in files written before the IVF index existed).
    #[serde(alias = "approx")]
    Hnsw(HnswParams),
    /// Inverted lists with these parameters: the default approximate index (see `docs/decisions.md`).
    Ivf(IvfParams),
}

impl IndexKind {
    /// The default approximate index: inverted lists with default parameters.
    pub fn approx() -> Self {
        IndexKind::Ivf(IvfParams::default())
    }

    /// `"flat"`, `"hnsw"` or `"ivf"`.
    pub fn name(&self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Hnsw(_) => "hnsw",
            IndexKind::Ivf(_) => "ivf",
        }
    }
}

/// A flat, HNSW or IVF index behind one concrete type (no boxing, cheap to match).
// One value per index, never in a collection: the 376-byte variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AnyIndex {
    Flat(FlatIndex),
    Hnsw(HnswIndex),
    Ivf(IvfIndex),
}

impl AnyIndex {
    pub fn new(dim: usize, kind: IndexKind) -> Result<Self> {
        Ok(match kind {
            IndexKind::Flat => AnyIndex::Flat(FlatIndex::new(dim)?),
            IndexKind::Hnsw(p) => AnyIndex::Hnsw(HnswIndex::new(dim, p)?),
            IndexKind::Ivf(p) => AnyIndex::Ivf(IvfIndex::new(dim, p)?),
        })
    }

    /// `"flat"`, `"hnsw"` or `"ivf"`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            AnyIndex::Flat(_) => "flat",
            AnyIndex::Hnsw(_) => "hnsw",
            AnyIndex::Ivf(_) => "ivf",
        }
    }

    fn inner(&self) -> &dyn VectorIndex {
        match self {
            AnyIndex::Flat(i) => i,
            AnyIndex::Hnsw(i) => i,
            AnyIndex::Ivf(i) => i,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn VectorIndex {
        match self {
            AnyIndex::Flat(i) => i,
            AnyIndex::Hnsw(i) => i,
            AnyIndex::Ivf(i) => i,
        }
    }

    /// The live ids (storage order for flat, slot order for HNSW, list by list for IVF).
    pub fn live_ids(&self) -> Vec<u64> {
        match self {
            AnyIndex::Flat(i) => i.ids().to_vec(),
            AnyIndex::Hnsw(i) => i.live_ids(),
            AnyIndex::Ivf(i) => i.live_ids(),
        }
    }

    /// The stored unit vector of `id`.
    pub fn get(&self, id: u64) -> Option<&[f32]> {
        match self {
            AnyIndex::Flat(i) => i.get(id),
            AnyIndex::Hnsw(i) => i.get(id),
            AnyIndex::Ivf(i) => i.get(id),
        }
    }

    /// Heap bytes held (vectors, codes, graph or lists, id map; for flat, estimated the same way).
    pub fn memory_bytes(&self) -> usize {
        match self {
            AnyIndex::Flat(i) => i.bytes_per_vector() * i.len(),
            AnyIndex::Hnsw(i) => i.memory_bytes(),
            AnyIndex::Ivf(i) => i.memory_bytes(),
        }
    }

    /// Reads an index written by [`VectorIndex::write_into`] with the same `prefix`.
    pub fn read_from(ck: &Checkpoint, prefix: &str) -> Result<Self> {
        let kind: String = ck.meta(&format!("{prefix}index_kind"))?;
        let dim: usize = ck.meta(&format!("{prefix}dim"))?;
        if dim == 0 || dim > validate::MAX_DIM {
            return Err(SonaError::checkpoint(format!(
                "index dimension {dim} outside [1, {}]",
                validate::MAX_DIM
            )));
        }
        match kind.as_str() {
            "flat" => Ok(AnyIndex::Flat(FlatIndex::read_from(ck, prefix, dim)?)),
            "hnsw" => Ok(AnyIndex::Hnsw(HnswIndex::read_from(ck, prefix, dim)?)),
            "ivf" => Ok(AnyIndex::Ivf(IvfIndex::read_from(ck, prefix, dim)?)),
            other => Err(SonaError::checkpoint(format!(
                "unknown index kind {other:?}"
            ))),
        }
    }
}

/// Loads an index saved with [`VectorIndex::save`].
pub fn load(path: &Path) -> Result<AnyIndex> {
    let ck = Checkpoint::load(path, CHECKPOINT_KIND, CHECKPOINT_VERSION)?;
    AnyIndex::read_from(&ck, "")
}

impl VectorIndex for AnyIndex {
    fn dim(&self) -> usize {
        self.inner().dim()
    }
    fn len(&self) -> usize {
        self.inner().len()
    }
    fn contains(&self, id: u64) -> bool {
        self.inner().contains(id)
    }
    fn get(&self, id: u64) -> Option<&[f32]> {
        AnyIndex::get(self, id)
    }
    fn add(&mut self, id: u64, vector: &[f32]) -> Result<()> {
        self.inner_mut().add(id, vector)
    }
    fn remove(&mut self, id: u64) -> Result<()> {
        self.inner_mut().remove(id)
    }
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>> {
        self.inner().search(query, k, filter)
    }
    fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<Vec<(u64, f32)>>> {
        self.inner().search_batch(queries, k, filter)
    }
    fn add_batch(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        self.inner_mut().add_batch(ids, vectors)
    }
    fn remove_batch(&mut self, ids: &[u64]) -> Result<()> {
        self.inner_mut().remove_batch(ids)
    }
    fn retrain_job(&self, upcoming: usize) -> Option<RetrainJob> {
        self.inner().retrain_job(upcoming)
    }
    fn apply_retrain(&mut self, plan: RetrainPlan) -> Result<()> {
        self.inner_mut().apply_retrain(plan)
    }
    fn write_into(&self, ck: &mut Checkpoint, prefix: &str) -> Result<()> {
        self.inner().write_into(ck, prefix)
    }
}
