//! Exact search by a full scan: one batched dot product over a contiguous row-major matrix.

use std::collections::HashMap;

use sona_core::{kernels, validate, Result, SonaError};

use super::{IdFilter, VectorIndex};

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
        if dim == 0 {
            return Err(SonaError::Config("index dimension must be > 0".into()));
        }
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
        validate::check_vec(what, v, self.dim)?;
        let mut u = v.to_vec();
        if kernels::normalize(&mut u) == 0.0 {
            return Err(SonaError::invalid(format!("{what} is the zero vector")));
        }
        Ok(u)
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

    fn add(&mut self, id: u64, vector: &[f32]) -> Result<()> {
        if self.slot.contains_key(&id) {
            return Err(SonaError::invalid(format!(
                "id {id} is already in the index"
            )));
        }
        let u = self.unit("vector", vector)?;
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.data.extend_from_slice(&u);
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<()> {
        let s = self
            .slot
            .remove(&id)
            .ok_or(SonaError::UnknownId { kind: "vector", id })?;
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
        let mut scores = vec![0.0f32; self.ids.len()];
        kernels::batch_dot(&self.data, self.ids.len(), self.dim, &q, &mut scores);
        if let Some(keep) = filter {
            for (s, &id) in scores.iter_mut().zip(&self.ids) {
                if !keep(id) {
                    *s = f32::NAN;
                }
            }
        }
        Ok(kernels::top_k(&scores, k)
            .into_iter()
            .filter(|(_, s)| !s.is_nan())
            .map(|(i, s)| (self.ids[i], s))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
