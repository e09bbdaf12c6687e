//! Everything certkeeper writes to disk, and the only module that does.
//!
//! - `state_dir/certs/NAME.json` (0600): the state of one certificate and the journal of its
//!   order in flight, the order's new key included; replaced durably (temp file, fsync, rename,
//!   fsync of the directory).
//! - `live_dir/.generations/NAME/N/{cert,chain,fullchain,privkey}.pem`: each issuance.
//! - `live_dir/NAME`: a symlink to the live generation, switched with one atomic rename.
//! - `state_dir/lock`: held with an exclusive lock while certkeeper works; holds the PID.
//!
//! Names become path components only after `config::is_hostname` accepted them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dns::DcvRecord;
use crate::host;

/// The state format's version, written into every state file.
pub const STATE_VERSION: u32 = 1;

/// What an order does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// A new order (paid).
    Create,
    /// A new certificate within the term (free).
    Reissue,
    /// The next term (paid).
    Renew,
}

impl OrderKind {
    pub fn is_paid(self) -> bool {
        matches!(self, Self::Create | Self::Renew)
    }
}

/// The steps of one order. Each is written to the journal before the side effect it enables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Decided; the key is being made.
    Planned,
    /// The key is on disk and the CSR built.
    Keyed,
    /// prepareOrder answered with the validation records.
    Prepared,
    /// The DNS hook published the records.
    DnsPublished,
    /// Every authoritative nameserver serves them (or AutoDNS provisions them).
    DnsVerified,
    /// The paid or reissue request is about to leave, with this ctid.
    Sending,
    /// The API accepted it; the job id is known.
    Accepted,
    /// The job ended with success; the certificate id is known.
    JobDone,
    /// The certificate and chain are here.
    Downloaded,
    /// The generation directory is written.
    Installed,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::Planned,
        Step::Keyed,
        Step::Prepared,
        Step::DnsPublished,
        Step::DnsVerified,
        Step::Sending,
        Step::Accepted,
        Step::JobDone,
        Step::Downloaded,
        Step::Installed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Planned => "planned",
            Step::Keyed => "keyed",
            Step::Prepared => "prepared",
            Step::DnsPublished => "dns_published",
            Step::DnsVerified => "dns_verified",
            Step::Sending => "sending",
            Step::Accepted => "accepted",
            Step::JobDone => "job_done",
            Step::Downloaded => "downloaded",
            Step::Installed => "installed",
        }
    }
}

/// The journal of the order in flight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderJournal {
    pub id: String,
    pub kind: OrderKind,
    pub step: Step,
    pub started_at: i64,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex.
    #[serde(default)]
    pub spki_sha256: Option<String>,
    /// The order's new private key (PKCS#8 PEM); it moves to the generation directory once issued.
    #[serde(default)]
    pub key: Option<KeyPem>,
    #[serde(default)]
    pub csr: Option<String>,
    #[serde(default)]
    pub records: Vec<DcvRecord>,
    #[serde(default)]
    pub ctid: Option<String>,
    #[serde(default)]
    pub sent_at: Option<i64>,
    #[serde(default)]
    pub job_id: Option<i64>,
    #[serde(default)]
    pub certificate_id: Option<i64>,
    #[serde(default)]
    pub leaf: Option<String>,
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default)]
    pub generation: Option<u32>,
    #[serde(default)]
    pub term_end: Option<i64>,
}

/// A private key in PEM inside the journal. Its `Debug` never shows the key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyPem(pub String);

impl std::fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPem(..)")
    }
}

/// One paid request, kept so that the spend guard can count them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaidRequest {
    pub kind: OrderKind,
    pub ctid: String,
    pub sent_at: i64,
    /// Which term it pays for: 0 for the first order, else the end (unix time) of the term renewed.
    pub term: i64,
    /// `sent` (answer pending or lost), `accepted`, or `not_made` (proven never to have arrived).
    pub status: String,
    #[serde(default)]
    pub job_id: Option<i64>,
}

/// The state of one certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CertState {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub certificate_id: Option<i64>,
    /// The end of the order term (the API's `payable`), unix time.
    #[serde(default)]
    pub term_end: Option<i64>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub not_before: Option<i64>,
    #[serde(default)]
    pub not_after: Option<i64>,
    /// The generation `live_dir/NAME` should point at.
    #[serde(default)]
    pub generation: Option<u32>,
    /// Whether the reload hook accepted the live generation.
    #[serde(default)]
    pub deployed: bool,
    /// An issued generation whose reload failed; retried on the next run.
    #[serde(default)]
    pub pending_deploy: Option<u32>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_success: Option<i64>,
    #[serde(default)]
    pub failures: u32,
    /// When the last failed attempt ended, unix time.
    #[serde(default)]
    pub last_failure: Option<i64>,
    /// The API asked not to retry before this time.
    #[serde(default)]
    pub retry_after: Option<i64>,
    #[serde(default)]
    pub paid: Vec<PaidRequest>,
    #[serde(default)]
    pub order: Option<OrderJournal>,
}

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
}

/// One installed generation.
#[derive(Clone, Debug)]
pub struct Generation {
    pub number: u32,
    pub dir: PathBuf,
}

/// The on-disk layout.
#[derive(Clone, Debug)]
pub struct Store {
    pub state_dir: PathBuf,
    pub live_dir: PathBuf,
    pub keep: usize,
}

/// An exclusive hold on the state directory; released when dropped or when the process dies.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Store {
    pub fn new(state_dir: &Path, live_dir: &Path, keep: usize) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            live_dir: live_dir.to_path_buf(),
            keep,
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

    /// Removes what a run killed mid-write (or a full disk) left behind: temp state files, temp
    /// generations, temp symlinks. Called with the lock held, so nothing else is writing them.
    pub fn sweep(&self) {
        let mut dirs = vec![
            self.state_dir.clone(),
            self.state_dir.join("certs"),
            self.live_dir.clone(),
        ];
        dirs.extend(
            fs::read_dir(self.live_dir.join(".generations"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
        for dir in dirs {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !(name.starts_with(".tmp-") || name.starts_with(".switch-")) {
                    continue;
                }
                let path = entry.path();
                let removed = match entry.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                    _ => fs::remove_file(&path),
                };
                match removed {
                    Ok(()) => tracing::info!(path = %path.display(), "removed a leftover of an interrupted write"),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover of an interrupted write")
                    }
                }
            }
        }
    }

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

    /// Takes the exclusive lock, or says which process holds it.
    pub fn lock(&self) -> Result<Lock, String> {
        let path = self.state_dir.join("lock");
        // Never through a link, and nothing is truncated before it proves to be our own file.
        let mut file = OpenOptions::new()
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
                file.set_len(0)
                    .and_then(|_| writeln!(file, "{}", std::process::id()))
                    .and_then(|_| file.sync_all())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Lock { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                Err(format!(
                    "another certkeeper (PID {}) is using {}; only one may run at a time",
                    holder.trim(),
                    self.state_dir.display()
                ))
            }
            Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("certs").join(format!("{name}.json"))
    }

    /// The certificate's state; a fresh one if none was saved. A state written by a newer
    /// certkeeper (a higher `version`) is refused, and so never rewritten in the older format.
    pub fn load(&self, name: &str) -> io::Result<CertState> {
        let path = self.state_path(name);
        match fs::read(&path) {
            Ok(bytes) => {
                let st: CertState = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
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

    /// Replaces the state durably.
    pub fn save(&self, state: &CertState) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        write_atomic(&self.state_path(&state.name), &bytes, 0o600)
    }

    /// Every certificate name with a state file.
    pub fn known_names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.state_dir.join("certs"))
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

    /// Writes a complete generation (key 0600, certificate, chain, full chain) under a temporary
    /// name, then renames it into place. The live symlink is not touched.
    pub fn write_generation(&self, name: &str, key_pem: &str, leaf: &str, chain: &[String]) -> io::Result<Generation> {
        let parent = self.generations_dir(name);
        host::ensure_dir(&parent, 0o755)?;
        let number = self.generation_numbers(name).last().copied().unwrap_or(0) + 1;
        let tmp = parent.join(format!(".tmp-{number:04}-{}", pid()));
        let _ = fs::remove_dir_all(&tmp);
        host::ensure_dir(&tmp, 0o755)?;
        let leaf = ensure_newline(leaf);
        let chain_pem: String = chain.iter().map(|c| ensure_newline(c)).collect();
        write_new(&tmp.join(files::KEY), key_pem.as_bytes(), 0o600)?;
        write_new(&tmp.join(files::CERT), leaf.as_bytes(), 0o644)?;
        write_new(&tmp.join(files::CHAIN), chain_pem.as_bytes(), 0o644)?;
        write_new(
            &tmp.join(files::FULLCHAIN),
            format!("{leaf}{chain_pem}").as_bytes(),
            0o644,
        )?;
        sync_dir(&tmp)?;
        let generation = self.generation(name, number);
        fs::rename(&tmp, &generation.dir)?;
        sync_dir(&parent)?;
        Ok(generation)
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
        std::os::unix::fs::symlink(&target, &tmp)?;
        fs::rename(&tmp, self.live_dir.join(name))?;
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

    /// Where contacts created from details are remembered.
    pub fn contacts_path(&self) -> PathBuf {
        self.state_dir.join("contacts.json")
    }

    pub fn write_contacts(&self, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.contacts_path(), bytes, 0o600)
    }
}

fn ensure_newline(s: &str) -> String {
    let s = s.trim();
    format!("{s}\n")
}

/// Creates a new file with its final mode from the first byte, writes and fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Replaces `path` durably: temp file in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a file needs a parent directory"))?;
    let tmp = temp_path(path);
    if let Err(e) = write_new(&tmp, bytes, mode) {
        // A temp file left by a killed process that had our PID.
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        fs::remove_file(&tmp)?;
        write_new(&tmp, bytes, mode)?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Where `write_atomic` writes before the rename: in the same directory, named by this process
/// and a hash of the file's name (fixed length, so it fits wherever the name fits; distinct per
/// file, so that concurrent writes of different files never share one).
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".tmp-{}-{}", pid(), short_hash(name)))
}

/// 16 hex digits of SHA-256.
fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// This process's id, asked of the kernel once.
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> (Store, PathBuf) {
        let root = std::env::temp_dir().join(format!("certkeeper-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let store = Store::new(&root.join("state"), &root.join("live"), 2);
        store.prepare().unwrap();
        (store, root)
    }

    /// A real journal, written by certkeeper in hook mode at `accepted` (with the order's test
    /// key, made for this file only): the on-disk format may not change a byte.
    const GOLDEN: &str = include_str!("../tests/golden/state-hook-accepted.json");

    #[test]
    fn the_golden_state_file_loads_and_is_written_back_byte_for_byte() {
        let st: CertState = serde_json::from_str(GOLDEN).unwrap();
        assert_eq!((st.version, st.name.as_str()), (STATE_VERSION, "www.example.com"));
        let j = st.order.as_ref().unwrap();
        assert_eq!(
            (j.kind, j.step, j.job_id),
            (OrderKind::Create, Step::Accepted, Some(4_297_000_000))
        );
        assert_eq!(j.ctid.as_deref(), st.paid.first().map(|p| p.ctid.as_str()));
        assert!(j.key.as_ref().unwrap().0.starts_with("-----BEGIN PRIVATE KEY-----"));
        let names = vec!["www.example.com".to_string(), "example.com".to_string()];
        for r in &j.records {
            r.check(&names).unwrap();
        }
        assert_eq!(
            String::from_utf8(serde_json::to_vec_pretty(&st).unwrap()).unwrap(),
            GOLDEN
        );
        let (store, root) = temp_store("golden");
        fs::write(root.join("state/certs/www.example.com.json"), GOLDEN).unwrap();
        store.save(&store.load("www.example.com").unwrap()).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("state/certs/www.example.com.json")).unwrap(),
            GOLDEN
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_state_from_a_newer_certkeeper_is_refused() {
        let (store, root) = temp_store("newer");
        let newer = GOLDEN.replacen("\"version\": 1", "\"version\": 2", 1);
        let path = root.join("state/certs/www.example.com.json");
        fs::write(&path, &newer).unwrap();
        let e = store.load("www.example.com").unwrap_err().to_string();
        assert!(e.contains("newer certkeeper (state format 2"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), newer);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn generations_switch_atomically_and_old_ones_are_pruned() {
        let (store, root) = temp_store("gen");
        let g1 = store
            .write_generation("www.example.com", "KEY1", "CERT1", &["INT".into()])
            .unwrap();
        store.switch("www.example.com", g1.number).unwrap();
        let g2 = store
            .write_generation("www.example.com", "KEY2", "CERT2", &["INT".into()])
            .unwrap();
        assert_eq!(store.live_generation("www.example.com"), Some(1));
        store.switch("www.example.com", g2.number).unwrap();
        assert_eq!(store.live_generation("www.example.com"), Some(2));
        let live = root.join("live/www.example.com");
        assert_eq!(fs::read_to_string(live.join("fullchain.pem")).unwrap(), "CERT2\nINT\n");
        let mode = fs::metadata(live.join("privkey.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let g3 = store.write_generation("www.example.com", "KEY3", "CERT3", &[]).unwrap();
        store.prune("www.example.com", &[2, 3]).unwrap();
        assert!(!g1.dir.exists() && g2.dir.exists() && g3.dir.exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_order_key_is_kept_in_the_0600_journal_and_never_shown_in_debug_output() {
        let (store, root) = temp_store("key");
        let mut s = store.load("www.example.com").unwrap();
        s.order = Some(OrderJournal {
            id: "1".into(),
            kind: OrderKind::Create,
            step: Step::Sending,
            started_at: 0,
            spki_sha256: None,
            key: Some(KeyPem("-----BEGIN PRIVATE KEY-----SECRET".into())),
            csr: None,
            records: vec![],
            ctid: None,
            sent_at: None,
            job_id: None,
            certificate_id: None,
            leaf: None,
            chain: vec![],
            generation: None,
            term_end: None,
        });
        // A temp file left behind by a killed process that had our PID does not block the write.
        let tmp = temp_path(&root.join("state/certs/www.example.com.json"));
        assert!(tmp.file_name().unwrap().len() < 40, "{tmp:?}");
        fs::write(&tmp, "partial").unwrap();
        store.save(&s).unwrap();
        assert!(!tmp.exists());
        let back = store.load("www.example.com").unwrap();
        assert_eq!(
            back.order.as_ref().unwrap().key.as_ref().unwrap().0,
            "-----BEGIN PRIVATE KEY-----SECRET"
        );
        assert!(!format!("{back:?}").contains("SECRET"));
        let mode = fs::metadata(root.join("state/certs/www.example.com.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn state_round_trips_and_old_files_without_new_fields_load() {
        let (store, root) = temp_store("state");
        let mut s = store.load("www.example.com").unwrap();
        assert_eq!(s.version, STATE_VERSION);
        s.certificate_id = Some(4_297_000_000);
        store.save(&s).unwrap();
        assert_eq!(
            store.load("www.example.com").unwrap().certificate_id,
            Some(4_297_000_000)
        );
        let mode = fs::metadata(root.join("state/certs/www.example.com.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(
            root.join("state/certs/old.example.com.json"),
            br#"{"version":1,"name":"old.example.com"}"#,
        )
        .unwrap();
        assert_eq!(store.load("old.example.com").unwrap().generation, None);
        assert_eq!(store.known_names(), ["old.example.com", "www.example.com"]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let (store, root) = temp_store("lock");
        let _held = store.lock().unwrap();
        let err = store.lock().unwrap_err();
        assert!(err.contains(&format!("PID {}", std::process::id())), "{err}");
        fs::remove_dir_all(root).unwrap();
    }
}
