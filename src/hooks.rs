//! Running hooks: argv without a shell, a scrubbed environment plus our variables, a timeout,
//! and the output written to the log.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Variables kept from certkeeper's own environment; everything else is dropped.
const KEEP: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "SYSTEMD_EXEC_PID"];

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot start {program}: {detail}")]
    Start { program: String, detail: String },
    #[error("{program} exited with {status}")]
    Failed { program: String, status: String },
    #[error("{program} did not finish within {timeout:?} and was stopped")]
    Timeout { program: String, timeout: Duration },
}

/// Runs `argv` with `env`, waits at most `timeout`.
pub async fn run(argv: &[String], env: &BTreeMap<String, String>, timeout: Duration) -> Result<(), HookError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&program);
    cmd.args(&argv[1..])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let p1 = program.clone();
    let p2 = program.clone();
    let out = tokio::spawn(async move {
        if let Some(s) = stdout {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(hook = %p1, "{line}");
            }
        }
    });
    let err = tokio::spawn(async move {
        if let Some(s) = stderr {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(hook = %p2, "{line}");
            }
        }
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(HookError::Start {
                program,
                detail: e.to_string(),
            });
        }
        Err(_) => {
            let _ = child.kill().await;
            out.abort();
            err.abort();
            return Err(HookError::Timeout { program, timeout });
        }
    };
    let _ = out.await;
    let _ = err.await;
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            program,
            status: status.to_string(),
        })
    }
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
        let env = BTreeMap::from([("CERTKEEPER_NAME".to_string(), "www.example.com".to_string())]);
        let script = format!("printf '%s|%s' \"$CERTKEEPER_NAME\" \"$1\" > {}", out.display());
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
