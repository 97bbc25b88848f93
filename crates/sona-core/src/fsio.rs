//! Durable file writes and bounded file reads, shared by every component that touches disk.
//!
//! A save must never report success and leave a wrong file: two saves at once (of one object, or of
//! two objects whose paths share a stem) each write their own uniquely named temporary file in the
//! target's directory, fsync it, rename it over the target and fsync the directory, so the target
//! is always one whole file from one save. Targets that exist and are not regular files (a device
//! such as `/dev/full`, a directory, a FIFO) are refused instead of being replaced.
//!
//! Reads are capped: a loader never reads more than it is willing to parse, so pointing it at
//! `/dev/zero` or a huge file is a clear error, not an exhausted machine.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Result, SonaError};

/// Largest file any SONA loader reads (a bank of 1M patterns at d = 4096 is ~16 GiB; checkpoints
/// beyond this are refused rather than read into memory).
pub const MAX_FILE_BYTES: u64 = 32 << 30;

/// Refuses a target that exists and is not a regular file (following symlinks, as `rename` would
/// replace the link itself: a link to a regular file is allowed).
fn check_target(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(SonaError::checkpoint(format!(
            "refusing to write {}: it exists and is not a regular file",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// The directory a relative or bare file name lives in.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically and durably: unique temporary file in the same directory,
/// fsync, rename over `path`, fsync the directory. On error the previous file (if any) is intact
/// and the temporary file is removed.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` (for writers that stream).
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    check_target(path)?;
    let dir = parent_dir(path);
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sona".to_string());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file_mut().sync_all()?;
    tmp.persist(path).map_err(|e| SonaError::from(e.error))?;
    sync_dir(dir)
}

/// fsyncs a directory so a rename inside it survives a power loss (a no-op where directories
/// cannot be opened for syncing).
pub fn sync_dir(dir: impl AsRef<Path>) -> Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir.as_ref())?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Reads a whole regular file of at most `max_bytes` bytes, refusing anything larger (without
/// reading it) and anything that is not a regular file.
pub fn read_capped(path: impl AsRef<Path>, max_bytes: u64) -> Result<Vec<u8>> {
    let path = path.as_ref();
    // Checked before `open` too: opening a FIFO for reading blocks until some writer opens it
    // (forever, for a crafted path), and the check after `open` would come too late.
    if !fs::metadata(path)?.is_file() {
        return Err(SonaError::checkpoint(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let file = fs::File::open(path)?;
    // Again on the open file: the path may have been replaced in between.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(SonaError::checkpoint(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > max_bytes {
        return Err(SonaError::checkpoint(format!(
            "{} is {} bytes, more than the {max_bytes} this loader accepts",
            path.display(),
            meta.len()
        )));
    }
    // The file may grow between metadata and read: never read past the cap.
    let mut out = Vec::new();
    out.try_reserve_exact(meta.len() as usize)
        .map_err(|_| SonaError::checkpoint(format!("cannot allocate {} bytes", meta.len())))?;
    file.take(max_bytes + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max_bytes {
        return Err(SonaError::checkpoint(format!(
            "{} grew past {max_bytes} bytes while being read",
            path.display()
        )));
    }
    Ok(out)
}

/// [`read_capped`] for UTF-8 text files (JSON configs).
pub fn read_text_capped(path: impl AsRef<Path>, max_bytes: u64) -> Result<String> {
    let path = path.as_ref();
    String::from_utf8(read_capped(path, max_bytes)?)
        .map_err(|_| SonaError::checkpoint(format!("{} is not UTF-8 text", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO (or a directory) is refused at once; opening a FIFO to read it would block until
    /// a writer comes, i.e. forever. Run on a thread so a regression fails instead of hanging.
    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo on this machine
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let r = (read_capped(&fifo, 1 << 20), read_capped(&d, 1 << 20));
            let _ = tx.send(r);
        });
        let (a, b) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO blocked");
        for r in [a, b] {
            assert!(
                matches!(&r, Err(SonaError::Checkpoint(m)) if m.contains("not a regular file")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.ckpt");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left behind");
    }

    #[test]
    fn concurrent_saves_of_one_path_each_leave_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shared.ckpt");
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 100_000 + i as usize]).collect();
        let all = &payloads;
        std::thread::scope(|s| {
            for pl in all {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, pl).unwrap();
                        let got = fs::read(p).unwrap();
                        assert!(all.contains(&got), "torn or foreign file");
                    }
                });
            }
        });
        // Paths sharing a stem do not share a temporary name.
        let q = dir.path().join("shared.other");
        write_atomic(&q, b"x").unwrap();
        assert!(payloads.contains(&fs::read(&p).unwrap()));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_non_regular_targets_and_sources() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_atomic(dir.path(), b"x"),
            Err(SonaError::Checkpoint(_))
        ));
        if Path::new("/dev/null").exists() {
            assert!(write_atomic("/dev/null", b"x").is_err());
            assert!(!fs::metadata("/dev/null").unwrap().file_type().is_file());
            assert!(read_capped("/dev/zero", 1 << 20).is_err());
        }
        assert!(read_capped(dir.path(), 10).is_err());
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, vec![7u8; 1000]).unwrap();
        assert_eq!(read_capped(&p, 1000).unwrap().len(), 1000);
        assert!(matches!(
            read_capped(&p, 999),
            Err(SonaError::Checkpoint(_))
        ));
        assert!(read_capped(dir.path().join("missing"), 10).is_err());
        fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_text_capped(&p, 10).is_err());
    }
}
