//! Everything certkeeper writes to disk, and the only module that does.
//!
//! - `state_dir/certs/NAME.json` (0600): the state of one certificate and the journal of its
//!   order in flight, the order's new key included; replaced durably (temp file, fsync, rename,
//!   fsync of the directory). Its format is in [`state`].
//! - `live_dir/.generations/NAME/N/{cert,chain,fullchain,privkey}.pem`: each issuance, and
//!   `live_dir/NAME`: a symlink to the live generation, switched with one atomic rename ([`live`]).
//! - `state_dir/lock`: held with an exclusive lock while certkeeper works; holds the PID, and
//!   after a clean end a second line saying so (the next run need not sweep, [`Lock`]).
//! - `state_dir/campaign.json` and `campaign.log`: a mass reissue in progress ([`campaign`]).
//!
//! Names become path components only after `config::is_hostname` accepted them; every directory
//! is checked by `host` before it is used.

mod campaign;
mod fs;
mod live;
mod state;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use campaign::{Campaign, CampaignEvent, CampaignLog};
pub use fs::write_atomic;
pub use live::{Generation, KeyAccess, files};
pub use state::*;

use crate::host;

/// The on-disk layout.
#[derive(Clone, Debug)]
pub struct Store {
    pub state_dir: PathBuf,
    pub live_dir: PathBuf,
    pub keep: usize,
    /// In a fleet, whether each state saved also goes to etcd (the leader's agent), or stays on
    /// this host (what a member installs from the leader's material).
    pub shared: bool,
}

/// The state and live directories, opened once for a look at every certificate (a no-op run
/// at 100,000 certificates is that look): each certificate's state file and live key are then
/// found from them, one name or a few to resolve instead of the whole path, twice per
/// certificate. Held for one look only, so that a directory replaced meanwhile is not read
/// for long.
#[derive(Debug)]
pub struct Look {
    certs: std::os::fd::OwnedFd,
    live: std::os::fd::OwnedFd,
}

/// An exclusive hold on the state directory; released when dropped or when the process dies.
///
/// Released by a process that knows its directories hold no leftover of an interrupted write
/// (it found them so, or swept them, and every temp file it made since is renamed into place),
/// the lock file says so on its second line ([`ENDED_CLEANLY`]); the next holder then skips the
/// sweep, which at 100,000 certificates lists 200,000 directory entries. A run that is killed,
/// panics or fails a write leaves only its PID there, and the next run sweeps.
#[derive(Debug)]
pub struct Lock {
    file: File,
    /// Whether the directories are known to hold no leftover.
    clean: bool,
    /// The directories swept: state, state/certs, live.
    dirs: [PathBuf; 3],
}

/// The lock file's second line after a clean end.
pub const ENDED_CLEANLY: &str = "ended with nothing half-written";

impl Lock {
    /// Whether the last holder ended cleanly (so that there is nothing to sweep).
    pub fn found_clean(&self) -> bool {
        self.clean
    }

    /// Removes what a run killed mid-write (or a full disk) left behind: temp state files and
    /// temp symlinks. Called with the lock held, so nothing else is writing them. A certificate's
    /// temp generations are swept when its next generation is written
    /// ([`Store::write_generation`]): a run with nothing due reads no certificate's directory.
    /// The certificate-state and live directories (at 100,000 certificates, 200,000 entries)
    /// are skipped when the last holder ended cleanly; the state directory itself, a handful
    /// of entries, is always swept: a campaign command hands its plan to a running daemon by
    /// writing there without the lock.
    pub fn sweep(&mut self) {
        let [state, rest @ ..] = &self.dirs;
        let mut all = sweep_dir(state);
        if !self.clean {
            for dir in rest {
                all &= sweep_dir(dir);
            }
        }
        self.clean = all;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::unix::fs::FileExt;
        if self.clean && fs::all_settled(&self.dirs) && !std::thread::panicking() {
            let _ = self.file.set_len(0).and_then(|()| {
                self.file
                    .write_all_at(format!("{}\n{ENDED_CLEANLY}\n", std::process::id()).as_bytes(), 0)
            });
        }
    }
}

impl Store {
    pub fn new(state_dir: &Path, live_dir: &Path, keep: usize) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            live_dir: live_dir.to_path_buf(),
            keep,
            shared: true,
        }
    }

    /// Creates the directories (state 0700, live 0755) or checks the existing ones: each must be
    /// a real directory of root's or certkeeper's user, writable by nobody else, under parents
    /// nobody else can write (see `host`).
    pub fn prepare(&self) -> io::Result<()> {
        host::check_parents(&self.state_dir)?;
        host::check_parents(&self.live_dir)?;
        host::ensure_dir(&self.state_dir, 0o700)?;
        host::ensure_dir(&self.state_dir.join("certs"), 0o700)?;
        host::ensure_dir(&self.live_dir, 0o755)?;
        host::ensure_dir(&self.live_dir.join(".generations"), 0o755)
    }

    /// Takes the exclusive lock, or says which process holds it.
    pub fn lock(&self) -> Result<Lock, String> {
        let path = self.state_dir.join("lock");
        // Never through a link, and nothing is truncated before it proves to be our own file.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
            .open(&path)
            .map_err(|e| {
                format!(
                    "cannot open {} (it must be a regular file, not a link): {e}",
                    path.display()
                )
            })?;
        let meta = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() || !host::trusted_owner(std::os::unix::fs::MetadataExt::uid(&meta)) {
            return Err(format!(
                "{} is not a regular file of root's or certkeeper's user; remove it",
                path.display()
            ));
        }
        match file.try_lock() {
            Ok(()) => {
                use std::io::Read as _;
                use std::os::unix::fs::FileExt;
                let mut before = String::new();
                let clean = (&file).take(256).read_to_string(&mut before).is_ok()
                    && before.lines().nth(1) == Some(ENDED_CLEANLY);
                // The PID is for the message another process shows (read from the page cache
                // while this one holds the lock); the lock itself is the kernel's, gone with the
                // process. Nothing needs it on disk, so it is not synced (a clean end lost in a
                // crash costs the next run a sweep).
                file.set_len(0)
                    .and_then(|_| file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Lock {
                    file,
                    clean,
                    dirs: [
                        self.state_dir.clone(),
                        self.state_dir.join("certs"),
                        self.live_dir.clone(),
                    ],
                })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Err(format!(
                    "another certkeeper (PID {}) is using {}; only one may run at a time",
                    holder.lines().next().unwrap_or_default().trim(),
                    self.state_dir.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("certs").join(format!("{name}.json"))
    }

    /// The certificate's state; a fresh one if none was saved. A state written by a newer
    /// certkeeper (a higher `version`) is refused, and so never rewritten in the older format.
    pub fn load(&self, name: &str) -> io::Result<CertState> {
        self.load_from(None, name)
    }

    /// Opens the directories a look at every certificate reads ([`Look`]).
    pub fn look(&self) -> io::Result<Look> {
        let open = |dir: &Path| {
            rustix::fs::open(
                dir,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", dir.display())))
        };
        Ok(Look {
            certs: open(&self.state_dir.join("certs"))?,
            live: open(&self.live_dir)?,
        })
    }

    /// [`Store::load`], through `look`'s directory when given.
    pub fn load_from(&self, look: Option<&Look>, name: &str) -> io::Result<CertState> {
        let path = self.state_path(name);
        let read = |trust_short| match look {
            Some(look) => rustix::fs::openat(
                &look.certs,
                format!("{name}.json"),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(io::Error::from)
            .and_then(|fd| read_state_from(File::from(fd), &path, trust_short)),
            None => File::open(&path).and_then(|file| read_state_from(file, &path, trust_short)),
        };
        match read(true) {
            Ok(bytes) => {
                let st: CertState = match serde_json::from_slice(&bytes) {
                    Ok(st) => st,
                    Err(_) => serde_json::from_slice(&read(false)?)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
                };
                if st.version > STATE_VERSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} was written by a newer certkeeper (state format {}, this one knows up to {STATE_VERSION}); run that version, or upgrade this one, and leave the file as it is",
                            path.display(),
                            st.version
                        ),
                    ));
                }
                Ok(st)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(CertState {
                version: STATE_VERSION,
                name: name.to_string(),
                ..CertState::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Replaces the state durably. In a fleet the leader's state goes to etcd first (sealed,
    /// and only while this member leads): a save that etcd did not take fails, so nothing that
    /// follows a journal step happens without the step being where the next leader finds it.
    pub fn save(&self, state: &CertState) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        #[cfg(feature = "cluster")]
        if self.shared {
            crate::cluster::replicate(state, &bytes)?;
        }
        write_atomic(&self.state_path(&state.name), &bytes, 0o600)?;
        #[cfg(feature = "cluster")]
        if self.shared {
            crate::cluster::saved(self, state);
        }
        Ok(())
    }

    /// Every certificate name with a state file.
    pub fn known_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.state_dir.join("certs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    /// Where contacts created from details are remembered.
    pub fn contacts_path(&self) -> PathBuf {
        self.state_dir.join("contacts.json")
    }

    /// Replaces contacts.json. In a fleet the leader's then goes to etcd (sealed, fenced), so
    /// that the next leader does not create the same contacts again; a copy etcd did not take
    /// is logged, and this host still remembers the contact (it exists at the API).
    pub fn write_contacts(&self, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.contacts_path(), bytes, 0o600)?;
        #[cfg(feature = "cluster")]
        if self.shared
            && let Err(e) = crate::cluster::replicate_contacts(bytes)
        {
            tracing::error!(error = %e, "the fleet may create these contacts again after a change of leader");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Removes the leftovers of interrupted writes (`.tmp-*`, `.switch-*`) in `dir`; returns
/// whether none is left (not when the directory or an entry could not be read).
pub(crate) fn sweep_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut all = true;
    for entry in entries {
        let Ok(entry) = entry else {
            all = false;
            continue;
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(".tmp-") || name.starts_with(".switch-")) {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "removed a leftover of an interrupted write"),
            Err(e) => {
                all = false;
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover of an interrupted write")
            }
        }
    }
    all
}

/// The largest state file read: far above what a certificate's state grows to (its paid
/// requests and job ids are bounded), and still a bound.
const MAX_STATE_FILE: u64 = 16 << 20;

/// A state file's bytes: opened, read to its end (at most [`MAX_STATE_FILE`]) and closed, with
/// no size query first (a no-op run reads one per certificate). With `trust_short`, a read that
/// returns less than was asked counts as the end, sparing the read that would return nothing:
/// state files are replaced by renaming, never written in place, so on a local file system a
/// short read is the end. Elsewhere it may not be; then the JSON does not parse (no prefix of an
/// object is one) and [`Store::load`] reads the file again without it.
fn read_state_from(mut file: File, path: &Path, trust_short: bool) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = vec![0; 4096];
    let n = loop {
        match file.read(&mut bytes) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    bytes.truncate(n);
    if n == 0 || (trust_short && n < 4096) {
        return Ok(bytes);
    }
    file.take(MAX_STATE_FILE + 1 - n as u64).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {} MiB", path.display(), MAX_STATE_FILE >> 20),
        ));
    }
    Ok(bytes)
}
