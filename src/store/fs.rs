//! Durable writes: new files with their final mode from the first byte, atomic replacement
//! (temp file, fsync, rename, fsync of the directory), and the names of temp files.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(super) fn ensure_newline(s: &str) -> String {
    let s = s.trim();
    format!("{s}\n")
}

/// Creates a new file with its final mode from the first byte, writes and fsyncs it.
pub(super) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Per directory, the temp files and links this process made there that are neither renamed
/// into place nor removed yet. One left (a write that failed, or one a panic cut short) means
/// the directory may hold a leftover: the state directory's lock then records no clean end, and
/// the next run sweeps.
static UNSETTLED: std::sync::Mutex<BTreeMap<PathBuf, usize>> = std::sync::Mutex::new(BTreeMap::new());

fn unsettled_in() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, usize>> {
    UNSETTLED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a temp file or link about to be made in `dir`; [`settled`] once it is renamed into place.
pub(super) fn unsettled(dir: &Path) {
    *unsettled_in().entry(dir.to_path_buf()).or_default() += 1;
}

pub(super) fn settled(dir: &Path) {
    let mut all = unsettled_in();
    if let Some(n) = all.get_mut(dir) {
        *n -= 1;
        if *n == 0 {
            all.remove(dir);
        }
    }
}

/// Whether every temp file and link this process made in `dirs` is renamed into place.
pub(super) fn all_settled(dirs: &[PathBuf]) -> bool {
    let all = unsettled_in();
    dirs.iter().all(|d| !all.contains_key(d))
}

/// Replaces `path` durably: temp file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a file needs a parent directory"))?;
    let tmp = temp_path(path);
    unsettled(dir);
    if let Err(e) = write_new(&tmp, bytes, mode) {
        // A temp file left by a killed process that had our PID.
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        fs::remove_file(&tmp)?;
        write_new(&tmp, bytes, mode)?;
    }
    crate::pause::pause_for_tests("replacing", path.to_str().unwrap_or("a file"));
    fs::rename(&tmp, path)?;
    settled(dir);
    sync_dir(dir)
}

/// Where `write_atomic` writes before the rename: in the same directory, named by this process
/// and a hash of the file's name (fixed length, so it fits wherever the name fits; distinct per
/// file, so that concurrent writes of different files never share one).
pub(super) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".tmp-{}-{}", pid(), short_hash(name)))
}

/// 16 hex digits of SHA-256.
pub(super) fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// This process's id, asked of the kernel once.
pub(super) fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
