//! Checkpoint directories: `save(dir)` writes every learned piece (see [`crate::persist`]) into a
//! fresh temporary directory beside `dir`, adds a `MANIFEST` (format, the log sequence number the
//! state reflects, each file's size and CRC-32), fsyncs the files and the directory, then moves the
//! current `dir` to `dir.prev` and the new one to `dir` (and fsyncs the parent). At every instant
//! one whole checkpoint exists: `dir`, or between the two renames `dir.prev`.
//!
//! `load(dir)` checks the manifest and every file against it before parsing anything; with
//! `fallback` a missing or refused `dir` falls back to `dir.prev`. After loading, the interaction
//! log written after the checkpoint's sequence number is replayed.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sona_core::fsio::{read_capped, read_text_capped, sync_dir, write_atomic, MAX_FILE_BYTES};
use sona_core::{Result, SonaError};

use crate::engine::{Engine, Inner};

/// Name of the manifest inside a checkpoint directory.
pub const MANIFEST: &str = "MANIFEST";
/// Format of the checkpoint directory (the files carry their own versions).
pub const FORMAT: u32 = 1;
/// The files every checkpoint holds.
pub const FILES: [&str; 3] = ["engine.ckpt", "ewc.ckpt", "bank.ckpt"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// What `MANIFEST` records (JSON line, then the CRC-32 of that line in hex).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kind: String,
    pub format: u32,
    /// Highest interaction-log sequence number the state reflects.
    pub log_seq: u64,
    pub files: Vec<FileEntry>,
}

fn bad(msg: impl Into<String>) -> SonaError {
    SonaError::checkpoint(msg)
}

/// `dir.prev` beside `dir`.
pub fn prev_dir(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

fn name_of(dir: &Path) -> Result<String> {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| SonaError::invalid(format!("{} has no directory name", dir.display())))
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Serialises a manifest: the JSON line and its CRC-32.
pub fn encode_manifest(m: &Manifest) -> String {
    let json = serde_json::to_string(m).expect("a manifest serialises");
    format!("{json}\n{:08x}\n", crc32fast::hash(json.as_bytes()))
}

/// Parses and checks a manifest's text.
pub fn decode_manifest(text: &str) -> Result<Manifest> {
    let mut lines = text.lines();
    let (Some(json), Some(crc), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err(bad("MANIFEST: expected two lines"));
    };
    let want =
        u32::from_str_radix(crc.trim(), 16).map_err(|_| bad("MANIFEST: bad checksum line"))?;
    if crc32fast::hash(json.as_bytes()) != want {
        return Err(bad("MANIFEST: checksum mismatch"));
    }
    let m: Manifest = serde_json::from_str(json).map_err(|e| bad(format!("MANIFEST: {e}")))?;
    if m.kind != "sona-engine-checkpoint" {
        return Err(bad(format!(
            "MANIFEST: kind {:?} is not a SONA engine checkpoint",
            m.kind
        )));
    }
    if m.format != FORMAT {
        return Err(bad(format!(
            "MANIFEST: checkpoint format {} is not {FORMAT}",
            m.format
        )));
    }
    let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    if names != FILES {
        return Err(bad(format!(
            "MANIFEST: files {names:?}, expected {FILES:?}"
        )));
    }
    Ok(m)
}

/// Checks `dir`'s manifest and that every file has the recorded size and checksum.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let text = read_text_capped(dir.join(MANIFEST), 1 << 16).map_err(|e| match e {
        SonaError::Checkpoint(_) => e,
        other => bad(format!("{}: no readable MANIFEST ({other})", dir.display())),
    })?;
    let m = decode_manifest(&text)?;
    for f in &m.files {
        let bytes = read_capped(dir.join(&f.name), MAX_FILE_BYTES.min(f.bytes))
            .map_err(|e| bad(format!("{}: {e}", f.name)))?;
        if bytes.len() as u64 != f.bytes || crc32fast::hash(&bytes) != f.crc32 {
            return Err(bad(format!(
                "{}: size or checksum does not match the MANIFEST",
                f.name
            )));
        }
    }
    Ok(m)
}

/// Whether `dir` looks like something `save` may replace (a checkpoint, or empty).
fn replaceable(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(true);
    }
    if !dir.is_dir() {
        return Ok(false);
    }
    if dir.join(MANIFEST).exists() || dir.join(FILES[0]).exists() {
        return Ok(true);
    }
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

impl Inner {
    /// Writes a checkpoint directory at `dir` (see the module docs).
    pub(crate) fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.check_open()?;
        let _one = self.durable.save_lock.lock();
        let name = name_of(dir)?;
        let parent = parent_of(dir);
        std::fs::create_dir_all(&parent)?;
        let prev = prev_dir(dir);
        if !replaceable(dir)? || !replaceable(&prev)? {
            return Err(bad(format!(
                "refusing to replace {} (or its .prev): not a SONA checkpoint directory",
                dir.display()
            )));
        }
        // Leftovers of saves that crashed before their rename.
        let stale = format!(".{name}.tmp-");
        if let Ok(rd) = std::fs::read_dir(&parent) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&stale) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix(&stale)
            .tempdir_in(&parent)?;
        let log_seq = self.save_files(tmp.path())?;
        // A checkpoint must never reflect a record the log could still lose: otherwise a crash
        // would leave the log behind the checkpoint and reuse its sequence numbers.
        if let Some(log) = &self.durable.log {
            log.wait(log_seq)?;
        }
        let mut files = Vec::with_capacity(FILES.len());
        for f in FILES {
            let bytes = read_capped(tmp.path().join(f), MAX_FILE_BYTES)?;
            files.push(FileEntry {
                name: f.into(),
                bytes: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            });
        }
        let m = Manifest {
            kind: "sona-engine-checkpoint".into(),
            format: FORMAT,
            log_seq,
            files,
        };
        write_atomic(tmp.path().join(MANIFEST), encode_manifest(&m).as_bytes())?;
        sync_dir(tmp.path())?;
        let tmp = tmp.keep();
        if dir.exists() {
            if prev.exists() {
                std::fs::remove_dir_all(&prev)?;
            }
            std::fs::rename(dir, &prev)?;
        }
        std::fs::rename(&tmp, dir)?;
        sync_dir(&parent)?;
        self.durable.checkpoints.fetch_add(1, Relaxed);
        self.durable.last_checkpoint_seq.fetch_max(log_seq, Relaxed);
        if let Some(log) = &self.durable.log {
            log.set_checkpointed(log_seq);
        }
        Ok(())
    }

    /// The periodic checkpoint of loop B (errors are counted, not raised: loop B keeps learning).
    pub(crate) fn after_cycle(&self) {
        let Some(dir) = self.cfg.checkpoint_dir.as_deref() else {
            return;
        };
        let every = self.cfg.checkpoint_every_cycles.max(1);
        if self.loop_b_runs.load(Relaxed).is_multiple_of(every)
            && self.checkpoint(Path::new(dir)).is_err()
        {
            self.durable.checkpoint_errors.fetch_add(1, Relaxed);
        }
    }
}

impl Engine {
    /// Saves every learned piece as one checkpoint directory `dir`, keeping the previous one as
    /// `dir.prev` (see the module docs).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.inner.checkpoint(dir)
    }

    /// Loads the checkpoint at `dir` (refusing a mismatched or corrupted one with
    /// [`SonaError::Checkpoint`]) and replays the interaction log written after it.
    pub fn load(dir: &Path) -> Result<Engine> {
        Self::load_with(dir, false)
    }

    /// [`Engine::load`]; with `fallback`, a missing or refused `dir` falls back to `dir.prev`.
    pub fn load_with(dir: &Path, fallback: bool) -> Result<Engine> {
        match Self::load_one(dir) {
            Ok(e) => Ok(e),
            Err(e) if fallback => {
                let prev = prev_dir(dir);
                Self::load_one(&prev).map_err(|e2| {
                    bad(format!(
                        "{}: {e}; fallback {}: {e2}",
                        dir.display(),
                        prev.display()
                    ))
                })
            }
            Err(e) => Err(e),
        }
    }

    fn load_one(dir: &Path) -> Result<Engine> {
        let m = verify(dir)?;
        let (inner, seq) = Inner::load_files(dir)?;
        if seq != m.log_seq {
            return Err(bad(
                "MANIFEST and engine.ckpt disagree on the log sequence number",
            ));
        }
        inner.durable.last_checkpoint_seq.store(seq, Relaxed);
        if let Some(log) = &inner.durable.log {
            // New records must come after everything the checkpoint reflects, even if retention
            // emptied the log.
            log.advance_to(seq);
            log.set_checkpointed(seq);
        }
        let inner = Arc::new(inner);
        inner.replay_log(seq)?;
        Ok(Engine::start(inner))
    }
}

impl Engine {
    /// Waits until every record handed to the interaction log so far is committed (a no-op
    /// without a log).
    pub fn flush_log(&self) -> Result<()> {
        match &self.inner.durable.log {
            Some(log) => log.flush(),
            None => Ok(()),
        }
    }
}

/// Recomputes the sizes and checksums of `dir`'s MANIFEST from the files as they are now: for
/// tools (and fuzz tests) that rewrite a checkpoint file on purpose through the checkpoint
/// writer, whose own format checks then still apply.
pub fn reseal(dir: &Path) -> Result<()> {
    let text = read_text_capped(dir.join(MANIFEST), 1 << 16)?;
    let mut m = decode_manifest(&text)?;
    for f in &mut m.files {
        let b = read_capped(dir.join(&f.name), MAX_FILE_BYTES)?;
        f.bytes = b.len() as u64;
        f.crc32 = crc32fast::hash(&b);
    }
    write_atomic(dir.join(MANIFEST), encode_manifest(&m).as_bytes())
}
