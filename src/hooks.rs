//! Running hooks: argv without a shell, a scrubbed environment plus our variables, a process
//! group of their own, one deadline for the hook and its output, and the output written to the
//! log. The variables each hook is given (the contract the README documents) are built here and
//! only here: [`ReloadEnv`], [`DnsRecordEnv`], [`FileEnv`], [`FailureEnv`].

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::dns::DcvRecord;
use crate::store::files;

/// The names of the variables hooks are given, each written once.
pub(crate) mod vars {
    /// Every hook: the certificate's name.
    pub(crate) const NAME: &str = "CERTKEEPER_NAME";
    /// Reload hook: the live files, `live/NAME/...`.
    pub(crate) const CERT: &str = "CERTKEEPER_CERT";
    pub(crate) const KEY: &str = "CERTKEEPER_KEY";
    pub(crate) const CHAIN: &str = "CERTKEEPER_CHAIN";
    pub(crate) const FULLCHAIN: &str = "CERTKEEPER_FULLCHAIN";
    /// Reload hook, S/MIME certificates: `live/NAME/bundle.p12`.
    pub(crate) const P12: &str = "CERTKEEPER_P12";
    /// Reload hook: the new serial, hex.
    pub(crate) const SERIAL: &str = "CERTKEEPER_SERIAL";
    /// Reload hook: the expiry, RFC 3339; `on_failure`: the expiry, unix time.
    pub(crate) const NOT_AFTER: &str = "CERTKEEPER_NOT_AFTER";
    /// DNS hook: one validation record.
    pub(crate) const RECORD_NAME: &str = "CERTKEEPER_RECORD_NAME";
    pub(crate) const RECORD_TYPE: &str = "CERTKEEPER_RECORD_TYPE";
    pub(crate) const RECORD_VALUE: &str = "CERTKEEPER_RECORD_VALUE";
    pub(crate) const RECORD_TTL: &str = "CERTKEEPER_RECORD_TTL";
    pub(crate) const RECORD_ZONE_LINE: &str = "CERTKEEPER_RECORD_ZONE_LINE";
    /// File hook: one validation file, its host, its path (from `/`) and its content.
    pub(crate) const FILE_HOST: &str = "CERTKEEPER_FILE_HOST";
    pub(crate) const FILE_PATH: &str = "CERTKEEPER_FILE_PATH";
    pub(crate) const FILE_CONTENT: &str = "CERTKEEPER_FILE_CONTENT";
    /// Reload hook: the `serve_check` addresses that must hand out the new certificate next,
    /// space separated (empty without `serve_check`).
    pub(crate) const SERVE_CHECK: &str = "CERTKEEPER_SERVE_CHECK";
    /// `on_failure`, event `not_served`: what was served instead, `ADDRESS serves SERIAL for
    /// NAME`.
    pub(crate) const NOT_SERVED: &str = "CERTKEEPER_NOT_SERVED";
    /// `on_failure`: what happened (`failed`, `not_deployed`, `not_served`, `expiring`, ...),
    /// the error, the count.
    pub(crate) const EVENT: &str = "CERTKEEPER_EVENT";
    pub(crate) const ERROR: &str = "CERTKEEPER_ERROR";
    pub(crate) const FAILURES: &str = "CERTKEEPER_FAILURES";
}

/// The environment of a hook: variable names and values.
pub(crate) type Env = BTreeMap<String, String>;

fn env<const N: usize>(pairs: [(&str, String); N]) -> Env {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// What the reload hook is told about the certificate just made live.
pub(crate) struct ReloadEnv<'a> {
    pub name: &'a str,
    /// `live_dir/NAME`, the symlink to the live generation.
    pub live: &'a Path,
    pub serial: Option<&'a str>,
    /// Unix time.
    pub not_after: Option<i64>,
    pub serve_check: &'a [String],
    /// An S/MIME certificate: `live/NAME/bundle.p12` is there too.
    pub p12: bool,
}

impl ReloadEnv<'_> {
    pub(crate) fn vars(&self) -> Env {
        let p = |f: &str| self.live.join(f).to_string_lossy().into_owned();
        let not_after = self
            .not_after
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let mut out = env([
            (vars::NAME, self.name.to_string()),
            (vars::CERT, p(files::CERT)),
            (vars::KEY, p(files::KEY)),
            (vars::CHAIN, p(files::CHAIN)),
            (vars::FULLCHAIN, p(files::FULLCHAIN)),
            (vars::SERIAL, self.serial.unwrap_or_default().to_string()),
            (vars::NOT_AFTER, not_after),
            (vars::SERVE_CHECK, self.serve_check.join(" ")),
        ]);
        if self.p12 {
            out.insert(vars::P12.to_string(), p(files::P12));
        }
        out
    }
}

/// What the DNS hook is told about one validation record (`present` or `cleanup`).
pub(crate) struct DnsRecordEnv<'a> {
    pub name: &'a str,
    pub record: &'a DcvRecord,
}

impl DnsRecordEnv<'_> {
    pub(crate) fn vars(&self) -> Env {
        let r = self.record;
        env([
            (vars::NAME, self.name.to_string()),
            (vars::RECORD_NAME, r.name.clone()),
            (vars::RECORD_TYPE, r.kind.to_string()),
            (vars::RECORD_VALUE, r.value.clone()),
            (vars::RECORD_TTL, r.ttl.to_string()),
            (vars::RECORD_ZONE_LINE, r.canonical_line()),
        ])
    }
}

/// What the file hook is told about one validation file (`present` or `cleanup`): serve
/// `CERTKEEPER_FILE_CONTENT` at `http://CERTKEEPER_FILE_HOST` + `CERTKEEPER_FILE_PATH`.
pub(crate) struct FileEnv<'a> {
    pub name: &'a str,
    pub file: &'a crate::webroot::FileRecord,
}

impl FileEnv<'_> {
    pub(crate) fn vars(&self) -> Env {
        env([
            (vars::NAME, self.name.to_string()),
            (vars::FILE_HOST, self.file.name.clone()),
            (vars::FILE_PATH, self.file.url_path()),
            (vars::FILE_CONTENT, self.file.content.clone()),
        ])
    }
}

/// What the `on_failure` hook is told.
pub(crate) struct FailureEnv<'a> {
    pub name: &'a str,
    pub event: &'a str,
    pub error: &'a str,
    pub failures: u32,
    /// Unix time.
    pub not_after: Option<i64>,
    /// For `not_served`: what was served instead.
    pub not_served: Option<&'a str>,
}

impl FailureEnv<'_> {
    pub(crate) fn vars(&self) -> Env {
        let mut out = env([
            (vars::NAME, self.name.to_string()),
            (vars::EVENT, self.event.to_string()),
            (vars::ERROR, self.error.to_string()),
            (vars::FAILURES, self.failures.to_string()),
            (
                vars::NOT_AFTER,
                self.not_after.map(|t| t.to_string()).unwrap_or_default(),
            ),
        ]);
        if let Some(what) = self.not_served.filter(|_| self.event == "not_served") {
            out.insert(vars::NOT_SERVED.to_string(), what.to_string());
        }
        out
    }
}

/// Variables kept from certkeeper's own environment; everything else is dropped.
const KEEP: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "SYSTEMD_EXEC_PID"];

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    #[error("cannot start {program}: {detail}")]
    Start { program: String, detail: String },
    #[error("{program} exited with {status}")]
    Failed { program: String, status: String },
    #[error("{program} did not finish within {} and was stopped", crate::text::duration(*.timeout))]
    Timeout { program: String, timeout: Duration },
}

/// Runs `argv` with `env`, waits at most `timeout` for it and for its output. The hook runs in
/// a process group of its own: at the timeout the whole group is killed, so that a background
/// child (`sh -c "sleep 40 &"`) can neither hold the run past the timeout through the output
/// pipe nor outlive it. Its output is logged at INFO, line by line; a failure names the last
/// line it wrote on stderr.
pub(crate) async fn run(argv: &[String], env: &BTreeMap<String, String>, timeout: Duration) -> Result<(), HookError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&program);
    cmd.args(argv.get(1..).unwrap_or_default())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for k in KEEP {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
    cmd.envs(env);
    let mut child = cmd.spawn().map_err(|e| HookError::Start {
        program: program.clone(),
        detail: e.to_string(),
    })?;
    let group = child.id();
    let out = tokio::spawn(log_lines(child.stdout.take(), program.clone(), "stdout"));
    let err = tokio::spawn(log_lines(child.stderr.take(), program.clone(), "stderr"));
    let finished = tokio::time::timeout(timeout, async {
        let status = child.wait().await;
        // The output ends when every process of the group has closed it, not when the hook
        // itself exits: this too is inside the deadline.
        let _ = out.await;
        let last = err.await.ok().flatten();
        (status, last)
    })
    .await;
    // At a timeout or an error, whatever is left of the group (a background child holding the
    // output) is stopped too; a daemon the hook started properly has a session of its own.
    let kill_group = || {
        if let Some(pid) = group.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    };
    let (status, last) = match finished {
        Ok((Ok(s), last)) => (s, last),
        Ok((Err(e), _)) => {
            kill_group();
            return Err(HookError::Start {
                program,
                detail: e.to_string(),
            });
        }
        Err(_) => {
            kill_group();
            let _ = child.kill().await;
            return Err(HookError::Timeout { program, timeout });
        }
    };
    if status.success() {
        Ok(())
    } else {
        let said = last.map(|l| format!(": {l}")).unwrap_or_default();
        Err(HookError::Failed {
            program,
            status: format!("{status}{said}"),
        })
    }
}

/// Logs a hook's output line by line, control characters escaped; returns the last line.
async fn log_lines<R: tokio::io::AsyncRead + Unpin>(
    stream: Option<R>,
    program: String,
    which: &'static str,
) -> Option<String> {
    let mut lines = BufReader::new(stream?).lines();
    let mut last = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let line = crate::text::printable(&line);
        tracing::info!(hook = %program, stream = which, "{line}");
        last = Some(line);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_hook_sees_our_variables_and_no_shell_expands_its_arguments() {
        let dir = std::env::temp_dir().join(format!("certkeeper-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let env = BTreeMap::from([(vars::NAME.to_string(), "www.example.com".to_string())]);
        let script = format!("printf '%s|%s' \"${}\" \"$1\" > {}", vars::NAME, out.display());
        run(
            &argv(&["sh", "-c", &script, "sh", "$(touch pwned);*"]),
            &env,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "www.example.com|$(touch pwned);*"
        );
        assert!(!std::path::Path::new("pwned").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `sh -c "sleep 40 &"` used to hold a run 41 s with a 5 s timeout (the output pipe was read
    /// without a deadline) and left the sleep behind: only the direct child was killed.
    #[tokio::test]
    async fn a_background_child_neither_outlives_the_timeout_nor_holds_the_run() {
        let dir = std::env::temp_dir().join(format!("certkeeper-hook-bg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 40 & echo $! > {}", pidfile.display());
        let started = std::time::Instant::now();
        let result = run(&argv(&["sh", "-c", &script]), &BTreeMap::new(), Duration::from_secs(2)).await;
        let took = started.elapsed();
        assert!(matches!(result, Err(HookError::Timeout { .. })), "{result:?}");
        assert!(took < Duration::from_secs(4), "the hook held the run for {took:?}");
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
        // Killed with its group (and reaped by whoever inherited it).
        let gone = (0..50).any(|_| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.split(" ").nth(2).is_none_or(|state| state != "Z"));
            if alive {
                std::thread::sleep(Duration::from_millis(50));
            }
            !alive
        });
        assert!(gone, "the background child {pid} outlived the hook's timeout");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failure_names_what_the_hook_said() {
        let e = run(
            &argv(&["sh", "-c", "echo 'nginx: [emerg] cannot load certificate' >&2; exit 1"]),
            &BTreeMap::new(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot load certificate"), "{e}");
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_reported() {
        let env = BTreeMap::new();
        assert!(matches!(
            run(&argv(&["false"]), &env, Duration::from_secs(5)).await,
            Err(HookError::Failed { .. })
        ));
        assert!(matches!(
            run(&argv(&["sleep", "5"]), &env, Duration::from_millis(200)).await,
            Err(HookError::Timeout { .. })
        ));
        assert!(matches!(
            run(&argv(&["/nonexistent/hook"]), &env, Duration::from_secs(5)).await,
            Err(HookError::Start { .. })
        ));
    }
}
