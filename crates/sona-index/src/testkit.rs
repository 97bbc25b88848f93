//! Shared test fixtures of the approximate indexes: the same data, oracle and bad-input contract.

use sona_core::{Checkpoint, SonaError};

use super::synthetic::{clustered_unit_vectors, recall};
use super::{load, AnyIndex, FlatIndex, VectorIndex, CHECKPOINT_KIND};

/// Fills `index` and an exact oracle with `n` clustered vectors (`n / 50` clusters) under ids
/// `7 i + 3`; returns the oracle and the data.
pub(crate) fn fill<I: VectorIndex>(index: &mut I, n: usize, seed: u64) -> (FlatIndex, Vec<f32>) {
    let dim = index.dim();
    let data = clustered_unit_vectors(n, dim, n / 50, 0.75, seed);
    let ids: Vec<u64> = (0..n as u64).map(|i| i * 7 + 3).collect();
    let mut f = FlatIndex::new(dim).unwrap();
    index.add_batch(&ids, &data).unwrap();
    f.add_batch(&ids, &data).unwrap();
    (f, data)
}

/// recall@k of `index` against the exact oracle `f` over the row-major `queries`.
pub(crate) fn recall_vs(index: &dyn VectorIndex, f: &FlatIndex, queries: &[f32], k: usize) -> f64 {
    let (mut a, mut e) = (Vec::new(), Vec::new());
    for q in queries.chunks_exact(index.dim()) {
        a.push(
            index
                .search(q, k, None)
                .unwrap()
                .iter()
                .map(|x| x.0)
                .collect(),
        );
        e.push(f.search(q, k, None).unwrap().iter().map(|x| x.0).collect());
    }
    recall(&a, &e)
}

/// Every kind of bad input to `h` (filled by [`fill`] with 16-d rows, so id 3 exists and id 1 does
/// not) is an error of the right kind and leaves `h` unchanged.
pub(crate) fn bad_input_leaves_the_index_unchanged(h: &mut dyn VectorIndex, data: &[f32]) {
    let n = h.len();
    let before = h.search(&data[..16], 10, None).unwrap();
    assert!(matches!(
        h.add(3, &data[..16]),
        Err(SonaError::InvalidInput(_))
    ));
    assert!(matches!(
        h.add(1, &data[..15]),
        Err(SonaError::Dimension { .. })
    ));
    assert!(matches!(
        h.add(1, &[f32::NAN; 16]),
        Err(SonaError::NonFinite { .. })
    ));
    assert!(h.add(1, &[0.0; 16]).is_err());
    assert!(matches!(h.remove(1), Err(SonaError::UnknownId { .. })));
    // A batch with one bad row inserts nothing.
    let mut rows = data[..48].to_vec();
    rows[40] = f32::INFINITY;
    assert!(h.add_batch(&[1, 2, 4], &rows).is_err());
    assert!(h.add_batch(&[1, 2, 1], &data[..48]).is_err());
    assert!(h.add_batch(&[1, 2, 3], &data[..48]).is_err());
    assert!(h.remove_batch(&[3, 1]).is_err());
    assert!(h.remove_batch(&[3, 3]).is_err());
    assert_eq!(h.len(), n);
    assert!(h.contains(3) && !h.contains(1));
    assert_eq!(h.search(&data[..16], 10, None).unwrap(), before);
    assert!(matches!(
        h.search(&data[..8], 1, None),
        Err(SonaError::Dimension { .. })
    ));
    assert!(h.search(&[f32::NAN; 16], 1, None).is_err());
    assert!(h.search(&data[..16], 0, None).unwrap().is_empty());
    assert_eq!(h.search(&data[..16], n + 100, None).unwrap().len(), n);
}

/// Writes `h` into a checkpoint (through bytes) and reads it back; the reloaded index must answer
/// the first 20 rows of `data` exactly as `h` does.
pub(crate) fn reload(h: &dyn VectorIndex, data: &[f32]) -> AnyIndex {
    let mut ck = Checkpoint::new(CHECKPOINT_KIND, 1);
    h.write_into(&mut ck, "idx.").unwrap();
    let bytes = ck.to_bytes().unwrap();
    let ck2 = Checkpoint::from_bytes(&bytes, CHECKPOINT_KIND, 1).unwrap();
    let back = AnyIndex::read_from(&ck2, "idx.").unwrap();
    assert_eq!(back.len(), h.len());
    for q in data.chunks_exact(h.dim()).take(20) {
        assert_eq!(
            back.search(q, 10, None).unwrap(),
            h.search(q, 10, None).unwrap()
        );
    }
    back
}

/// `save` + `load` through a file keeps the kind and size; one flipped byte is a checkpoint error.
pub(crate) fn file_round_trip_and_corruption(h: &dyn VectorIndex, kind: &str) {
    let dir = std::env::temp_dir().join(format!("sona-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("idx.sona");
    h.save(&path).unwrap();
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.kind_name(), kind);
    assert_eq!(loaded.len(), h.len());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load(&path), Err(SonaError::Checkpoint(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}
