//! The project's checkpoint container: one file, versioned, checksummed, with named tensors.
//!
//! ```text
//! b"SONACKPT" | format u32 LE | header_len u64 LE | header (JSON) | tensor data | crc32 u32 LE
//! ```
//! The JSON header holds the component `kind` (e.g. `"ewc"`), the component's own `version`, free-form
//! `meta` and the tensor directory (name, dtype, shape, byte offset). Tensor data is little-endian.
//! The CRC covers every byte before it, so truncation or a flipped bit is a [`SonaError::Checkpoint`],
//! never a panic or a silently wrong model. Files are written through [`crate::fsio`] (unique
//! temporary file, fsync, rename), so a crash mid-write leaves the previous checkpoint intact.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, SonaError};

const MAGIC: &[u8; 8] = b"SONACKPT";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DType {
    F32,
    U64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    offset: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    kind: String,
    version: u32,
    meta: BTreeMap<String, Value>,
    tensors: BTreeMap<String, Entry>,
}

/// A checkpoint being written or one that was read.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    header: Header,
    data: Vec<u8>,
}

impl Checkpoint {
    /// An empty checkpoint for component `kind` at the component's format `version`.
    pub fn new(kind: &str, version: u32) -> Self {
        Checkpoint {
            header: Header {
                kind: kind.to_string(),
                version,
                meta: BTreeMap::new(),
                tensors: BTreeMap::new(),
            },
            data: Vec::new(),
        }
    }

    pub fn kind(&self) -> &str {
        &self.header.kind
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Stores any serialisable value under `key`.
    pub fn set_meta<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        let v = serde_json::to_value(value)
            .map_err(|e| SonaError::Internal(format!("serialising {key}: {e}")))?;
        self.header.meta.insert(key.to_string(), v);
        Ok(())
    }

    /// Reads the value stored under `key`.
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self
            .header
            .meta
            .get(key)
            .ok_or_else(|| SonaError::checkpoint(format!("missing field {key:?}")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| SonaError::checkpoint(format!("field {key:?}: {e}")))
    }

    fn push(&mut self, name: &str, dtype: DType, shape: &[usize], bytes: impl Iterator<Item = u8>) {
        let offset = self.data.len();
        self.data.extend(bytes);
        self.header.tensors.insert(
            name.to_string(),
            Entry {
                dtype,
                shape: shape.to_vec(),
                offset,
            },
        );
    }

    /// Stores an `f32` tensor; `shape`'s product must equal `values.len()`.
    pub fn put_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "put_f32 {name}: shape"
        );
        self.push(
            name,
            DType::F32,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()),
        );
    }

    /// Stores a `u64` vector.
    pub fn put_u64(&mut self, name: &str, values: &[u64]) {
        self.push(
            name,
            DType::U64,
            &[values.len()],
            values.iter().flat_map(|v| v.to_le_bytes()),
        );
    }

    fn entry(&self, name: &str, dtype: DType) -> Result<(&Entry, usize)> {
        let e = self
            .header
            .tensors
            .get(name)
            .ok_or_else(|| SonaError::checkpoint(format!("missing tensor {name:?}")))?;
        if e.dtype != dtype {
            return Err(SonaError::checkpoint(format!(
                "tensor {name:?} has dtype {:?}",
                e.dtype
            )));
        }
        // Checked: a crafted shape whose product overflows must not wrap to a small count.
        let n = e
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| SonaError::checkpoint(format!("tensor {name:?}: shape overflows")))?;
        let elem = match dtype {
            DType::F32 => 4,
            DType::U64 => 8,
        };
        let in_bounds = n
            .checked_mul(elem)
            .and_then(|len| e.offset.checked_add(len))
            .is_some_and(|end| end <= self.data.len());
        if !in_bounds {
            return Err(SonaError::checkpoint(format!(
                "tensor {name:?} out of bounds"
            )));
        }
        Ok((e, n))
    }

    /// Reads an `f32` tensor and its shape.
    pub fn get_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (e, n) = self.entry(name, DType::F32)?;
        let bytes = &self.data[e.offset..e.offset + 4 * n];
        let v = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((e.shape.clone(), v))
    }

    /// Reads an `f32` tensor that must have exactly `shape`.
    pub fn get_f32_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self.get_f32(name)?;
        if s != shape {
            return Err(SonaError::checkpoint(format!(
                "tensor {name:?} has shape {s:?}, expected {shape:?}"
            )));
        }
        Ok(v)
    }

    /// Reads a `u64` vector.
    pub fn get_u64(&self, name: &str) -> Result<Vec<u64>> {
        let (e, n) = self.entry(name, DType::U64)?;
        let bytes = &self.data[e.offset..e.offset + 8 * n];
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = serde_json::to_vec(&self.header)
            .map_err(|e| SonaError::Internal(format!("serialising header: {e}")))?;
        let mut out = Vec::with_capacity(24 + header.len() + self.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.data);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses bytes, checking magic, format, checksum, `kind` and that `version <= max_version`.
    pub fn from_bytes(bytes: &[u8], kind: &str, max_version: u32) -> Result<Self> {
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
        let hlen = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes")) as usize;
        let hend = 20usize
            .checked_add(hlen)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("header length out of bounds"))?;
        let header: Header = serde_json::from_slice(&body[20..hend])
            .map_err(|e| SonaError::checkpoint(format!("bad header: {e}")))?;
        if header.kind != kind {
            return Err(SonaError::checkpoint(format!(
                "this is a {:?} checkpoint, expected {kind:?}",
                header.kind
            )));
        }
        if header.version > max_version {
            return Err(SonaError::checkpoint(format!(
                "{kind} checkpoint version {} is newer than supported ({max_version})",
                header.version
            )));
        }
        let ck = Checkpoint {
            header,
            data: body[hend..].to_vec(),
        };
        // Validate every tensor's bounds up front so later reads cannot fail half-way.
        for (name, e) in &ck.header.tensors {
            ck.entry(name, e.dtype)?;
        }
        Ok(ck)
    }

    /// Writes atomically and durably (see [`crate::fsio::write_atomic`]): a unique temporary file
    /// in the target's directory, fsync, rename, fsync of the directory.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fsio::write_atomic(path, &self.to_bytes()?)
    }

    /// Reads and validates a file (see [`Checkpoint::from_bytes`]); files larger than
    /// [`crate::fsio::MAX_FILE_BYTES`] or that are not regular files are refused unread.
    pub fn load(path: impl AsRef<Path>, kind: &str, max_version: u32) -> Result<Self> {
        let bytes = crate::fsio::read_capped(path, crate::fsio::MAX_FILE_BYTES)?;
        Self::from_bytes(&bytes, kind, max_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new("test", 2);
        c.set_meta("lambda", &0.5f64).unwrap();
        c.put_f32("theta", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        c.put_u64("ids", &[7, 8, u64::MAX]);
        c
    }

    #[test]
    fn round_trip_is_exact() {
        let bytes = sample().to_bytes().unwrap();
        let c = Checkpoint::from_bytes(&bytes, "test", 2).unwrap();
        assert_eq!(c.meta::<f64>("lambda").unwrap(), 0.5);
        assert_eq!(c.get_f32_shaped("theta", &[2, 3]).unwrap()[5], 6.0);
        assert_eq!(c.get_u64("ids").unwrap(), vec![7, 8, u64::MAX]);
        assert!(c.get_f32_shaped("theta", &[3, 2]).is_err());
        assert!(c.get_u64("theta").is_err());
        assert!(c.meta::<f64>("missing").is_err());
    }

    #[test]
    fn every_corruption_is_a_checkpoint_error() {
        let bytes = sample().to_bytes().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(matches!(
                Checkpoint::from_bytes(&b, "test", 2),
                Err(SonaError::Checkpoint(_))
            ));
        }
        for n in 0..bytes.len() {
            assert!(Checkpoint::from_bytes(&bytes[..n], "test", 2).is_err());
        }
        assert!(Checkpoint::from_bytes(&bytes, "other", 2).is_err());
        assert!(Checkpoint::from_bytes(&bytes, "test", 1).is_err());
    }
}
