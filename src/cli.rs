//! The command line: `run [--once]`, `--renew-now [NAME...]`, `status`, `check`, `demo`.
//!
//! Exit codes: 0 success or nothing due; 1 other error; 2 configuration error; 3 an order
//! failed; 4 a certificate was issued but not deployed (the reload hook failed); 5 another
//! certkeeper holds the state directory.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use time::OffsetDateTime;

use crate::config::{self, Config};
use crate::order::{Agent, Outcome};
use crate::store::{CertState, Store};

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_ORDER_FAILED: u8 = 3;
pub const EXIT_NOT_DEPLOYED: u8 = 4;
pub const EXIT_LOCKED: u8 = 5;

/// Keeps certificates from the InterNetX AutoDNS SSL Manager valid and installed: orders,
/// validates through DNS, reissues before expiry, installs atomically and reloads your server.
/// It never pays twice for an order and never installs a certificate that does not match its key.
///
/// Exit codes: 0 success or nothing due, 1 other error, 2 configuration error, 3 an order failed,
/// 4 issued but not deployed (the reload hook failed), 5 another certkeeper is running.
#[derive(Debug, Parser)]
#[command(name = "certkeeper", version)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "CERTKEEPER_CONFIG",
        default_value = "/etc/certkeeper/certkeeper.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr: text or json. Levels come from CERTKEEPER_LOG, e.g. `debug` or
    /// `info,certkeeper::dns=debug` (default `info,hickory=warn,reqwest=warn`).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Reissue now and exit: the named certificates, or every configured one when none is named.
    #[arg(long, num_args = 0.., value_name = "NAME")]
    pub renew_now: Option<Vec<String>>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Keep every certificate valid: as a daemon, or with --once for cron and systemd timers.
    Run {
        /// Do what is due, then exit.
        #[arg(long)]
        once: bool,
        /// Reissue now and exit: the named certificates, or every one when none is named.
        #[arg(long, num_args = 0.., value_name = "NAME")]
        renew_now: Option<Vec<String>>,
    },
    /// Show each certificate: serial, expiry, days left, term end, state and last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and report every error with its file, line and field.
    Check,
    /// Run the whole job against an embedded simulator: no network, no credentials needed.
    Demo {
        /// Where the demo writes its configuration, state and certificates. A directory the
        /// demo did not make (it leaves a `.certkeeper-demo` marker) is refused unless empty.
        #[arg(long, default_value = "certkeeper-demo")]
        dir: PathBuf,
        /// Use DIR although the demo did not make it: its certkeeper.toml, api-password and
        /// root.pem are overwritten, its state and live directories removed.
        #[arg(long)]
        force: bool,
    },
    /// The demo's DNS hook: publishes a record in the embedded simulator's DNS.
    #[command(hide = true)]
    DemoDnsHook {
        sim_url: String,
        ca_file: PathBuf,
        action: String,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    // One-shot commands run on one thread: their work is network I/O, and fewer threads mean
    // a smaller footprint. The daemon keeps a thread pool so that metrics stay responsive
    // while a key is generated.
    let daemon = matches!(
        cli.command,
        Some(Command::Run {
            once: false,
            renew_now: None
        })
    ) && cli.renew_now.is_none();
    let mut builder = if daemon {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certkeeper: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    ExitCode::from(runtime.block_on(dispatch(cli)))
}

fn init_logging(format: &str) {
    use tracing_subscriber::prelude::*;
    // `LEVEL` or `LEVEL,TARGET=LEVEL,...`, e.g. `debug` or `info,certkeeper::dns=debug`.
    const DEFAULT: &str = "info,hickory=warn,reqwest=warn";
    let wanted = std::env::var("CERTKEEPER_LOG").unwrap_or_else(|_| DEFAULT.into());
    let filter: tracing_subscriber::filter::Targets = wanted.parse().unwrap_or_else(|e| {
        eprintln!("certkeeper: CERTKEEPER_LOG={wanted:?} is not a log filter ({e}); using {DEFAULT:?}");
        DEFAULT.parse().expect("the default log filter parses")
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if format == "json" {
        tracing_subscriber::registry()
            .with(fmt.json().with_filter(filter))
            .init();
    } else {
        let fmt = fmt.with_ansi(std::io::stderr().is_terminal());
        tracing_subscriber::registry().with(fmt.with_filter(filter)).init();
    }
}

async fn dispatch(cli: Cli) -> u8 {
    match cli.command {
        Some(Command::Check) => check(&cli.config),
        Some(Command::Status { json }) => match load(&cli.config) {
            Ok(config) => status(&config, json),
            Err(code) => code,
        },
        Some(Command::Demo { dir, force }) => crate::demo::run(&dir, force).await,
        Some(Command::DemoDnsHook {
            sim_url,
            ca_file,
            action,
        }) => crate::demo::dns_hook(&sim_url, &ca_file, &action).await,
        Some(Command::Run { once, renew_now }) => {
            let renew = renew_now.or(cli.renew_now);
            match load(&cli.config) {
                Ok(config) if renew.is_some() || once => run_once(config, renew).await,
                Ok(config) => crate::daemon::run(cli.config.clone(), config).await,
                Err(code) => code,
            }
        }
        None => match (cli.renew_now, load(&cli.config)) {
            (Some(names), Ok(config)) => run_once(config, Some(names)).await,
            (None, _) => {
                eprintln!(
                    "certkeeper: nothing to do; try `certkeeper run --once`, `certkeeper --renew-now` or `certkeeper --help`"
                );
                EXIT_ERROR
            }
            (_, Err(code)) => code,
        },
    }
}

fn load(path: &Path) -> Result<Config, u8> {
    config::read(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("certkeeper: {e}");
        }
        EXIT_CONFIG
    })
}

fn check(path: &Path) -> u8 {
    match load(path) {
        Ok(c) => {
            println_out(&format!(
                "{}: configuration is valid ({} certificate(s))",
                path.display(),
                c.certificates.len()
            ));
            EXIT_OK
        }
        Err(code) => code,
    }
}

#[allow(clippy::print_stdout)]
fn println_out(s: &str) {
    println!("{s}");
}

/// Does what is due (or reissues `renew` now), then returns the exit code.
pub async fn run_once(config: Config, renew: Option<Vec<String>>) -> u8 {
    if let Some(names) = &renew
        && let Some(unknown) = names
            .iter()
            .find(|n| !config.certificates.iter().any(|c| &c.name == *n))
    {
        eprintln!("certkeeper: {unknown} is not a configured certificate");
        return EXIT_CONFIG;
    }
    let (agent, _lock) = match start(config) {
        Ok(started) => started,
        Err(code) => return code,
    };
    run_all(&agent, renew.as_deref()).await
}

/// Builds the agent, creates its directories and takes the state directory's lock; on failure
/// says why and gives the exit code.
pub fn start(config: Config) -> Result<(Arc<Agent>, crate::store::Lock), u8> {
    let agent = Agent::new(config).map(Arc::new).map_err(|e| {
        eprintln!("certkeeper: {e:#}");
        EXIT_ERROR
    })?;
    agent.store.prepare().map_err(|e| {
        eprintln!(
            "certkeeper: cannot use {} and {}: {e}",
            agent.store.state_dir.display(),
            agent.store.live_dir.display()
        );
        EXIT_ERROR
    })?;
    let lock = agent.store.lock().map_err(|e| {
        eprintln!("certkeeper: {e}");
        EXIT_LOCKED
    })?;
    agent.store.sweep();
    Ok((agent, lock))
}

/// Works on every certificate (or the named ones, forced), a bounded number at a time.
pub async fn run_all(agent: &Arc<Agent>, renew: Option<&[String]>) -> u8 {
    let certs: Vec<_> = agent
        .config
        .certificates
        .iter()
        .filter(|c| renew.is_none_or(|n| n.is_empty() || n.contains(&c.name)))
        .cloned()
        .collect();
    let force = renew.is_some();
    // Only what is due gets a task; a run with nothing due touches nothing but the state files.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let certs: Vec<_> = certs.into_iter().filter(|c| force || agent.is_due(c, now)).collect();
    let total = certs.len();
    let progress = std::io::stdout().is_terminal();
    let limit = Arc::new(tokio::sync::Semaphore::new(agent.config.order.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for cert in certs {
        let agent = agent.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            // Boxed: a task waiting for its permit holds a pointer, not a whole order's state.
            let result = Box::pin(agent.ensure(&cert, force)).await;
            (cert.name, result)
        });
    }
    let mut code = EXIT_OK;
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += 1;
        let (name, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                eprintln!("certkeeper: a task failed: {e}");
                code = code.max(EXIT_ERROR);
                continue;
            }
        };
        let line = match &result {
            Ok(Outcome::NothingDue) => format!("{name}: nothing due"),
            Ok(Outcome::Deployed { serial, generation }) => {
                format!("{name}: deployed serial {serial} (generation {generation})")
            }
            Ok(Outcome::NotDeployed { serial, error }) => {
                code = code.max(EXIT_NOT_DEPLOYED);
                format!("{name}: issued serial {serial} but NOT deployed: {error}")
            }
            Err(e) => {
                code = code.max(EXIT_ORDER_FAILED);
                tracing::error!(cert = %name, error = %format!("{e:#}"), "order failed");
                format!("{name}: FAILED: {e:#}")
            }
        };
        if progress {
            println_out(&format!("[{done}/{total}] {line}"));
        }
    }
    if code == EXIT_NOT_DEPLOYED || code == EXIT_ORDER_FAILED {
        // An order failure outranks a deploy failure.
        return code;
    }
    code
}

/// One row of `status`.
#[derive(Debug, serde::Serialize)]
pub struct StatusRow {
    pub name: String,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<f64>,
    pub term_end: Option<String>,
    /// When the next reissue or renewal is due.
    pub next_renewal: Option<String>,
    pub state: String,
    pub last_error: Option<String>,
    pub live: String,
}

pub fn status_rows(config: &Config) -> Vec<StatusRow> {
    let store = Store::new(
        &config.store.state_dir,
        &config.store.live_dir,
        config.store.keep_generations,
    );
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let fmt = |t: Option<i64>| {
        t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    };
    config
        .certificates
        .iter()
        .map(|c| {
            let st: CertState = store.load(&c.name).unwrap_or_default();
            let state = if let Some(j) = &st.order {
                format!("ordering ({:?}, at {})", j.kind, j.step.name())
            } else if st.pending_deploy.is_some() {
                "issued, not deployed".into()
            } else if st.deployed {
                "deployed".into()
            } else if st.last_error.is_some() {
                "failed".into()
            } else {
                "not issued".into()
            };
            StatusRow {
                name: c.name.clone(),
                serial: st.serial.clone(),
                not_after: fmt(st.not_after),
                days_left: st
                    .not_after
                    .map(|na| ((na - now) as f64 / 86400.0 * 10.0).round() / 10.0),
                term_end: fmt(st.term_end),
                next_renewal: {
                    let d = crate::order::next(c, &st, &config.daemon, now);
                    if d.action == crate::schedule::Action::TermEnded {
                        None
                    } else {
                        fmt(Some(d.at.max(now)))
                    }
                },
                state,
                last_error: st.last_error.clone(),
                live: config.store.live_dir.join(&c.name).display().to_string(),
            }
        })
        .collect()
}

fn status(config: &Config, json: bool) -> u8 {
    let rows = status_rows(config);
    if json {
        println_out(&serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else {
        println_out(&status_table(&rows));
    }
    EXIT_OK
}

/// Renders the status rows as a table.
pub fn status_table(rows: &[StatusRow]) -> String {
    let mut out = format!(
        "{:<28} {:<34} {:<21} {:>9} {:<21} {:<21} {}\n",
        "NAME", "SERIAL", "NOT AFTER", "DAYS LEFT", "TERM END", "NEXT RENEWAL", "STATE"
    );
    for r in rows {
        let day = |s: &Option<String>| {
            s.as_deref()
                .map(|s| s.chars().take(19).collect::<String>())
                .unwrap_or_else(|| "-".into())
        };
        out.push_str(&format!(
            "{:<28} {:<34} {:<21} {:>9} {:<21} {:<21} {}\n",
            r.name,
            r.serial.as_deref().unwrap_or("-"),
            day(&r.not_after),
            r.days_left.map(|d| format!("{d:.1}")).unwrap_or_else(|| "-".into()),
            day(&r.term_end),
            day(&r.next_renewal),
            r.state
        ));
        if let Some(e) = &r.last_error {
            out.push_str(&format!("    last error: {e}\n"));
        }
    }
    out
}
