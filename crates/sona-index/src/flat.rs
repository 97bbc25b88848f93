//! Exact search by a full scan: one batched dot product over a contiguous row-major matrix.

use std::collections::HashMap;

use sona_core::{kernels, Checkpoint, Result, SonaError};

use super::{check_batch, first_non_unit_row, new_entry, unit_vector, IdFilter, VectorIndex};

/// Exact index: rows are stored contiguously; delete swaps the last row into the hole.
#[derive(Debug, Clone, Default)]
pub struct FlatIndex {
    dim: usize,
    data: Vec<f32>,
    ids: Vec<u64>,
    slot: HashMap<u64, usize>,
}

impl FlatIndex {
    pub fn new(dim: usize) -> Result<Self> {
        crate::check_dim(dim)?;
        Ok(FlatIndex {
            dim,
            ..Default::default()
        })
    }

    /// Ids in storage order.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The stored (unit-norm) vector of `id`.
    pub fn get(&self, id: u64) -> Option<&[f32]> {
        self.slot
            .get(&id)
            .map(|&s| &self.data[s * self.dim..(s + 1) * self.dim])
    }

    pub(crate) fn unit(&self, what: &str, v: &[f32]) -> Result<Vec<f32>> {
        unit_vector(what, v, self.dim)
    }

    /// Bytes held per stored vector (payload, id, and the id→row map entry, approximately).
    pub fn bytes_per_vector(&self) -> usize {
        // A hashbrown entry is the (key, value) pair plus one control byte, at load factor ≤ 7/8.
        self.dim * 4 + 8 + (16 + 1) * 8 / 7
    }

    /// Reads an index written by [`VectorIndex::write_into`] under `prefix`, checking that ids are
    /// unique and rows unit-norm (rows are taken as stored, so a reload is bit-identical).
    pub(crate) fn read_from(ck: &Checkpoint, prefix: &str, dim: usize) -> Result<Self> {
        let mut idx = FlatIndex::new(dim)
            .map_err(|e| SonaError::checkpoint(format!("bad index header: {e}")))?;
        let ids = ck.get_u64(&format!("{prefix}ids"))?;
        let data = ck.get_f32_shaped(&format!("{prefix}vectors"), &[ids.len(), dim])?;
        if let Some(i) = first_non_unit_row(&data, dim) {
            return Err(SonaError::checkpoint(format!(
                "invalid flat index: row {i} is not unit-norm"
            )));
        }
        for (i, &id) in ids.iter().enumerate() {
            if idx.slot.insert(id, i).is_some() {
                return Err(SonaError::checkpoint(format!(
                    "invalid flat index: id {id} appears twice"
                )));
            }
        }
        idx.ids = ids;
        idx.data = data;
        Ok(idx)
    }

    /// Scores of every row against a unit query.
    fn scores(&self, q: &[f32]) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.ids.len()];
        kernels::batch_dot(&self.data, self.ids.len(), self.dim, q, &mut scores);
        scores
    }
}

impl VectorIndex for FlatIndex {
    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn contains(&self, id: u64) -> bool {
        self.slot.contains_key(&id)
    }

    fn get(&self, id: u64) -> Option<&[f32]> {
        FlatIndex::get(self, id)
    }

    fn add(&mut self, id: u64, vector: &[f32]) -> Result<()> {
        let u = new_entry(self, id, vector)?;
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.data.extend_from_slice(&u);
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<()> {
        let s = self.slot.remove(&id).ok_or(SonaError::UnknownId {
            kind: "vector",
            id: id.into(),
        })?;
        let last = self.ids.len() - 1;
        if s != last {
            let moved = self.ids[last];
            self.data
                .copy_within(last * self.dim..(last + 1) * self.dim, s * self.dim);
            self.ids[s] = moved;
            self.slot.insert(moved, s);
        }
        self.ids.pop();
        self.data.truncate(last * self.dim);
        Ok(())
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<IdFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>> {
        let q = self.unit("query", query)?;
        // Never more than the stored count: a huge `k` must not size any buffer.
        let k = k.min(self.len());
        match filter {
            None => Ok(kernels::top_k(&self.scores(&q), k)
                .into_iter()
                .map(|(i, s)| (self.ids[i], s))
                .collect()),
            Some(keep) => {
                // Select among the rows that pass only, so a filter never returns fewer than
                // min(k, passing rows) hits. Rows are scored one by one: a selective filter then
                // costs only the predicate for most rows.
                let (mut rows, mut scores) = (Vec::new(), Vec::new());
                for (i, &id) in self.ids.iter().enumerate() {
                    if keep(id) {
                        rows.push(i);
                        scores.push(kernels::dot(
                            &self.data[i * self.dim..(i + 1) * self.dim],
                            &q,
                        ));
                    }
                }
                Ok(kernels::top_k(&scores, k)
                    .into_iter()
                    .map(|(j, s)| (self.ids[rows[j]], s))
                    .collect())
            }
        }
    }

    fn add_batch(&mut self, ids: &[u64], vectors: &[f32]) -> Result<()> {
        check_batch(self, ids, vectors)?;
        self.data.reserve(vectors.len());
        self.ids.reserve(ids.len());
        self.slot.reserve(ids.len());
        for (&id, row) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            let start = self.data.len();
            self.data.extend_from_slice(row);
            kernels::normalize(&mut self.data[start..]);
            self.slot.insert(id, self.ids.len());
            self.ids.push(id);
        }
        Ok(())
    }

    fn write_into(&self, ck: &mut Checkpoint, prefix: &str) -> Result<()> {
        ck.set_meta(&format!("{prefix}index_kind"), &"flat")?;
        ck.set_meta(&format!("{prefix}dim"), &self.dim)?;
        ck.put_u64(&format!("{prefix}ids"), &self.ids);
        ck.put_f32(
            &format!("{prefix}vectors"),
            &[self.ids.len(), self.dim],
            &self.data,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnyIndex, HnswParams, IndexKind, IvfParams};

    /// Finite vectors whose squared norm overflows (entries near 1e38) or underflows (denormal
    /// entries) have a direction: every kind stores and finds them, one at a time and in batches.
    #[test]
    fn huge_and_denormal_vectors_are_accepted_by_every_kind() {
        let kinds = [
            IndexKind::Flat,
            IndexKind::Hnsw(HnswParams::default()),
            IndexKind::Ivf(IvfParams::default()),
        ];
        for kind in kinds {
            let mut idx = AnyIndex::new(4, kind).unwrap();
            let huge = [3.4e38f32, 0.0, 3.4e38, 0.0];
            let tiny = [0.0f32, 1e-45, 0.0, 0.0];
            idx.add_batch(&[1, 2], &[huge, tiny].concat()).unwrap();
            idx.add(3, &[-1e38, 0.0, 0.0, 0.0]).unwrap();
            let h = idx.get(1).unwrap();
            assert!(
                (h[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
                "{h:?}"
            );
            assert_eq!(idx.get(2).unwrap(), &[0.0, 1.0, 0.0, 0.0]);
            assert_eq!(
                idx.search(&[1e38, 0.0, 1e38, 0.0], 1, None).unwrap()[0].0,
                1
            );
            assert_eq!(
                idx.search(&[0.0, 1e-40, 0.0, 0.0], 1, None).unwrap()[0].0,
                2
            );
            let rows = idx.search_batch(&[huge, tiny].concat(), 1, None).unwrap();
            assert_eq!((rows[0][0].0, rows[1][0].0), (1, 2));
            // Zero is still refused, with the index unchanged.
            assert!(idx.add(4, &[0.0; 4]).is_err());
            assert!(idx.add_batch(&[4], &[0.0; 4]).is_err());
            assert!(idx.search(&[0.0, -0.0, 0.0, 0.0], 1, None).is_err());
            assert_eq!(idx.len(), 3);
        }
    }

    #[test]
    fn add_search_remove() {
        let mut idx = FlatIndex::new(3).unwrap();
        idx.add(10, &[1.0, 0.0, 0.0]).unwrap();
        idx.add(11, &[0.0, 2.0, 0.0]).unwrap();
        idx.add(12, &[1.0, 1.0, 0.0]).unwrap();
        let hits = idx.search(&[1.0, 0.1, 0.0], 2, None).unwrap();
        assert_eq!(hits[0].0, 10);
        assert_eq!(hits[1].0, 12);
        idx.remove(10).unwrap();
        assert_eq!(idx.search(&[1.0, 0.1, 0.0], 1, None).unwrap()[0].0, 12);
        assert!(idx.remove(10).is_err());
        assert!(idx.add(11, &[1.0, 0.0, 0.0]).is_err());
        assert!(idx.add(13, &[0.0, 0.0, 0.0]).is_err());
        let only_11 = |id: u64| id == 11;
        assert_eq!(
            idx.search(&[1.0, 0.0, 0.0], 5, Some(&only_11))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn filtered_search_returns_k_passing_rows() {
        let mut idx = FlatIndex::new(2).unwrap();
        for i in 0..100u64 {
            let a = i as f32 * 0.01;
            idx.add(i, &[a.cos(), a.sin()]).unwrap();
        }
        // The best rows fail the filter: the next passing ones must still fill k.
        let odd = |id: u64| id % 2 == 1;
        let hits = idx.search(&[1.0, 0.0], 5, Some(&odd)).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            vec![1, 3, 5, 7, 9]
        );
    }

    #[test]
    fn batch_is_all_or_nothing_and_save_load_is_exact() {
        let mut idx = FlatIndex::new(3).unwrap();
        idx.add_batch(&[1, 2], &[1.0, 2.0, 3.0, -1.0, 0.5, 0.0])
            .unwrap();
        let bad = [0.0, 1.0, 0.0, f32::NAN, 0.0, 0.0];
        assert!(idx.add_batch(&[3, 4], &bad).is_err());
        assert!(idx.add_batch(&[3, 1], &[1.0; 6]).is_err());
        assert!(idx.add_batch(&[3, 3], &[1.0; 6]).is_err());
        assert!(idx.add_batch(&[3], &[1.0; 6]).is_err());
        assert_eq!(idx.len(), 2);
        assert!(idx.remove_batch(&[1, 9]).is_err());
        assert!(idx.contains(1));

        let mut ck = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
        idx.write_into(&mut ck, "f.").unwrap();
        let back = crate::AnyIndex::read_from(&ck, "f.").unwrap();
        assert_eq!(back.kind_name(), "flat");
        assert_eq!(back.get(2).unwrap(), idx.get(2).unwrap());
        let mut dup = Checkpoint::new(crate::CHECKPOINT_KIND, 1);
        idx.write_into(&mut dup, "").unwrap();
        dup.put_u64("ids", &[2, 2]);
        assert!(matches!(
            crate::AnyIndex::read_from(&dup, ""),
            Err(SonaError::Checkpoint(_))
        ));
    }
}
