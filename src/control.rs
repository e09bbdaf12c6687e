//! The running daemon's control socket, `STATE_DIR/control.sock`: how `certkeeper --renew-now`
//! hands its request to a daemon that holds the state directory, instead of being refused.
//!
//! The socket sits in the state directory (0700) and is itself 0600; a peer that is neither
//! root nor the daemon's own user is refused. The protocol is one line each way per item, tab
//! separated, every line bounded:
//!
//! - the client sends `renew-now` and the names (none: every certificate), then a newline;
//!   or `campaign`: the daemon takes up the campaign recorded in the state directory and
//!   answers `done\t0` at once (its progress is in the campaign's log);
//! - the daemon answers, as each certificate's forced run ends, `NAME\tCODE\tTEXT`, and at the
//!   end `done\tCODE` (the most serious outcome, as a one-shot run's exit status), or
//!   `refused\tCODE\tTEXT` when it cannot take the request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::run::{Exit, Refusal};

/// The socket's file name in the state directory.
pub(crate) const SOCKET: &str = "control.sock";
/// The longest line either side reads.
const MAX_LINE: u64 = 64 * 1024;

/// A request the daemon's loop takes: the names to reissue now (lower case; empty: all), and
/// where to send each result line as it comes, then the end.
pub(crate) struct Request {
    pub names: Vec<String>,
    /// `campaign`: take up the campaign recorded in the state directory.
    pub campaign: bool,
    pub reply: mpsc::UnboundedSender<Reply>,
}

/// What the daemon says back.
#[derive(Debug)]
pub(crate) enum Reply {
    /// One certificate's forced run ended.
    Done { name: String, exit: Exit, line: String },
    /// Everything asked for has ended; the most serious outcome.
    End(Exit),
    /// The request cannot be taken.
    Refused(Exit, String),
}

/// Serves the control socket until the daemon stops, handing each request to `loop_tx`.
/// Returns `None` (with the reason logged) when the socket cannot be made: the daemon runs on
/// without it, and `--renew-now` then reports the daemon as running.
pub(crate) fn listen(state_dir: &Path, loop_tx: mpsc::Sender<Request>) -> Option<Listening> {
    let path = state_dir.join(SOCKET);
    // The daemon holds the state directory's lock: a socket left there is a dead daemon's.
    match std::fs::symlink_metadata(&path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            let _ = std::fs::remove_file(&path);
        }
        Ok(_) => {
            tracing::error!(path = %path.display(), "not a socket; remove it to let --renew-now reach the daemon");
            return None;
        }
        Err(_) => {}
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot make the control socket; --renew-now cannot reach the daemon");
            return None;
        }
    };
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        tracing::error!(path = %path.display(), error = %e, "cannot make the control socket owner-only");
        let _ = std::fs::remove_file(&path);
        return None;
    }
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors or the like: wait rather than spin.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            tokio::spawn(serve(stream, loop_tx.clone()));
        }
    });
    tracing::info!(path = %path.display(), "control socket: certkeeper --renew-now hands its request to this daemon");
    Some(Listening { path, task })
}

/// The listening socket; dropping it stops the listener and removes the socket file.
pub(crate) struct Listening {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(stream: UnixStream, loop_tx: mpsc::Sender<Request>) {
    let trusted = stream.peer_cred().is_ok_and(|c| crate::host::trusted_owner(c.uid()));
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE);
    let read_ok = matches!(
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await,
        Ok(Ok(n)) if n > 0 && line.ends_with('\n')
    );
    let say = |r: Reply| match r {
        Reply::Done { name, exit, line } => format!("{name}\t{}\t{}\n", exit.code(), one_line(&line)),
        Reply::End(exit) => format!("done\t{}\n", exit.code()),
        Reply::Refused(exit, why) => format!("refused\t{}\t{}\n", exit.code(), one_line(&why)),
    };
    let mut words = line.trim_end_matches('\n').split('\t');
    let verb = words.next();
    let refusal = if !trusted {
        Some("only root or the daemon's own user may ask it".to_string())
    } else if !read_ok || !matches!(verb, Some("renew-now" | "campaign")) {
        Some("the request was not understood".to_string())
    } else {
        None
    };
    let campaign = verb == Some("campaign");
    if let Some(why) = refusal {
        let _ = write.write_all(say(Reply::Refused(Exit::Error, why)).as_bytes()).await;
        return;
    }
    let names: Vec<String> = words.filter(|w| !w.is_empty()).map(str::to_ascii_lowercase).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    if loop_tx
        .send(Request {
            names,
            campaign,
            reply: tx,
        })
        .await
        .is_err()
    {
        let _ = write
            .write_all(say(Reply::Refused(Exit::Error, "the daemon is stopping".into())).as_bytes())
            .await;
        return;
    }
    let mut ended = false;
    while let Some(r) = rx.recv().await {
        ended = matches!(r, Reply::End(_) | Reply::Refused(..));
        if write.write_all(say(r).as_bytes()).await.is_err() || ended {
            break;
        }
    }
    if !ended {
        let why = "the daemon stopped before the renewal ended; it resumes at the next start (see certkeeper status)";
        let _ = write
            .write_all(say(Reply::Refused(Exit::Error, why.into())).as_bytes())
            .await;
    }
}

/// Text on one line: tabs and newlines would break the protocol.
fn one_line(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// A campaign recorded while a daemon holds the state directory: tells the daemon to take it up.
pub(crate) async fn hand_campaign(state_dir: &Path) -> Result<(), Refusal> {
    let path = state_dir.join(SOCKET);
    let fail = |exit: Exit, message: String| Refusal { exit, message };
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        fail(
            Exit::Locked,
            format!("and no daemon answers on {} ({e}); the campaign is recorded and goes on with the same command once that run has ended", path.display()),
        )
    })?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"campaign\n")
        .await
        .map_err(|e| fail(Exit::Error, format!("{}: {e}", path.display())))?;
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE);
    match tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line)).await {
        Ok(Ok(_)) if line.starts_with("done\t") => Ok(()),
        Ok(Ok(_)) => Err(fail(
            Exit::Error,
            format!("the running daemon refused the campaign: {}", line.trim()),
        )),
        _ => Err(fail(
            Exit::Error,
            "the daemon did not answer; the campaign is recorded and it takes it up at its next start".into(),
        )),
    }
}

/// `--renew-now` while a daemon holds the state directory: hands the request to it, prints each
/// result line as it arrives, and returns the exit status the daemon reports. Refused with
/// `Exit::Locked` when no daemon answers on the socket (another one-shot run holds the lock).
pub(crate) async fn hand_over(state_dir: &Path, names: &[String], wait: Duration) -> Result<Exit, Refusal> {
    let path = state_dir.join(SOCKET);
    let fail = |exit: Exit, message: String| Refusal { exit, message };
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        fail(
            Exit::Locked,
            format!("and no daemon answers on {} ({e})", path.display()),
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut request = String::from("renew-now");
    for n in names {
        request.push('\t');
        request.push_str(&one_line(n).replace(' ', ""));
    }
    request.push('\n');
    write
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(Exit::Error, format!("{}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "handed to the running daemon; waiting for the renewal to end");
    let mut reader = BufReader::new(read);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout_at(deadline, (&mut reader).take(MAX_LINE).read_line(&mut line)).await;
        match read {
            Err(_) => {
                return Err(fail(
                    Exit::Error,
                    format!(
                        "the daemon has not answered within {}; the renewal goes on there (see certkeeper status)",
                        crate::text::duration(wait)
                    ),
                ));
            }
            Ok(Err(e)) => return Err(fail(Exit::Error, format!("{}: {e}", path.display()))),
            Ok(Ok(0)) => {
                return Err(fail(
                    Exit::Error,
                    "the daemon closed the connection without an answer".into(),
                ));
            }
            Ok(Ok(_)) => {}
        }
        let parts: Vec<&str> = line.trim_end_matches('\n').splitn(3, '\t').collect();
        let code = |s: &str| s.parse::<u8>().ok().and_then(Exit::from_code).unwrap_or(Exit::Error);
        match parts.as_slice() {
            ["done", c] => return Ok(code(c)),
            ["refused", c, why] => return Err(fail(code(c), format!("the running daemon refused: {why}"))),
            [_, _, text] => crate::run::say(text),
            _ => {
                return Err(fail(
                    Exit::Error,
                    format!("the daemon's answer is not understood: {line:?}"),
                ));
            }
        }
    }
}
