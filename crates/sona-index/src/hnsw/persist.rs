//! Saving the graph as it is (rebuilding 100k × 768 vectors would take minutes) and loading it with
//! every structural invariant checked, so a file that passes the checksum but was written by a buggy
//! or hostile producer is a `Checkpoint` error rather than a panic or an out-of-bounds walk.

use std::collections::HashMap;

use parking_lot::Mutex;
use sona_core::{Checkpoint, Result, SeededRng, SonaError};

use super::{HnswIndex, HnswParams, MAX_LEVEL};
use crate::first_non_unit_row;
use crate::quant::{quantize, sign_bits};

fn bad(msg: impl Into<String>) -> SonaError {
    SonaError::checkpoint(format!("invalid hnsw index: {}", msg.into()))
}

impl HnswIndex {
    pub(super) fn write(&self, ck: &mut Checkpoint, p: &str) -> Result<()> {
        let slots = self.ids.len();
        ck.set_meta(&format!("{p}index_kind"), &"hnsw")?;
        ck.set_meta(&format!("{p}dim"), &self.dim)?;
        ck.set_meta(&format!("{p}params"), &self.params)?;
        ck.set_meta(&format!("{p}entry"), &self.entry)?;
        ck.set_meta(&format!("{p}max_level"), &self.max_level)?;
        ck.set_meta(&format!("{p}rng"), &self.rng)?;
        ck.put_u64(&format!("{p}ids"), &self.ids);
        ck.put_f32(&format!("{p}vectors"), &[slots, self.dim], &self.vectors);
        let deleted: Vec<u64> = (0..slots as u64)
            .filter(|&s| self.deleted[s as usize])
            .collect();
        ck.put_u64(&format!("{p}deleted"), &deleted);
        let levels: Vec<u64> = self.levels.iter().map(|&l| l as u64).collect();
        ck.put_u64(&format!("{p}levels"), &levels);
        let widen = |v: &[u32]| v.iter().map(|&x| x as u64).collect::<Vec<u64>>();
        ck.put_u64(&format!("{p}layer0"), &widen(&self.layer0));
        let upper: Vec<u32> = self.upper.iter().flatten().copied().collect();
        ck.put_u64(&format!("{p}upper"), &widen(&upper));
        Ok(())
    }

    pub(crate) fn read_from(ck: &Checkpoint, p: &str, dim: usize) -> Result<Self> {
        let params: HnswParams = ck.meta(&format!("{p}params"))?;
        let mut idx = HnswIndex::new(dim, params).map_err(|e| bad(e.to_string()))?;
        let entry: Option<u32> = ck.meta(&format!("{p}entry"))?;
        let max_level: usize = ck.meta(&format!("{p}max_level"))?;
        let rng: SeededRng = ck.meta(&format!("{p}rng"))?;
        let ids = ck.get_u64(&format!("{p}ids"))?;
        let slots = ids.len();
        if slots >= u32::MAX as usize {
            return Err(bad("too many slots"));
        }
        let vectors = ck.get_f32_shaped(&format!("{p}vectors"), &[slots, dim])?;
        if let Some(s) = first_non_unit_row(&vectors, dim) {
            return Err(bad(format!("vector of slot {s} is not unit-norm")));
        }

        let mut deleted = vec![false; slots];
        for s in ck.get_u64(&format!("{p}deleted"))? {
            let s = usize::try_from(s).ok().filter(|&s| s < slots);
            match s {
                Some(s) if !deleted[s] => deleted[s] = true,
                _ => return Err(bad("tombstone list out of range or repeated")),
            }
        }
        let n_deleted = deleted.iter().filter(|&&d| d).count();

        let levels = ck.get_u64(&format!("{p}levels"))?;
        if levels.len() != slots || levels.iter().any(|&l| l as usize > MAX_LEVEL) {
            return Err(bad(
                "level table has the wrong length or a level out of range",
            ));
        }
        let levels: Vec<u8> = levels.iter().map(|&l| l as u8).collect();

        match entry {
            None if slots == 0 && max_level == 0 => {}
            Some(e) if (e as usize) < slots && levels[e as usize] as usize == max_level => {}
            _ => return Err(bad("entry point inconsistent with the graph")),
        }
        if levels.iter().any(|&l| l as usize > max_level) {
            return Err(bad("a node is above the top layer"));
        }

        let narrow = |v: Vec<u64>| -> Result<Vec<u32>> {
            v.into_iter()
                .map(|x| u32::try_from(x).map_err(|_| bad("adjacency entry out of range")))
                .collect()
        };
        let m = params.m;
        let stride0 = 2 * m + 1;
        let layer0 = narrow(ck.get_u64(&format!("{p}layer0"))?)?;
        if layer0.len() != slots * stride0 {
            return Err(bad("layer-0 adjacency has the wrong length"));
        }
        let flat_upper = narrow(ck.get_u64(&format!("{p}upper"))?)?;
        // At most slots × 24 × 129 entries: no overflow, and bounded by the file's own size.
        let expected: usize = levels.iter().map(|&l| l as usize * (m + 1)).sum();
        if flat_upper.len() != expected {
            return Err(bad("upper-layer adjacency has the wrong length"));
        }
        let mut upper = Vec::with_capacity(slots);
        let mut at = 0;
        for &l in &levels {
            let len = l as usize * (m + 1);
            upper.push(flat_upper[at..at + len].to_vec());
            at += len;
        }
        // Nodes on each layer: insertion links every node to at least one other on each of its
        // layers that already had a node, and links the other way too, so once a layer holds two
        // nodes none of them has an empty list there (a zeroed graph fails this).
        let mut on_layer = [0usize; MAX_LEVEL + 1];
        for &l in &levels {
            for c in &mut on_layer[..=l as usize] {
                *c += 1;
            }
        }
        // Every list: count within capacity and non-zero when the layer has company, neighbours in
        // range, present on that layer, distinct and not the node itself.
        let mut scratch: Vec<u32> = Vec::with_capacity(2 * m);
        let mut check_list = |s: usize, list: &[u32], cap: usize, level: usize| -> Result<()> {
            let n = list[0] as usize;
            if n > cap {
                return Err(bad("neighbour count over capacity"));
            }
            if n == 0 && on_layer[level] >= 2 {
                return Err(bad(format!("slot {s} has no neighbour on layer {level}")));
            }
            scratch.clear();
            scratch.extend_from_slice(&list[1..1 + n]);
            for &t in &scratch {
                if t as usize >= slots || (levels[t as usize] as usize) < level || t as usize == s {
                    return Err(bad(
                        "neighbour out of range, not on its layer, or a self-loop",
                    ));
                }
            }
            scratch.sort_unstable();
            if scratch.windows(2).any(|w| w[0] == w[1]) {
                return Err(bad(format!("slot {s} lists a neighbour twice")));
            }
            Ok(())
        };
        for s in 0..slots {
            check_list(s, &layer0[s * stride0..(s + 1) * stride0], 2 * m, 0)?;
            for l in 1..=levels[s] as usize {
                let base = (l - 1) * (m + 1);
                check_list(s, &upper[s][base..base + m + 1], m, l)?;
            }
        }

        let mut slot_of = HashMap::with_capacity(slots - n_deleted);
        for s in 0..slots {
            if !deleted[s] && slot_of.insert(ids[s], s as u32).is_some() {
                return Err(bad(format!("live id {} appears twice", ids[s])));
            }
        }
        let mut codes = vec![0i8; vectors.len()];
        let scales = vectors
            .chunks_exact(dim)
            .zip(codes.chunks_exact_mut(dim))
            .map(|(v, c)| quantize(v, c))
            .collect();
        let words = dim.div_ceil(64);
        let mut bits = vec![0u64; slots * words];
        for (v, b) in vectors.chunks_exact(dim).zip(bits.chunks_exact_mut(words)) {
            sign_bits(v, b);
        }
        idx.bits = bits;
        idx.codes = codes;
        idx.scales = scales;
        idx.vectors = vectors;
        idx.ids = ids;
        idx.deleted = deleted;
        idx.n_deleted = n_deleted;
        idx.slot_of = slot_of;
        idx.levels = levels;
        idx.layer0 = layer0;
        idx.upper = upper;
        idx.entry = entry;
        idx.max_level = max_level;
        idx.rng = rng;
        idx.visited_pool = Mutex::new(Vec::new());
        Ok(idx)
    }
}
