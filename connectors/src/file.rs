//! Writing payloads to files in one directory, atomically.
//!
//! A reader of the directory sees either no file or the complete file, never
//! a partial one, even across a crash: the bytes go to a temporary file in the
//! same directory (same filesystem, so the rename is atomic), which is synced,
//! renamed over the final name, and the directory is synced so the rename
//! itself survives a power loss. Writing the same name again replaces the
//! file, so a retried write is harmless.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes files into one directory.
#[derive(Debug, Clone)]
pub struct FileWriter {
    dir: PathBuf,
}

impl FileWriter {
    /// A writer into `dir`, created on first write if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the temporary files that a process killed in the middle of a write left in
    /// the directory (`.NAME.PID-SEQ.tmp`, PID no longer running). Files of a process still
    /// running, and every other file, are left alone. Returns how many were removed.
    pub fn remove_leftovers(&self) -> io::Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(leftover_pid) else {
                continue;
            };
            if !process_is_running(pid) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Writes `bytes` to `dir/file_name`, replacing any existing file, and
    /// returns the path written.
    ///
    /// `file_name` must be a plain name: one containing a path separator,
    /// `..` or NUL, or empty, or `.`, fails with
    /// [`io::ErrorKind::InvalidInput`], so a name taken from a message cannot
    /// escape the directory.
    pub async fn write(&self, file_name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        check_file_name(file_name)?;
        let dir = self.dir.clone();
        let file_name = file_name.to_owned();
        let bytes = bytes.to_vec();
        // One blocking task for the whole sequence rather than a thread hop
        // per step.
        tokio::task::spawn_blocking(move || write_atomically(&dir, &file_name, &bytes))
            .await
            .map_err(io::Error::other)?
    }
}

/// The writing process's id, when `name` is one of our temporary file names.
fn leftover_pid(name: &str) -> Option<u32> {
    let stem = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, suffix) = stem.rsplit_once('.')?;
    let (pid, seq) = suffix.split_once('-')?;
    seq.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn process_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // Where /proc is not available, only our own files count as live.
    Path::new("/proc").is_dir() && Path::new("/proc").join(pid.to_string()).exists()
}

fn check_file_name(name: &str) -> io::Result<()> {
    let bad =
        name.is_empty() || name == "." || name.contains("..") || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?}: must be a plain name without separators or '..'"),
        ));
    }
    Ok(())
}

fn write_atomically(dir: &Path, file_name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    // Unique per process and call, so concurrent writes of the same name do
    // not share a temporary file; the leading dot keeps it out of most globs.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);

    fs::create_dir_all(dir)?;
    let target = dir.join(file_name);
    let temp = dir.join(format!(".{file_name}.{}-{seq}.tmp", std::process::id()));

    let written = (|| {
        let mut file = fs::File::create_new(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(target)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing on other platforms; their
/// filesystems make renames durable on their own terms.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
