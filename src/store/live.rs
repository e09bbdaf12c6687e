//! The live directory: generation directories written complete and renamed into place, the
//! `live_dir/NAME` symlink switched with one atomic rename, old generations pruned, and the
//! names of the files servers and hooks are given.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Store;
use super::fs::{ensure_newline, pid, short_hash, sync_dir, write_new};
use crate::host;

/// The files of a generation, as `live_dir/NAME/FILE`: the names servers and hooks are given.
pub mod files {
    /// The certificate.
    pub const CERT: &str = "cert.pem";
    /// The intermediates.
    pub const CHAIN: &str = "chain.pem";
    /// The certificate and the intermediates.
    pub const FULLCHAIN: &str = "fullchain.pem";
    /// The private key, mode 0600.
    pub const KEY: &str = "privkey.pem";
    /// All four.
    pub const ALL: [&str; 4] = [CERT, CHAIN, FULLCHAIN, KEY];
    /// An S/MIME certificate's key, certificate and chain as one PKCS#12 file for mail
    /// clients, encrypted with `smime.p12_password_file`'s password; 0600 like the key.
    pub const P12: &str = "bundle.p12";
}

/// Who may read an installed private key: its owner and group (`None`: certkeeper's own) and
/// its mode, never readable by others. The key is 0600 from its first byte; owner, group and
/// mode are set on the open file before a byte of the key is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAccess {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: u32,
}

impl Default for KeyAccess {
    fn default() -> Self {
        Self {
            uid: None,
            gid: None,
            mode: 0o600,
        }
    }
}

/// One installed generation.
#[derive(Clone, Debug)]
pub struct Generation {
    pub number: u32,
    pub dir: PathBuf,
}

impl Store {
    /// Checks, before anything is ordered, that the certificate's places in the live directory
    /// are certkeeper's: `live_dir/NAME` absent or a symlink, its generations directory (if any)
    /// a real directory nobody else can write.
    pub fn check_live(&self, name: &str) -> io::Result<()> {
        let live = self.live_dir.join(name);
        match fs::symlink_metadata(&live) {
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is a real {} and not certkeeper's symlink to its generations; move it away (certkeeper will not order a certificate it could not install)",
                        live.display(),
                        if m.is_dir() { "directory" } else { "file" }
                    ),
                ));
            }
            _ => {}
        }
        let generations = self.generations_dir(name);
        match fs::symlink_metadata(&generations) {
            Ok(_) => host::check_dir(&generations),
            Err(_) => Ok(()),
        }
    }

    fn generations_dir(&self, name: &str) -> PathBuf {
        self.live_dir.join(".generations").join(name)
    }

    pub fn generation(&self, name: &str, number: u32) -> Generation {
        Generation {
            number,
            dir: self.generations_dir(name).join(format!("{number:04}")),
        }
    }

    fn generation_numbers(&self, name: &str) -> Vec<u32> {
        let mut v: Vec<u32> = fs::read_dir(self.generations_dir(name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Writes a complete generation (key 0600 or as `access` says, certificate, chain, full chain) under a temporary
    /// name, then renames it into place. The live symlink is not touched.
    pub fn write_generation(
        &self,
        name: &str,
        key_pem: &str,
        leaf: &str,
        chain: &[String],
        access: KeyAccess,
    ) -> io::Result<Generation> {
        self.write_generation_with(name, key_pem, leaf, chain, access, None)
    }

    /// [`Self::write_generation`], with an S/MIME certificate's PKCS#12 bundle ([`files::P12`]),
    /// which holds the key and is written as the key is.
    pub fn write_generation_with(
        &self,
        name: &str,
        key_pem: &str,
        leaf: &str,
        chain: &[String],
        access: KeyAccess,
        p12: Option<&[u8]>,
    ) -> io::Result<Generation> {
        let parent = self.generations_dir(name);
        host::ensure_dir(&parent, 0o755)?;
        // What an interrupted write of an earlier generation left (the lock is held).
        super::sweep_dir(&parent);
        let number = self.generation_numbers(name).last().copied().unwrap_or(0) + 1;
        let tmp = parent.join(format!(".tmp-{number:04}-{}", pid()));
        let _ = fs::remove_dir_all(&tmp);
        host::ensure_dir(&tmp, 0o755)?;
        let leaf = ensure_newline(leaf);
        let chain_pem: String = chain.iter().map(|c| ensure_newline(c)).collect();
        write_key(&tmp.join(files::KEY), key_pem.as_bytes(), access)?;
        if let Some(bundle) = p12 {
            write_key(&tmp.join(files::P12), bundle, access)?;
        }
        write_new(&tmp.join(files::CERT), leaf.as_bytes(), 0o644)?;
        write_new(&tmp.join(files::CHAIN), chain_pem.as_bytes(), 0o644)?;
        write_new(
            &tmp.join(files::FULLCHAIN),
            format!("{leaf}{chain_pem}").as_bytes(),
            0o644,
        )?;
        sync_dir(&tmp)?;
        crate::pause::pause_for_tests("generation_written", name);
        let generation = self.generation(name, number);
        fs::rename(&tmp, &generation.dir)?;
        sync_dir(&parent)?;
        Ok(generation)
    }

    /// Gives the live key of `name` the owner, group and mode `access` says, where they
    /// differ: a changed `key_owner`, `key_group` or `key_mode` applies at the next run (a
    /// `--renew-now NAME` gives NAME's alone) or the daemon's next pass, not at the next
    /// reissue. (A generation kept for a rollback gets them when it is live again: the run after
    /// the rollback sets them.) Returns whether the key was changed.
    /// The live key is found through `look`'s live directory when given.
    pub fn apply_key_access(&self, look: Option<&super::Look>, name: &str, access: KeyAccess) -> io::Result<bool> {
        // The common case, a key as configured, costs one lstat through the live link (ours);
        // only a key to change is opened, without following links, and changed on its descriptor.
        let as_configured = match look {
            Some(look) => rustix::fs::statat(
                &look.live,
                format!("{name}/{}", files::KEY),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
                    && is_access(st.st_uid, st.st_gid, st.st_mode, access)
            }),
            None => fs::symlink_metadata(self.live_dir.join(name).join(files::KEY))
                .is_ok_and(|meta| meta.is_file() && has_access(&meta, access)),
        };
        if as_configured {
            return Ok(false);
        }
        match self.live_generation(name) {
            Some(number) => {
                let dir = self.generation(name, number).dir;
                // An S/MIME bundle holds the key too: the same owner, group and mode.
                if fs::symlink_metadata(dir.join(files::P12)).is_ok() {
                    set_key_access(&dir.join(files::P12), access)?;
                }
                set_key_access(&dir.join(files::KEY), access)
            }
            None => Ok(false),
        }
    }

    /// The certificate (PEM) of one generation.
    pub fn generation_cert(&self, name: &str, number: u32) -> io::Result<String> {
        fs::read_to_string(self.generation(name, number).dir.join(files::CERT))
    }

    /// The generation `live_dir/NAME` points at now.
    pub fn live_generation(&self, name: &str) -> Option<u32> {
        let target = fs::read_link(self.live_dir.join(name)).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }

    /// Points `live_dir/NAME` at a generation with one atomic rename.
    pub fn switch(&self, name: &str, number: u32) -> io::Result<()> {
        let target = Path::new(".generations").join(name).join(format!("{number:04}"));
        let tmp = self.live_dir.join(format!(".switch-{}-{}", pid(), short_hash(name)));
        let _ = fs::remove_file(&tmp);
        super::fs::unsettled(&self.live_dir);
        std::os::unix::fs::symlink(&target, &tmp)?;
        fs::rename(&tmp, self.live_dir.join(name))?;
        super::fs::settled(&self.live_dir);
        sync_dir(&self.live_dir)
    }

    /// Deletes old generations, keeping the newest `keep` and every one named in `protect`.
    pub fn prune(&self, name: &str, protect: &[u32]) -> io::Result<()> {
        host::check_dir(&self.generations_dir(name))?;
        let numbers = self.generation_numbers(name);
        let cut = numbers.len().saturating_sub(self.keep);
        for n in &numbers[..cut] {
            if !protect.contains(n) {
                fs::remove_dir_all(self.generation(name, *n).dir)?;
            }
        }
        Ok(())
    }
}

/// Creates the key file 0600, gives it its owner, group and mode on the descriptor, then writes
/// and fsyncs the key: at no moment can anyone else read it.
fn write_key(path: &std::path::Path, bytes: &[u8], access: KeyAccess) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    if access.uid.is_some() || access.gid.is_some() {
        rustix::fs::fchown(
            &f,
            access.uid.map(rustix::fs::Uid::from_raw),
            access.gid.map(rustix::fs::Gid::from_raw),
        )
        .map_err(|e| io::Error::other(format!("cannot give {} its owner and group: {e}", path.display())))?;
    }
    f.set_permissions(fs::Permissions::from_mode(access.mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Sets an existing key's owner, group and mode where they differ from `access` (never through
/// a link); whether anything changed. A missing key is nothing to change.
/// The owner and group a key with `access` gets: the configured ones, or certkeeper's own.
fn owner_of(access: KeyAccess) -> (u32, u32) {
    static OWN: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let own = *OWN.get_or_init(|| (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()));
    (access.uid.unwrap_or(own.0), access.gid.unwrap_or(own.1))
}

/// Whether a file has the owner, group and mode of `access`.
fn has_access(meta: &fs::Metadata, access: KeyAccess) -> bool {
    use std::os::unix::fs::MetadataExt;
    is_access(meta.uid(), meta.gid(), meta.mode(), access)
}

/// Whether an owner, group and mode (`st_mode`) are those of `access`.
fn is_access(uid: u32, gid: u32, mode: u32, access: KeyAccess) -> bool {
    (uid, gid) == owner_of(access) && mode & 0o7777 == access.mode
}

fn set_key_access(path: &std::path::Path, access: KeyAccess) -> io::Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK;
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    if has_access(&meta, access) {
        return Ok(false);
    }
    let (uid, gid) = owner_of(access);
    // Narrowed first, so that no moment gives the new group the key under the old mode.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    rustix::fs::fchown(
        &f,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| io::Error::other(format!("cannot give {} its owner and group: {e}", path.display())))?;
    f.set_permissions(fs::Permissions::from_mode(access.mode))?;
    Ok(true)
}
