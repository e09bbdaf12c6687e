//! The command line: `run [--once]`, `--renew-now [NAME...]`, `status`, `check`, `plan`, `adopt`, `resolve`, `revoke`, `demo`. With
//! the demo, the one place that talks to the terminal; everything below it logs.
//!
//! Exit codes: 0 success or nothing due; 1 other error; 2 configuration error; 3 an order
//! failed; 4 a certificate was issued but not deployed (the reload hook failed); 5 another
//! certkeeper holds the state directory; 6 a paid request's outcome is not settled yet; 7 `plan`
//! would buy; 8 waiting for consent, nothing bought; 9 an order waits for its approval mail.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, Threads};
use crate::run::Exit;

/// Keeps certificates from the InterNetX AutoDNS SSL Manager valid and installed: orders,
/// validates through DNS, reissues before expiry, installs atomically and reloads your server.
/// It never pays twice for an order and never installs a certificate that does not match its key.
///
/// Exit codes: 0 success or nothing due, 1 other error, 2 configuration error, 3 an order failed,
/// 4 issued but not deployed (the reload hook failed), 5 another certkeeper is running (a
/// running daemon takes `--renew-now` instead, through its control socket), 6 the
/// answer to a paid request was lost and is not settled yet (nothing was sent again; the next
/// run looks again, `status` says more), 7 (`plan` only) the next run would buy something,
/// 8 something to buy (or a choice of order) waits for the operator's consent and nothing was
/// bought (`status` says what, and the setting that allows it), 9 an order was made and waits
/// for a person to answer the CA's approval mail (e-mail validation, S/MIME).
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
    /// Alone or with `run` (`certkeeper --renew-now NAME`, `certkeeper run --renew-now NAME`);
    /// not with `--once`, which it already implies. While a daemon runs, it is handed the
    /// request and does it; this prints the results.
    #[arg(long, global = true, num_args = 0.., value_name = "NAME")]
    pub renew_now: Option<Vec<String>>,
    /// With --renew-now: a campaign over every installed certificate (a CA incident, a leaked
    /// key): recorded in the state directory, urgent first, within the API's rate limit, with
    /// its progress; killed or rebooted, the same command (or a daemon at its start) goes on
    /// with it, and no certificate is reissued twice. A running daemon is handed it.
    #[arg(long, global = true, requires = "renew_now")]
    pub all: bool,
    /// With --renew-now: a campaign over the installed certificates with a name matching
    /// PATTERN (`*` any run of characters, `?` one; quote it from the shell), e.g.
    /// '*.example.com'. May be repeated.
    #[arg(long = "match", global = true, value_name = "PATTERN", requires = "renew_now")]
    pub patterns: Vec<String>,
    /// With --renew-now: a campaign over the installed certificates issued (notBefore) before
    /// DATE (2026-07-01 or RFC 3339), e.g. what a CA's incident report names.
    #[arg(long, global = true, value_name = "DATE", requires = "renew_now")]
    pub issued_before: Option<String>,
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
        /// With --once: say what the run would do, as `certkeeper plan` does, and do nothing.
        #[arg(long, requires = "once")]
        dry_run: bool,
    },
    /// Show each certificate: serial, expiry, days left, term end, state and last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// In a fleet (`[cluster]`): per certificate, the serial the leader issued and which
        /// members serve it, read from etcd.
        #[arg(long)]
        cluster: bool,
    },
    /// Validate the configuration and report every error with its file, line and field, in the
    /// order of the file; hook programs must exist and be executable. Nothing is sent to the
    /// API unless --online is given.
    Check {
        /// Also ask the API, with calls that read and cost nothing: the URL and TLS (GET
        /// /hello), user, password and context (a search for one certificate), and each contact
        /// id the certificates name (GET /sslcontact/ID). Exit 1 when one fails.
        #[arg(long)]
        online: bool,
    },
    /// Show what a run would do for each certificate, when, why, and what it would cost, without
    /// doing it: only searches and infos are sent to the API (whether the account already holds
    /// an order), nothing is written. Exit 0 when the next run would buy nothing, 7 when it
    /// would buy something (a create or a term renewal).
    Plan {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the account's certificates (id, name, product, status, term end, expiry, names),
    /// mark those that match a configured certificate and say what certkeeper would do with
    /// each: adopt an order that fits (its first action is then a free reissue with a key of
    /// certkeeper's own), ask for a choice, or buy a new order. Only searches and infos are sent
    /// to the API, and nothing is written unless --write is given.
    Adopt {
        /// Bind each order that fits to its certificate in the state directory (taking its
        /// lock: stop a running daemon first); the next run reissues it for free.
        #[arg(long)]
        write: bool,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Settle a paid request whose answer was lost ("payment unresolved" in `status`): say which
    /// job or certificate it was (checked with the API), or that it never arrived (the next run
    /// then sends it again, a new paid request). Stop a running daemon first: this takes the
    /// state directory's lock.
    #[command(group(clap::ArgGroup::new("settle").required(true).args(["job", "certificate", "never_arrived"])))]
    Resolve {
        /// The certificate, as configured.
        name: String,
        /// The id of the job the request started (as the SSL Manager or `POST /job/_search`
        /// shows it).
        #[arg(long, value_name = "ID")]
        job: Option<i64>,
        /// The id of the certificate the request made (a create) or changed (a reissue).
        #[arg(long, value_name = "ID")]
        certificate: Option<i64>,
        /// The request never reached the API: nothing was ordered.
        #[arg(long)]
        never_arrived: bool,
    },
    /// Replace a certificate and revoke the old one: for a leaked key (`--reason key-compromise`),
    /// a certificate replaced for another reason (`superseded`) or no longer needed
    /// (`cessation`). A new key and a free reissue come first, deployed (and seen served where
    /// `serve_check` is set); only then is the serial that was live revoked. Journaled: killed at
    /// any point, run it again and it goes on, never revoking the served certificate and never
    /// revoking twice. Stop a running daemon first: this takes the state directory's lock.
    Revoke {
        /// The certificate, as configured.
        name: String,
        /// Why: key-compromise, superseded or cessation. Without it, nothing is revoked.
        #[arg(long, value_parser = ["key-compromise", "superseded", "cessation"])]
        reason: String,
    },
    /// Run the whole job against an embedded simulator: no network, no credentials needed.
    #[cfg(feature = "demo")]
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
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    DemoDnsHook {
        sim_url: String,
        ca_file: PathBuf,
        action: String,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `--config` on the command line (not from CERTKEEPER_CONFIG, not the default), given
    // before or after the command.
    let on_command_line =
        |m: &clap::ArgMatches| m.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    let config_given = on_command_line(&matches) || matches.subcommand().is_some_and(|(_, m)| on_command_line(m));
    init_logging(&cli.log_format);
    // One-shot commands run on one thread: their work is network I/O, and fewer threads mean
    // a smaller footprint. The daemon keeps a thread pool so that metrics stay responsive
    // while a key is generated.
    let daemon = matches!(cli.command, Some(Command::Run { once: false, .. })) && cli.renew_now.is_none();
    let mut builder = if daemon {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certkeeper: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Error.code());
        }
    };
    ExitCode::from(runtime.block_on(dispatch(cli, config_given)).code())
}

/// Whether messages go out as JSON (`--log-format json`): configuration errors too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn init_logging(format: &str) {
    JSON_LOGS.store(format == "json", std::sync::atomic::Ordering::Relaxed);
    use tracing_subscriber::prelude::*;
    // `LEVEL` or `LEVEL,TARGET=LEVEL,...`, e.g. `debug` or `info,certkeeper::dns=debug`.
    const DEFAULT: &str = "info,hickory=warn,reqwest=warn";
    const LOG_ENV: &str = "CERTKEEPER_LOG";
    let wanted = std::env::var(LOG_ENV).unwrap_or_else(|_| DEFAULT.into());
    let filter: tracing_subscriber::filter::Targets = wanted.parse().unwrap_or_else(|e| {
        eprintln!("certkeeper: {LOG_ENV}={wanted:?} is not a log filter ({e}); using {DEFAULT:?}");
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

async fn dispatch(cli: Cli, config_given: bool) -> Exit {
    // Only the demo refuses --config.
    #[cfg(not(feature = "demo"))]
    let _ = config_given;
    // --renew-now is accepted in one place (a global flag) and means one thing.
    if cli.renew_now.is_some() {
        let clash = match &cli.command {
            Some(Command::Run { once: true, .. }) => Some("--once (--renew-now already runs once)"),
            Some(Command::Status { .. }) => Some("status"),
            Some(Command::Check { .. }) => Some("check"),
            Some(Command::Plan { .. }) => Some("plan"),
            Some(Command::Adopt { .. }) => Some("adopt"),
            Some(Command::Resolve { .. }) => Some("resolve"),
            Some(Command::Revoke { .. }) => Some("revoke"),
            None | Some(Command::Run { .. }) => None,
            #[cfg(feature = "demo")]
            Some(_) => Some("this command"),
        };
        if let Some(what) = clash {
            eprintln!("certkeeper: --renew-now cannot be combined with {what}");
            return Exit::Config;
        }
    }
    match cli.command {
        // (--renew-now is refused above beside every command but `run` without --once.)
        _ if cli.all || !cli.patterns.is_empty() || cli.issued_before.is_some() => {
            if cli.renew_now.as_ref().is_some_and(|n| !n.is_empty()) {
                eprintln!(
                    "certkeeper: a campaign (--all, --match, --issued-before) takes no names; use --match PATTERN"
                );
                return Exit::Config;
            }
            let issued_before = match cli.issued_before.as_deref().map(parse_date).transpose() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("certkeeper: --issued-before: {e}");
                    return Exit::Config;
                }
            };
            let selection = crate::campaign::Selection {
                patterns: cli.patterns.clone(),
                issued_before,
            };
            match load(&cli.config) {
                Ok(config) => refused(crate::run::run_campaign(config, selection).await),
                Err(code) => code,
            }
        }
        Some(Command::Check { online }) => check(&cli.config, online).await,
        Some(Command::Resolve {
            name,
            job,
            certificate,
            never_arrived,
        }) => {
            use crate::order::reconcile::Settle;
            let settle = match (job, certificate, never_arrived) {
                (Some(id), _, _) => Settle::Job(id),
                (_, Some(id), _) => Settle::Certificate(id),
                _ => Settle::NeverArrived,
            };
            match load(&cli.config) {
                Ok(config) => refused(crate::run::resolve(config, &name, settle).await),
                Err(code) => code,
            }
        }
        Some(Command::Revoke { name, reason }) => {
            use crate::store::RevokeReason;
            let reason = match reason.as_str() {
                "key-compromise" => RevokeReason::KeyCompromise,
                "superseded" => RevokeReason::Superseded,
                _ => RevokeReason::Cessation,
            };
            match load(&cli.config) {
                Ok(config) => refused(crate::revoke::revoke(config, &name, reason).await),
                Err(code) => code,
            }
        }
        Some(Command::Plan { json }) => plan(&cli.config, json).await,
        Some(Command::Run { dry_run: true, .. }) => plan(&cli.config, false).await,
        Some(Command::Adopt { write, json }) => match load(&cli.config) {
            Ok(config) => match crate::adopt::adopt(config, write).await {
                Ok(report) => {
                    if json {
                        println_out(&serde_json::to_string_pretty(&report).unwrap_or_default());
                    } else {
                        println_out(&crate::adopt::table(&report, write));
                    }
                    Exit::Ok
                }
                Err(r) => refused(Err(r)),
            },
            Err(code) => code,
        },
        Some(Command::Status { json, cluster: true }) => match load(&cli.config) {
            Ok(config) => cluster_status(&config, json).await,
            Err(code) => code,
        },
        Some(Command::Status { json, .. }) => match load(&cli.config) {
            Ok(config) => status(&config, json),
            Err(code) => code,
        },
        #[cfg(feature = "demo")]
        Some(Command::Demo { .. }) if config_given => {
            eprintln!(
                "certkeeper: demo writes and uses a configuration of its own in --dir; --config has no effect on it"
            );
            Exit::Config
        }
        #[cfg(feature = "demo")]
        Some(Command::Demo { dir, force }) => crate::demo::run(&dir, force).await,
        #[cfg(feature = "demo")]
        Some(Command::DemoDnsHook {
            sim_url,
            ca_file,
            action,
        }) => crate::demo::dns_hook(&sim_url, &ca_file, &action).await,
        Some(Command::Run { once, .. }) => {
            let renew = cli.renew_now;
            // The daemon reads its file on one thread, at start as at every re-read: what
            // other threads allocate stays in their own arenas for as long as it runs.
            let threads = if renew.is_some() || once {
                Threads::Every
            } else {
                Threads::One
            };
            match load_on(&cli.config, threads) {
                Ok(config) if renew.is_some() || once => refused(crate::run::run_once(config, renew).await),
                Ok(config) => refused(crate::daemon::run(cli.config.clone(), config).await),
                Err(code) => code,
            }
        }
        None => match (cli.renew_now, load(&cli.config)) {
            (Some(names), Ok(config)) => refused(crate::run::run_once(config, Some(names)).await),
            (None, _) => {
                eprintln!(
                    "certkeeper: nothing to do; try `certkeeper run --once`, `certkeeper --renew-now` or `certkeeper --help`"
                );
                Exit::Error
            }
            (_, Err(code)) => code,
        },
    }
}

/// `status --cluster`: the fleet's view, from etcd.
async fn cluster_status(config: &Config, json: bool) -> Exit {
    #[cfg(feature = "cluster")]
    {
        match crate::cluster::status::read(config).await {
            Ok(view) => {
                if json {
                    println_out(&serde_json::to_string_pretty(&view).unwrap_or_default());
                } else {
                    println_out(crate::cluster::status::table(&view).trim_end());
                }
                Exit::Ok
            }
            Err(e) => {
                eprintln!("certkeeper: {e}");
                Exit::Error
            }
        }
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = (config, json);
        eprintln!("certkeeper: this certkeeper was built without fleet mode (the cargo feature \"cluster\")");
        Exit::Config
    }
}

/// A date as `--issued-before` takes it: `2026-07-01` (midnight UTC) or RFC 3339.
fn parse_date(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &day)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| format!("'{s}' is not a date such as 2026-07-01 or 2026-07-01T12:00:00Z"))
}

/// `plan` (and `run --once --dry-run`): what a run would do; exit 7 when it would buy.
async fn plan(path: &Path, json: bool) -> Exit {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match crate::plan::plan(config).await {
        Ok(plan) => {
            if json {
                println_out(&serde_json::to_string_pretty(&plan).unwrap_or_default());
            } else {
                println_out(&crate::plan::table(&plan));
            }
            if crate::plan::would_pay(&plan) {
                Exit::WouldPay
            } else {
                Exit::Ok
            }
        }
        Err(e) => {
            eprintln!("certkeeper: {e:#}");
            Exit::Error
        }
    }
}

/// Prints why a command could not start, if it could not.
fn refused(result: Result<Exit, crate::run::Refusal>) -> Exit {
    result.unwrap_or_else(|r| {
        eprintln!("certkeeper: {}", r.message);
        r.exit
    })
}

/// Reads the configuration for a command that puts it in force: errors are printed (as JSON
/// log lines under `--log-format json`), warnings logged.
fn load(path: &Path) -> Result<Config, Exit> {
    load_on(path, Threads::Every)
}

/// [`load`] on the threads given.
fn load_on(path: &Path, threads: Threads) -> Result<Config, Exit> {
    let config = read_on(path, threads)?;
    config.log_warnings();
    Ok(config)
}

fn read(path: &Path) -> Result<Config, Exit> {
    read_on(path, Threads::Every)
}

fn read_on(path: &Path, threads: Threads) -> Result<Config, Exit> {
    config::read_on(path, threads).map_err(|errors| {
        for e in &errors.0 {
            config_problem("error", e);
        }
        Exit::Config
    })
}

fn config_problem(severity: &str, e: &config::ConfigError) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        let line = e.line;
        let (file, field) = (e.file.display(), &e.field);
        match severity {
            "error" => tracing::error!(%file, line, %field, "{}", e.message),
            _ => tracing::warn!(%file, line, %field, "{}", e.message),
        }
    } else if severity == "error" {
        eprintln!("certkeeper: {e}");
    } else {
        eprintln!("certkeeper: {severity}: {e}");
    }
}

/// `check`: every error and warning once, in the order of the file. A hook program that cannot
/// be run is an error here (check runs where the hooks will), a warning when loading.
async fn check(path: &Path, online: bool) -> Exit {
    let c = match read(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut failed = false;
    for w in &c.warnings {
        let program = w.kind == config::WarningKind::Program;
        failed |= program;
        config_problem(if program { "error" } else { "warning" }, &w.error);
    }
    if failed {
        return Exit::Config;
    }
    if online {
        let mut ok = true;
        for f in crate::online::check(&c).await {
            match f.result {
                Ok(said) => println_out(&format!("{}: {said}", f.what)),
                Err(e) => {
                    ok = false;
                    eprintln!("certkeeper: {}: {e}", f.what);
                }
            }
        }
        if !ok {
            return Exit::Error;
        }
    }
    println_out(&format!(
        "{}: configuration is valid ({} certificate(s){})",
        path.display(),
        c.certificates.len(),
        match c.warnings.len() {
            0 => String::new(),
            n => format!(", {n} warning(s)"),
        }
    ));
    Exit::Ok
}

fn println_out(s: &str) {
    crate::run::say(s);
}

fn status(config: &Config, json: bool) -> Exit {
    let rows = crate::status::rows(config);
    let campaign = crate::status::campaign(config);
    if json {
        let report = crate::status::Report {
            schema_version: crate::status::SCHEMA_VERSION,
            certificates: rows,
            campaign,
        };
        println_out(&serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        if let Some(c) = &campaign {
            println_out(&format!(
                "campaign {} in progress since {} ({}): {}/{} done, {} failed",
                c.id, c.started, c.selection, c.ended, c.total, c.failed
            ));
        }
        println_out(&crate::status::table(&rows));
    }
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` listed the exit codes up to 7 after 8 was added. Every code is there, and no
    /// other.
    #[test]
    fn the_help_names_every_exit_code() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let listed = help
            .split("Exit codes: ")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("the help has its exit codes")
            .replace('\n', " ");
        let mut codes: Vec<u8> = listed
            .split(", ")
            .filter_map(|item| item.split(' ').next()?.parse().ok())
            .collect();
        codes.dedup();
        let all: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, all, "{listed}");
    }
}
