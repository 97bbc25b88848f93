//! Reader of the first container format (read-only; saving writes the current format):
//!
//! ```text
//! b"SONACKPT" | format u32 LE (= 1) | header_len u64 LE | header (JSON) | tensor data | crc32 u32 LE
//! ```
//! The CRC covers every byte before it. Every field is checked with checked arithmetic: the header
//! length against the file, each tensor's element count × dtype size and offset against the data
//! (a shape whose element count overflowed used to wrap to 0 and load as an empty tensor).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{byte_len, Checkpoint, DType, Tensor};
use crate::error::{Result, SonaError};

pub(super) const MAGIC: &[u8; 8] = b"SONACKPT";
const FORMAT: u32 = 1;

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum LegacyDType {
    F32,
    U64,
}

#[derive(Deserialize)]
struct Entry {
    dtype: LegacyDType,
    shape: Vec<usize>,
    offset: usize,
}

#[derive(Deserialize)]
struct Header {
    kind: String,
    version: u32,
    meta: BTreeMap<String, Value>,
    tensors: BTreeMap<String, Entry>,
}

/// The first-format bytes of `ck` (tensors laid out in name order).
pub(super) fn write(ck: &Checkpoint) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut dir = serde_json::Map::new();
    for (name, t) in &ck.tensors {
        let dtype = match t.dtype {
            DType::F32 => "f32",
            DType::U64 => "u64",
        };
        dir.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape, "offset": data.len()}),
        );
        data.extend_from_slice(&t.bytes);
    }
    let header = serde_json::json!({
        "kind": ck.kind, "version": ck.version, "meta": ck.meta, "tensors": dir,
    });
    let header = serde_json::to_vec(&header)
        .map_err(|e| SonaError::Internal(format!("serialising header: {e}")))?;
    let mut out = Vec::with_capacity(24 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

pub(super) fn parse(bytes: &[u8]) -> Result<Checkpoint> {
    let bad = |m: &str| SonaError::checkpoint(m.to_string());
    if bytes.len() < 24 || &bytes[..8] != MAGIC {
        return Err(bad("not a SONA checkpoint (bad magic or too short)"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch: the file is corrupted or truncated"));
    }
    let format = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(SonaError::checkpoint(format!(
            "unsupported container format {format}"
        )));
    }
    let hlen = usize::try_from(u64::from_le_bytes(
        body[12..20].try_into().expect("8 bytes"),
    ))
    .map_err(|_| bad("header length out of bounds"))?;
    let hend = 20usize
        .checked_add(hlen)
        .filter(|&e| e <= body.len())
        .ok_or_else(|| bad("header length out of bounds"))?;
    let header: Header = serde_json::from_slice(&body[20..hend])
        .map_err(|e| SonaError::checkpoint(format!("bad header: {e}")))?;
    let data = &body[hend..];
    let mut tensors = BTreeMap::new();
    for (name, e) in header.tensors {
        let dtype = match e.dtype {
            LegacyDType::F32 => DType::F32,
            LegacyDType::U64 => DType::U64,
        };
        let range = byte_len(&e.shape, dtype.size())
            .and_then(|len| Some(e.offset..e.offset.checked_add(len)?))
            .filter(|r| r.end <= data.len())
            .ok_or_else(|| SonaError::checkpoint(format!("tensor {name:?} out of bounds")))?;
        let t = Tensor {
            dtype,
            shape: e.shape,
            bytes: data[range].to_vec(),
        };
        tensors.insert(name, t);
    }
    Ok(Checkpoint {
        kind: header.kind,
        version: header.version,
        meta: header.meta,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the first format, built byte by byte as its writer did.
    pub(crate) fn legacy_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    const HEADER: &str = r#"{"kind":"test","version":2,"meta":{"lambda":0.5},"tensors":{"ids":{"dtype":"u64","shape":[2],"offset":24},"theta":{"dtype":"f32","shape":[2,3],"offset":0}}}"#;

    fn data() -> Vec<u8> {
        let mut d: Vec<u8> = (1..=6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        d.extend(7u64.to_le_bytes());
        d.extend(u64::MAX.to_le_bytes());
        d
    }

    #[test]
    fn first_format_files_still_load_and_resave_in_the_current_one() {
        let file = legacy_file(HEADER, &data());
        let c = Checkpoint::from_bytes(&file, "test", 2).unwrap();
        assert_eq!(c.meta::<f64>("lambda").unwrap(), 0.5);
        assert_eq!(c.get_f32_shaped("theta", &[2, 3]).unwrap()[5], 6.0);
        assert_eq!(c.get_u64("ids").unwrap(), vec![7, u64::MAX]);
        let again = Checkpoint::from_bytes(&c.to_bytes().unwrap(), "test", 2).unwrap();
        assert_eq!(again.tensors, c.tensors);
        // The test-only writer produces a first-format file that reads back the same.
        let first = c.to_first_format_bytes().unwrap();
        assert!(first.starts_with(MAGIC));
        let back = Checkpoint::from_bytes(&first, "test", 2).unwrap();
        assert_eq!(
            (back.tensors, back.meta),
            (c.tensors.clone(), c.meta.clone())
        );
        for i in 0..file.len() {
            let mut b = file.clone();
            b[i] ^= 0x40;
            assert!(matches!(
                Checkpoint::from_bytes(&b, "test", 2),
                Err(SonaError::Checkpoint(_))
            ));
        }
    }

    #[test]
    fn overflowing_shapes_are_refused_not_loaded_empty() {
        // 2^32 × 2^32 wraps to 0 elements in unchecked arithmetic; with a valid CRC it loaded.
        for shape in [
            "[4294967296,4294967296]",
            "[18446744073709551615,2]",
            "[4611686018427387904]",
        ] {
            let h = format!(
                r#"{{"kind":"test","version":1,"meta":{{}},"tensors":{{"w":{{"dtype":"f32","shape":{shape},"offset":0}}}}}}"#
            );
            assert!(matches!(
                Checkpoint::from_bytes(&legacy_file(&h, &[0; 16]), "test", 1),
                Err(SonaError::Checkpoint(_))
            ));
        }
        let h = r#"{"kind":"test","version":1,"meta":{},"tensors":{"w":{"dtype":"f32","shape":[2],"offset":18446744073709551615}}}"#;
        assert!(Checkpoint::from_bytes(&legacy_file(h, &[0; 16]), "test", 1).is_err());
        // A header length of 2^64 − 1 is refused before anything is read or allocated.
        let mut f = legacy_file(HEADER, &data());
        f[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        let n = f.len();
        let crc = crc32fast::hash(&f[..n - 4]);
        f[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(Checkpoint::from_bytes(&f, "test", 2).is_err());
    }
}
