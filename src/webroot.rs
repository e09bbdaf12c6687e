//! FILE validation: the file prepareOrder names, read strictly and held against the
//! certificate's names (it comes from the network and becomes a path and a hook's data); placing
//! it under a web root without ever leaving it; and fetching it over HTTP as the CA will.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// Where the CA looks, under the name's web root.
pub const DIR: [&str; 2] = [".well-known", "pki-validation"];

/// The longest file name and content accepted from prepareOrder.
const MAX_FILE_NAME: usize = 100;
const MAX_CONTENT: usize = 1024;

/// The most of an answer the check reads.
const MAX_BODY: usize = 16 * 1024;

/// One validation file: served at `http://NAME/.well-known/pki-validation/FILE` with `content`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The name it proves, one of the certificate's.
    pub name: String,
    /// The file's name in `.well-known/pki-validation/`, one path component.
    pub file: String,
    pub content: String,
    /// The web root it was placed under (`None`: by the file hook, or not placed yet): it is
    /// removed from there, whatever the configuration says by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<std::path::PathBuf>,
}

impl FileRecord {
    /// The path after `http://NAME`.
    pub fn url_path(&self) -> String {
        format!("/{}/{}/{}", DIR[0], DIR[1], self.file)
    }

    /// prepareOrder's `fileName`, as an order sends it back.
    pub fn file_name(&self) -> String {
        format!("{}{}", self.name, self.url_path())
    }

    /// Holds the record against the certificate's names and the rules for a file name and
    /// content (also for one read back from the journal).
    pub fn check(&self, names: &[String]) -> Result<(), String> {
        if !names.contains(&self.name) {
            return Err(format!(
                "the validation file is for {}, which is not one of the certificate's names ({})",
                self.name,
                names.join(", ")
            ));
        }
        check_file(&self.file)?;
        check_content(&self.content)
    }
}

fn check_file(file: &str) -> Result<(), String> {
    let ok = !file.is_empty()
        && file.len() <= MAX_FILE_NAME
        && !file.starts_with('.')
        && file.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the validation file's name '{}' is not one plain file name (letters, digits, '.', '_', '-', at most {MAX_FILE_NAME}, not starting with '.')",
            crate::text::printable(&file.chars().take(120).collect::<String>())
        ))
    }
}

fn check_content(content: &str) -> Result<(), String> {
    if content.is_empty() || content.len() > MAX_CONTENT {
        return Err(format!(
            "the validation file's content is {} bytes (1 to {MAX_CONTENT} expected)",
            content.len()
        ));
    }
    if !content.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err("the validation file's content holds characters other than printable ASCII".into());
    }
    Ok(())
}

/// Reads prepareOrder's FILE entries into one record per name: `fileName` must be
/// `NAME/.well-known/pki-validation/FILE` for a name of the certificate (the entry's own `name`,
/// when given, the same), with nothing that could leave the web root (`..`, `/`, a scheme, an
/// absolute path). Every name must have its file.
pub fn read_entries(
    entries: &[(Option<String>, Option<String>, Option<String>)],
    names: &[String],
) -> Result<Vec<FileRecord>, String> {
    if entries.is_empty() {
        return Err("prepareOrder offered no FILE validation for this product".into());
    }
    let mut records: Vec<FileRecord> = Vec::new();
    for (entry_name, file_name, content) in entries {
        let (Some(file_name), Some(content)) = (file_name, content) else {
            return Err(
                "prepareOrder's FILE entry has no fileName and fileContent (as in the 2018 help page), so there is nothing to serve; nothing was ordered"
                    .into(),
            );
        };
        let shown = crate::text::printable(&file_name.chars().take(200).collect::<String>());
        // The XML help page writes it as a URL, the JSON SDK mock without a scheme.
        let bare = ["http://", "https://"]
            .iter()
            .find_map(|scheme| {
                file_name
                    .get(..scheme.len())
                    .filter(|p| p.eq_ignore_ascii_case(scheme))
                    .map(|_| &file_name[scheme.len()..])
            })
            .unwrap_or(file_name);
        let (host, rest) = bare
            .split_once('/')
            .ok_or_else(|| format!("prepareOrder's fileName '{shown}' is not NAME/.well-known/pki-validation/FILE"))?;
        let host = host.to_ascii_lowercase();
        let prefix = format!("{}/{}/", DIR[0], DIR[1]);
        let file = rest.strip_prefix(&prefix).ok_or_else(|| {
            format!("prepareOrder's fileName '{shown}' is not under .well-known/pki-validation/ of the name")
        })?;
        if let Some(n) = entry_name
            && !n.eq_ignore_ascii_case(&host)
        {
            return Err(format!(
                "prepareOrder's FILE entry for {} names the fileName '{shown}' of another host",
                crate::text::printable(&n.chars().take(100).collect::<String>())
            ));
        }
        let record = FileRecord {
            name: host,
            file: file.to_string(),
            content: content.trim().to_string(),
            root: None,
        };
        record
            .check(names)
            .map_err(|e| format!("refused prepareOrder's fileName '{shown}': {e}"))?;
        if let Some(other) = records.iter().find(|r| r.name == record.name) {
            if other.file == record.file && other.content != record.content {
                return Err(format!(
                    "prepareOrder gave {} two different contents for one file, '{shown}'",
                    record.name
                ));
            }
        } else {
            records.push(record);
        }
    }
    if let Some(missing) = names.iter().find(|n| !records.iter().any(|r| &r.name == *n)) {
        return Err(format!("prepareOrder gave no validation file for {missing}"));
    }
    Ok(records)
}

/// Writes the record's file under `webroot`: `.well-known/pki-validation/` made where missing
/// (0755), every directory opened without following a link, the file written under a new name
/// and renamed into place (mode 0644: the web server reads it), so that a link or a hard link
/// planted in the web root is replaced, never written through.
pub fn place(webroot: &Path, rec: &FileRecord) -> Result<(), String> {
    let dir = open_dir(webroot, true)?;
    sweep_temps(&dir, &rec.file);
    let temp = format!(".{}.certkeeper-{}", rec.file, crate::order::random_hex(6));
    let shown = || webroot.join(DIR[0]).join(DIR[1]).join(&rec.file).display().to_string();
    let fd = rustix::fs::openat(
        &dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| format!("writing {}: {e}", shown()))?;
    let written = (|| {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(rec.content.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        rustix::fs::renameat(&dir, temp.as_str(), &dir, rec.file.as_str())?;
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&dir, temp.as_str(), AtFlags::empty());
        return Err(format!("writing {}: {e}", shown()));
    }
    Ok(())
}

/// Removes what a run killed while it wrote `file` left: `.FILE.certkeeper-*` (regular files
/// only, never followed).
fn sweep_temps(dir: &OwnedFd, file: &str) {
    let prefix = format!(".{file}.certkeeper-");
    let Ok(d) = rustix::fs::Dir::read_from(dir) else { return };
    for entry in d.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && entry.file_type() == rustix::fs::FileType::RegularFile {
            let _ = rustix::fs::unlinkat(dir, name.as_str(), AtFlags::empty());
        }
    }
}

/// Removes the record's file from under `webroot` if it is still a file holding our content
/// (the directories stay); `Ok(false)` when there was nothing of ours to remove.
pub fn remove(webroot: &Path, rec: &FileRecord) -> Result<bool, String> {
    let dir = match open_dir(webroot, false) {
        Ok(d) => d,
        Err(_) => return Ok(false),
    };
    let shown = webroot.join(DIR[0]).join(DIR[1]).join(&rec.file).display().to_string();
    let fd = match rustix::fs::openat(
        &dir,
        rec.file.as_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(format!("reading {shown}: {e}")),
    };
    let mut held = String::new();
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|e| format!("reading {shown}: {e}"))?;
    if !meta.is_file() || meta.len() > MAX_CONTENT as u64 + 2 {
        return Ok(false);
    }
    std::io::Read::read_to_string(&mut file, &mut held).map_err(|e| format!("reading {shown}: {e}"))?;
    if held.trim() != rec.content {
        return Ok(false);
    }
    rustix::fs::unlinkat(&dir, rec.file.as_str(), AtFlags::empty()).map_err(|e| format!("removing {shown}: {e}"))?;
    Ok(true)
}

/// Opens `webroot/.well-known/pki-validation` (the web root itself as configured, each
/// directory below it without following a link), making the missing ones when `make`.
fn open_dir(webroot: &Path, make: bool) -> Result<OwnedFd, String> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(webroot, flags, Mode::empty())
        .map_err(|e| format!("the web root {} cannot be opened: {e}", webroot.display()))?;
    let mut path = webroot.to_path_buf();
    for part in DIR {
        path.push(part);
        let mut made = false;
        if make {
            match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                Ok(()) => made = true,
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(format!("making {}: {e}", path.display())),
            }
        }
        dir = rustix::fs::openat(&dir, part, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                format!(
                    "{} is not a directory (a symbolic link is not followed out of the web root)",
                    path.display()
                )
            } else {
                format!("opening {}: {e}", path.display())
            }
        })?;
        // 0755 whatever the umask (the shipped units set 0077): the web server must read it.
        if made {
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o755)).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(dir)
}

/// What one look at the file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    Yes,
    /// Why not, for the log and the error: the status or what came instead.
    No(String),
}

/// Fetches `http://NAME/.well-known/pki-validation/FILE` once, as the CA will (no redirect
/// followed, the answer bounded): from `address` with the name as Host when given, else from
/// the name itself.
pub async fn fetch(client: &reqwest::Client, rec: &FileRecord, address: Option<&str>) -> Served {
    let url = match address {
        Some(a) => format!("http://{a}{}", rec.url_path()),
        None => format!("http://{}{}", rec.name, rec.url_path()),
    };
    let shown = format!("http://{}{}", rec.name, rec.url_path());
    let at = address.map(|a| format!(" (at {a})")).unwrap_or_default();
    let mut response = match client.get(&url).header(reqwest::header::HOST, &rec.name).send().await {
        Ok(r) => r,
        Err(e) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(": ");
                why.push_str(&s.to_string());
                source = s.source();
            }
            return Served::No(format!("{shown}{at}: {why}"));
        }
    };
    let status = response.status();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return Served::No(format!("{shown}{at}: reading the answer: {e}")),
        }
    }
    if !status.is_success() {
        return Served::No(format!("{shown}{at} answers HTTP {}", status.as_u16()));
    }
    if String::from_utf8_lossy(&body).trim() == rec.content {
        Served::Yes
    } else {
        Served::No(format!(
            "{shown}{at} serves {} bytes that are not the validation content",
            body.len()
        ))
    }
}

/// A client for [`fetch`]: plain HTTP, no redirect, no proxy, each look bounded.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .user_agent(concat!("certkeeper/", env!("CARGO_PKG_VERSION"), " (file check)"))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["example.com".into(), "www.example.com".into()]
    }

    fn entry(name: Option<&str>, file: &str, content: &str) -> (Option<String>, Option<String>, Option<String>) {
        (name.map(Into::into), Some(file.into()), Some(content.into()))
    }

    #[test]
    fn the_sdk_mocks_file_entry_is_read_per_name() {
        let got = read_entries(
            &[
                entry(None, "example.com/.well-known/pki-validation/fileauth.txt", "abc123"),
                entry(
                    Some("www.example.com"),
                    "WWW.example.com/.well-known/pki-validation/fileauth.txt",
                    "abc123",
                ),
            ],
            &names(),
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1].file_name(),
            "www.example.com/.well-known/pki-validation/fileauth.txt"
        );
        assert_eq!(got[0].url_path(), "/.well-known/pki-validation/fileauth.txt");
        // As the XML help page writes it: a URL.
        let url = read_entries(
            &[
                entry(
                    None,
                    "http://example.com/.well-known/pki-validation/fileauth.txt",
                    "abc123",
                ),
                entry(
                    None,
                    "HTTPS://www.example.com/.well-known/pki-validation/fileauth.txt",
                    "abc123",
                ),
            ],
            &names(),
        )
        .unwrap();
        assert_eq!(
            url[0].file_name(),
            "example.com/.well-known/pki-validation/fileauth.txt"
        );
    }

    #[test]
    fn a_file_name_that_could_leave_the_web_root_or_names_another_host_is_refused() {
        for bad in [
            "example.com/.well-known/pki-validation/../../../etc/passwd",
            "example.com/.well-known/pki-validation/a/b.txt",
            "example.com/.well-known/pki-validation/..",
            "example.com/.well-known/pki-validation/.htaccess",
            "/etc/passwd",
            "ftp://example.com/.well-known/pki-validation/fileauth.txt",
            "http://evil.org/.well-known/pki-validation/fileauth.txt",
            "http:/example.com/.well-known/pki-validation/fileauth.txt",
            "example.com/../pki-validation/fileauth.txt",
            "example.com/.well-known/other/fileauth.txt",
            "evil.org/.well-known/pki-validation/fileauth.txt",
            "example.com/.well-known/pki-validation/file\nauth.txt",
            "example.com/.well-known/pki-validation/",
        ] {
            let both = [
                entry(None, bad, "abc"),
                entry(None, "www.example.com/.well-known/pki-validation/fileauth.txt", "abc"),
            ];
            assert!(read_entries(&both, &names()).is_err(), "{bad:?} was taken");
        }
        let e = read_entries(
            &[entry(
                Some("www.example.com"),
                "example.com/.well-known/pki-validation/fileauth.txt",
                "abc",
            )],
            &names(),
        )
        .unwrap_err();
        assert!(e.contains("another host"), "{e}");
    }

    #[test]
    fn a_bare_entry_a_missing_name_or_a_hostile_content_is_refused() {
        let bare = read_entries(&[(None, None, None)], &names()).unwrap_err();
        assert!(bare.contains("no fileName and fileContent"), "{bare}");
        let one = read_entries(
            &[entry(
                None,
                "example.com/.well-known/pki-validation/fileauth.txt",
                "abc",
            )],
            &names(),
        )
        .unwrap_err();
        assert!(one.contains("no validation file for www.example.com"), "{one}");
        for content in ["", "a\u{1b}[2Jb", "line\nline", &"x".repeat(2000)] {
            let e = read_entries(
                &[
                    entry(None, "example.com/.well-known/pki-validation/fileauth.txt", content),
                    entry(None, "www.example.com/.well-known/pki-validation/fileauth.txt", content),
                ],
                &names(),
            );
            assert!(e.is_err(), "{content:?} was taken");
        }
    }

    /// A new directory of its own, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!(
                "certkeeper-webroot-{tag}-{}-{}",
                std::process::id(),
                crate::order::random_hex(4)
            ));
            std::fs::create_dir(&d).unwrap();
            Scratch(d)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record() -> FileRecord {
        FileRecord {
            name: "example.com".into(),
            file: "fileauth.txt".into(),
            content: "abc123".into(),
            root: None,
        }
    }

    #[test]
    fn a_placed_file_is_0644_under_the_web_root_and_removed_only_while_it_is_ours() {
        use std::os::unix::fs::PermissionsExt;
        let root = Scratch::new("place");
        place(root.path(), &record()).unwrap();
        let path = root.path().join(".well-known/pki-validation/fileauth.txt");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc123\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
        // Made 0755 whatever the umask, for the web server.
        for d in [".well-known", ".well-known/pki-validation"] {
            assert_eq!(
                std::fs::metadata(root.path().join(d)).unwrap().permissions().mode() & 0o777,
                0o755
            );
        }
        // What a run killed while writing left is swept.
        std::fs::write(path.parent().unwrap().join(".fileauth.txt.certkeeper-dead01"), "x").unwrap();
        place(root.path(), &record()).unwrap();
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        std::fs::write(&path, "someone else's\n").unwrap();
        assert!(
            !remove(root.path(), &record()).unwrap(),
            "another content is left alone"
        );
        assert!(path.exists());
        place(root.path(), &record()).unwrap();
        assert!(remove(root.path(), &record()).unwrap());
        assert!(!path.exists());
        assert!(!remove(root.path(), &record()).unwrap());
    }

    #[test]
    fn links_planted_in_the_web_root_are_never_followed_or_written_through() {
        let root = Scratch::new("root");
        let elsewhere = Scratch::new("elsewhere");
        // `.well-known` a link to another directory: refused, nothing written there.
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join(".well-known")).unwrap();
        let e = place(root.path(), &record()).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        // The file itself a link, or a hard link, to a file elsewhere: replaced, the target kept.
        std::fs::remove_file(root.path().join(".well-known")).unwrap();
        std::fs::create_dir_all(root.path().join(".well-known/pki-validation")).unwrap();
        let target = elsewhere.path().join("precious");
        std::fs::write(&target, "precious\n").unwrap();
        let at = root.path().join(".well-known/pki-validation/fileauth.txt");
        std::os::unix::fs::symlink(&target, &at).unwrap();
        place(root.path(), &record()).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        std::fs::remove_file(&at).unwrap();
        std::fs::hard_link(&target, &at).unwrap();
        place(root.path(), &record()).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(std::fs::read_to_string(&at).unwrap(), "abc123\n");
    }
}
