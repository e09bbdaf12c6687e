//! What certkeeper trusts on the host. It runs as root, writes private keys and runs hooks, so
//! every directory it writes in and every file it reads its settings or secrets from must be
//! out of reach of other local users: owned by root or by certkeeper's own user, writable by
//! nobody else, and (for what certkeeper itself manages) no symbolic link. Checks are made on
//! the opened descriptor where there is one, and a directory is created with its mode set on
//! its descriptor, whatever the umask.
//!
//! Once no other user can write a directory or any of its parents, nobody else can swap a path
//! below it for a link, so certkeeper's later writes by path stay where they were meant to go.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

/// The largest settings file read (the configuration, a CA file): room for 100,000
/// certificates and more (a `[[certificate]]` table with a few names is about 100 bytes), and
/// still a bound.
pub(crate) const MAX_SETTINGS_FILE: u64 = 64 << 20;
/// The largest secret file read (a password).
pub(crate) const MAX_SECRET_FILE: u64 = 64 << 10;

/// certkeeper's effective user.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether files of `uid` may steer certkeeper: root's and its own user's.
pub(crate) fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

fn refuse(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// The owner and mode rules for anything certkeeper writes in or reads its settings from.
fn check_owner_and_mode(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if !trusted_owner(meta.uid()) {
        return Err(refuse(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to user {}, not to root or to certkeeper's user ({}): another user could change what certkeeper reads or writes there; chown it",
                path.display(),
                meta.uid(),
                euid()
            ),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(refuse(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by group or others (mode {:o}); run chmod go-w on it",
                path.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Checks a directory certkeeper manages: a real directory (not a link), owned by root or by
/// certkeeper's user, writable by nobody else.
pub(crate) fn check_dir(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Err(refuse(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link; certkeeper writes only in directories that are what they say (name the target itself in the configuration)",
                path.display()
            ),
        ));
    }
    if !meta.is_dir() {
        return Err(refuse(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", path.display()),
        ));
    }
    check_owner_and_mode(path, &meta)
}

/// Checks every existing parent of `path`: owned by root or certkeeper's user and writable by
/// nobody else, except a sticky directory of root's such as /tmp (where others cannot rename
/// or remove what is not theirs). Links among the parents are followed, and their targets
/// checked.
pub(crate) fn check_parents(path: &Path) -> io::Result<()> {
    let absolute = std::path::absolute(path)?;
    let mut dir = PathBuf::new();
    for part in absolute.parent().into_iter().flat_map(Path::components) {
        dir.push(part);
        let Ok(real) = fs::canonicalize(&dir) else { break };
        let meta = fs::metadata(&real)?;
        let sticky_root = meta.uid() == 0 && meta.permissions().mode() & 0o1000 != 0;
        if !sticky_root {
            check_owner_and_mode(&real, &meta).map_err(|e| {
                refuse(
                    e.kind(),
                    format!("a parent directory of {} is not safe: {e}", path.display()),
                )
            })?;
        }
    }
    Ok(())
}

/// Makes sure `path` is a directory certkeeper may use: an existing one is checked
/// ([`check_dir`]); a missing one is created (missing parents 0755) with `mode` set on its
/// descriptor whatever the umask, and checked to be the directory just made.
pub(crate) fn ensure_dir(path: &Path, mode: u32) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => return check_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && fs::symlink_metadata(parent).is_err()
    {
        ensure_dir(parent, 0o755)?;
    }
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        // Made by someone else in between: it must pass the checks like any existing one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return check_dir(path),
        Err(e) => return Err(refuse(e.kind(), format!("cannot create {}: {e}", path.display()))),
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
        .open(path)?;
    let meta = dir.metadata()?;
    if meta.uid() != euid() {
        return Err(refuse(
            io::ErrorKind::PermissionDenied,
            format!("{} was replaced while it was being created", path.display()),
        ));
    }
    dir.set_permissions(fs::Permissions::from_mode(mode))
}

/// Opens a file to read without following a final symbolic link and without blocking on a FIFO,
/// and checks on the descriptor that it is a regular file whose owner and mode pass.
fn open_checked(path: &Path, secret: bool) -> io::Result<File> {
    let flags = OFlags::NONBLOCK | OFlags::CLOEXEC | if secret { OFlags::NOFOLLOW } else { OFlags::empty() };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                refuse(
                    io::ErrorKind::PermissionDenied,
                    format!("{} is a symbolic link; name the file itself", path.display()),
                )
            } else {
                refuse(e.kind(), format!("cannot read {}: {e}", path.display()))
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    check_owner_and_mode(path, &meta)?;
    let mode = meta.permissions().mode();
    if secret && mode & 0o077 != 0 {
        return Err(refuse(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is readable by group or others (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(file)
}

/// Reads a file certkeeper takes settings from (the configuration, a CA file): a regular file
/// owned by root or certkeeper's user and writable by nobody else, at most
/// [`MAX_SETTINGS_FILE`] bytes.
pub(crate) fn read_settings(path: &Path) -> io::Result<String> {
    read_bounded(open_checked(path, false)?, path, MAX_SETTINGS_FILE)
}

/// Reads a secret (a password): as [`read_settings`], and also not a link, readable by nobody
/// else (0600 or stricter), at most [`MAX_SECRET_FILE`] bytes.
pub(crate) fn read_secret(path: &Path) -> io::Result<String> {
    read_bounded(open_checked(path, true)?, path, MAX_SECRET_FILE)
}

fn read_bounded(file: File, path: &Path, max: u64) -> io::Result<String> {
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| refuse(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > max {
        return Err(refuse(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {} KiB", path.display(), max >> 10),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("certkeeper-host-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn a_directory_is_created_with_its_mode_whatever_the_umask_and_a_link_is_refused() {
        let d = temp("dirs");
        let state = d.join("a/b/state");
        ensure_dir(&state, 0o700).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o7777, 0o700);
        assert_eq!(fs::metadata(d.join("a")).unwrap().permissions().mode() & 0o7777, 0o755);
        ensure_dir(&state, 0o700).unwrap();
        std::os::unix::fs::symlink(&state, d.join("link")).unwrap();
        let e = ensure_dir(&d.join("link"), 0o700).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_dir(&state).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        let e = check_parents(&state.join("certs")).unwrap_err().to_string();
        assert!(e.contains("parent directory"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_secret_must_be_a_private_regular_file_and_no_link() {
        let d = temp("secret");
        let pw = d.join("pw");
        fs::write(&pw, "s3cret\n").unwrap();
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&pw).unwrap(), "s3cret\n");
        std::os::unix::fs::symlink(&pw, d.join("link")).unwrap();
        let e = read_secret(&d.join("link")).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        // A FIFO is refused at once instead of hanging the run.
        let fifo = d.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_secret(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_secret(&pw).unwrap_err().to_string().contains("chmod 600"));
        // Settings may be read by others, but not written.
        assert!(read_settings(&pw).is_ok());
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_settings(&pw).unwrap_err().to_string().contains("chmod go-w"));
        fs::remove_dir_all(&d).unwrap();
    }
}
