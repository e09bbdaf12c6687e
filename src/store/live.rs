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
}
