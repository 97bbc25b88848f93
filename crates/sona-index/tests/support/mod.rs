//! Shared by the loader fuzz tests of `sona-index` and `sona-reasoning` (the latter includes this
//! file with `#[path]`): rewriting a checkpoint field by field through [`sona_core::Checkpoint`]
//! with one logical field mutated (so the checksum is valid and the loader's own checks are what
//! answer), editing and re-signing raw bytes, and a watchdog that turns a hang into a failure.

#![allow(dead_code)]

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use serde_json::Value;
use sona_core::Checkpoint;

/// One field of a checkpoint, by how it is stored.
#[derive(Debug, Clone)]
pub enum Field {
    Meta(String),
    U64(String),
    F32(String),
}

/// Edge values a crafted integer field takes (plus one drawn at random by the caller).
pub const U64_EDGES: [u64; 12] = [
    0,
    1,
    2,
    3,
    17,
    255,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    1 << 53,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// Edge values a crafted float field takes.
pub const F32_EDGES: [f32; 9] = [
    0.0,
    -1.0,
    1.0,
    0.5,
    1e30,
    -1e-30,
    f32::NAN,
    f32::INFINITY,
    f32::MIN_POSITIVE,
];

/// What to change in the chosen field: `op` picks the operation, `pos` the element (modulo the
/// length), `pick` the edge value, `random` a free value.
#[derive(Debug, Clone, Copy)]
pub struct Mutation {
    pub field: usize,
    pub op: u8,
    pub pos: usize,
    pub pick: usize,
    pub random: u64,
}

impl Mutation {
    fn u64_value(&self) -> u64 {
        if self.pick % (U64_EDGES.len() + 1) == U64_EDGES.len() {
            self.random
        } else {
            U64_EDGES[self.pick % U64_EDGES.len()]
        }
    }

    fn f32_value(&self) -> f32 {
        F32_EDGES[self.pick % F32_EDGES.len()]
    }

    fn mutate_u64(&self, v: &mut Vec<u64>) {
        let x = self.u64_value();
        match self.op % 5 {
            0 | 1 if !v.is_empty() => {
                let i = self.pos % v.len();
                v[i] = x;
            }
            2 => v.truncate(self.pos % (v.len() + 1)),
            3 => v.push(x),
            _ => v.iter_mut().for_each(|e| *e = 0),
        }
    }

    fn mutate_f32(&self, v: &mut [f32]) {
        if v.is_empty() {
            return;
        }
        match self.op % 3 {
            0 | 1 => {
                let i = self.pos % v.len();
                v[i] = self.f32_value();
            }
            _ => v.iter_mut().for_each(|e| *e = 0.0),
        }
    }

    /// Replaces one numeric leaf of `v` (or the whole value when it has none) with an edge value.
    fn mutate_json(&self, v: &mut Value) {
        let mut leaves = Vec::new();
        collect_numbers(v, &mut Vec::new(), &mut leaves);
        let replacement = match self.op % 4 {
            0 => Value::from(-1i64),
            1 => serde_json::json!(1e300),
            _ => Value::from(self.u64_value()),
        };
        if leaves.is_empty() {
            *v = replacement;
            return;
        }
        let path = &leaves[self.pos % leaves.len()];
        let mut at = v;
        for step in path {
            at = match step {
                Step::Key(k) => at.get_mut(k.as_str()).expect("path from this value"),
                Step::Index(i) => at.get_mut(*i).expect("path from this value"),
            };
        }
        *at = replacement;
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_numbers(v: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Number(_) => out.push(path.clone()),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(Step::Index(i));
                collect_numbers(x, path, out);
                path.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                path.push(Step::Key(k.clone()));
                collect_numbers(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// A copy of `src` holding `fields` (a field missing from `src` is left out), with `mutation`
/// applied to field `mutation.field % fields.len()` when given. Written through the real
/// [`Checkpoint`] writer, so the result carries a valid checksum.
pub fn rewrite(src: &Checkpoint, fields: &[Field], mutation: Option<Mutation>) -> Checkpoint {
    let target = mutation.map(|m| m.field % fields.len());
    let mut out = Checkpoint::new(src.kind(), src.version());
    for (i, f) in fields.iter().enumerate() {
        let m = mutation.filter(|_| target == Some(i));
        match f {
            Field::Meta(k) => {
                let Ok(mut v) = src.meta::<Value>(k) else {
                    continue;
                };
                if let Some(m) = m {
                    m.mutate_json(&mut v);
                }
                out.set_meta(k, &v).expect("json value");
            }
            Field::U64(k) => {
                let Ok(mut v) = src.get_u64(k) else { continue };
                if let Some(m) = m {
                    m.mutate_u64(&mut v);
                }
                out.put_u64(k, &v);
            }
            Field::F32(k) => {
                let Ok((shape, mut v)) = src.get_f32(k) else {
                    continue;
                };
                if let Some(m) = m {
                    m.mutate_f32(&mut v);
                }
                out.put_f32(k, &shape, &v);
            }
        }
    }
    out
}

/// Recomputes the trailing CRC32 of a `SONACKPT` file after its bytes were edited; `false` (and no
/// change) for any other layout.
pub fn resign(bytes: &mut [u8]) -> bool {
    if bytes.len() < 24 || !bytes.starts_with(b"SONACKPT") {
        return false;
    }
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
    true
}

/// `bytes` with its JSON header edited by `edit` and the checksum recomputed (`None` when the
/// file is not in the `SONACKPT` layout).
pub fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Option<Vec<u8>> {
    if bytes.len() < 24 || !bytes.starts_with(b"SONACKPT") {
        return None;
    }
    let hlen = u64::from_le_bytes(bytes[12..20].try_into().ok()?) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[20..20 + hlen]).ok()?;
    edit(&mut header);
    let h = serde_json::to_vec(&header).ok()?;
    let mut out = bytes[..12].to_vec();
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[20 + hlen..]);
    resign(&mut out);
    Some(out)
}

/// Runs `f` on its own thread and returns its result; a call still running after `secs` seconds
/// (a hang) or a panic fails the test with a message saying which.
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("no answer within {secs} s: a hang"),
        Err(RecvTimeoutError::Disconnected) => panic!("the call panicked (see above)"),
    }
}
