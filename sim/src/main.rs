//! The `autodns-sim` binary: the simulator as a process. It prints one JSON line with its
//! addresses on stdout when ready, logs to stderr, and stops on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use autodns_sim::config::parse_duration;
use autodns_sim::{
    Account, CaList, CreatedPrecision, DcvForm, Durations, Faults, JobOutcome, Mutation, RateLimitAnswer, Sim,
    SimConfig,
};
use clap::Parser;

/// A fault-injecting stand-in for the InterNetX AutoDNS SSL Manager API, with a test CA and an
/// authoritative DNS server. With no flags it listens on free loopback ports with TLS and serves
/// the account demo / demo-password in context 4.
///
/// By default it answers as the real samples of the API show the service (jobs without events or
/// ctid, ended jobs only in the history, DEFERRED while DNS is not seen, undocumented search keys
/// refused, 429 without Retry-After per client IP); each friendlier or older form is a fault
/// knob below, or a field of --faults.
///
/// Every option can also be given in the environment variable named in its help.
#[derive(Debug, Parser)]
#[command(name = "autodns-sim", version)]
struct Args {
    /// Address of the JSON API (port 0: a free port).
    #[arg(long, env = "AUTODNS_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address of the DNS server, UDP and TCP (port 0: a free port).
    #[arg(long, env = "AUTODNS_SIM_DNS_LISTEN", default_value = "127.0.0.1:0")]
    dns_listen: SocketAddr,
    /// Serve plain HTTP instead of TLS.
    #[arg(long, env = "AUTODNS_SIM_PLAIN_HTTP")]
    plain_http: bool,
    /// An account as USER:PASSWORD:CONTEXT; repeat for several. Default: demo:demo-password:4.
    #[arg(long = "account", env = "AUTODNS_SIM_ACCOUNTS", value_delimiter = ',')]
    accounts: Vec<String>,
    /// A JSON file with accounts: [{"user": ..., "password": ..., "context": 4}].
    #[arg(long, env = "AUTODNS_SIM_ACCOUNTS_FILE")]
    accounts_file: Option<PathBuf>,
    /// A zone the DNS server is authoritative for; repeat for several.
    /// Default: example.com, example.net, example.org.
    #[arg(long = "zone", env = "AUTODNS_SIM_ZONES", value_delimiter = ',')]
    zones: Vec<String>,
    /// Check domain control against this nameserver (e.g. a BIND9) instead of our own.
    #[arg(long, env = "AUTODNS_SIM_DCV_NAMESERVER")]
    dcv_nameserver: Option<SocketAddr>,
    /// Length of one month of order term, e.g. 30d or 10s.
    #[arg(long, env = "AUTODNS_SIM_MONTH", default_value = "30d", value_parser = parse_duration)]
    month: Duration,
    /// Longest validity of one certificate (never past the order term).
    #[arg(long, env = "AUTODNS_SIM_CERT_VALIDITY", default_value = "199d", value_parser = parse_duration)]
    cert_validity: Duration,
    /// Delay before a record the simulator provisions becomes visible in DNS.
    #[arg(long, env = "AUTODNS_SIM_PROPAGATION_DELAY", default_value = "0s", value_parser = parse_duration)]
    propagation_delay: Duration,
    /// Least time a job stays RUNNING.
    #[arg(long, env = "AUTODNS_SIM_JOB_DELAY", default_value = "0s", value_parser = parse_duration)]
    job_delay: Duration,
    /// How long a job waits for its DNS record, its file or its approval before it fails.
    #[arg(long, env = "AUTODNS_SIM_DCV_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    dcv_timeout: Duration,
    /// EMAIL jobs (an approver's mail, S/MIME orders) count as approved after this long.
    /// Default: only when approved through POST /_sim/jobs/{id} {"action": "approve"}.
    #[arg(long, env = "AUTODNS_SIM_APPROVAL_DELAY", value_parser = parse_duration)]
    approval_delay: Option<Duration>,
    /// Where a FILE validation's HTTP GET goes, with the name in the Host header (e.g. an nginx
    /// on 127.0.0.1:8080). Default: port 80 of the name's A record in the simulator's DNS.
    #[arg(long, env = "AUTODNS_SIM_FILE_CHECK_ADDRESS")]
    file_check_address: Option<SocketAddr>,
    /// How long the hang fault holds a request before dropping it.
    #[arg(long, env = "AUTODNS_SIM_HANG", default_value = "60s", value_parser = parse_duration)]
    hang: Duration,
    /// Seed for tokens and faults, so that a run can be repeated.
    #[arg(long, env = "AUTODNS_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Where to write the root CA certificate (default: a temporary file).
    #[arg(long, env = "AUTODNS_SIM_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Fault settings as JSON, the same as POST /_sim/faults takes (see sim/README.md): rate,
    /// routes, kinds, rate_limit, rate_limit_answer, job_outcome, duplicate_poll, foreign_poll,
    /// foreign_poll_hold, mutation, dcv_line, file_name, job_event_ctid, finished_jobs_stay,
    /// notify_deferred, job_search_data, search_brief, created_precision, ca_list, payable, dcv_form. The flags
    /// below override it.
    #[arg(long, env = "AUTODNS_SIM_FAULTS")]
    faults: Option<String>,
    /// Share of requests that fail (0.0 to 1.0), on every route.
    #[arg(long, env = "AUTODNS_SIM_FAULT_RATE")]
    fault_rate: Option<f64>,
    /// Client requests allowed per second per client IP address (default 3; 0: no limit).
    #[arg(long, env = "AUTODNS_SIM_RATE_LIMIT")]
    rate_limit: Option<f64>,
    /// How a request over the rate limit is answered: 429 (default: the error envelope, no
    /// Retry-After, as none is documented), delay (held until it fits, then served) or
    /// 429_retry_after (with Retry-After). The status429 fault follows it.
    #[arg(long, env = "AUTODNS_SIM_RATE_LIMIT_ANSWER", value_parser = parse_enum::<RateLimitAnswer>)]
    rate_limit_answer: Option<RateLimitAnswer>,
    /// How new jobs end: normal, fail or stuck.
    #[arg(long, env = "AUTODNS_SIM_JOB_OUTCOME", value_parser = parse_enum::<JobOutcome>)]
    job_outcome: Option<JobOutcome>,
    /// Spoil delivered certificates: wrong_key, missing_san, expired, not_yet_valid,
    /// chain_out_of_order or missing_intermediate.
    #[arg(long, env = "AUTODNS_SIM_MUTATION", value_parser = parse_enum::<Mutation>)]
    mutation: Option<Mutation>,
    /// Queue every poll message twice.
    #[arg(long, env = "AUTODNS_SIM_DUPLICATE_POLL")]
    duplicate_poll: bool,
    /// Before each of our poll messages, queue a foreign one (alternately another client's job,
    /// with another ctid, and a system notice without a job) that stays at the head of the
    /// queue for --foreign-poll-hold. Confirming it is allowed, and counted in GET /_sim/stats
    /// (foreign_confirmed).
    #[arg(long, env = "AUTODNS_SIM_FOREIGN_POLL")]
    foreign_poll: bool,
    /// How long a foreign poll message stays at the head of the queue before its owner confirms
    /// it (default 10m).
    #[arg(long, env = "AUTODNS_SIM_FOREIGN_POLL_HOLD", value_parser = parse_duration)]
    foreign_poll_hold: Option<Duration>,
    /// Jobs carry the spec's events[] with the ctid of the request that started them (no real
    /// sample has them).
    #[arg(long, env = "AUTODNS_SIM_JOB_EVENT_CTID")]
    job_event_ctid: bool,
    /// Ended jobs stay at GET /job/{id} and in POST /job/_search, besides the history (by
    /// default they are only under /job/history and GET /job/{id} answers 404 EF300101).
    #[arg(long, env = "AUTODNS_SIM_FINISHED_JOBS_STAY")]
    finished_jobs_stay: bool,
    /// Queue a poll message (job status DEFERRED, not final) when a DNS job first waits for its
    /// record.
    #[arg(long, env = "AUTODNS_SIM_NOTIFY_DEFERRED")]
    notify_deferred: bool,
    /// POST /job/_search answers each job's object.data (the certificate id), which the real
    /// sample lacks.
    #[arg(long, env = "AUTODNS_SIM_JOB_SEARCH_DATA")]
    job_search_data: bool,
    /// POST /certificate/_search answers each certificate with its id and name only (no real
    /// search answer is published; a client reads the rest by id).
    #[arg(long, env = "AUTODNS_SIM_SEARCH_BRIEF")]
    search_brief: bool,
    /// The precision of created in jobs and certificates: second (default) or day (midnight, as
    /// the 2018 samples show; created filters compare against it).
    #[arg(long, env = "AUTODNS_SIM_CREATED_PRECISION", value_parser = parse_enum::<CreatedPrecision>)]
    created_precision: Option<CreatedPrecision>,
    /// certificationAuthority lists both (default: intermediate, root), one (the intermediate)
    /// or none (an empty list).
    #[arg(long, env = "AUTODNS_SIM_CA_LIST", value_parser = parse_enum::<CaList>)]
    ca_list: Option<CaList>,
    /// Certificates show payable (the term end), multiyear and reissueRequired, as the 2022
    /// sample does (the 2018-2020 samples have none of them).
    #[arg(long, env = "AUTODNS_SIM_PAYABLE")]
    payable: bool,
    /// The DNS validation entry: spec (default: with name, NAME.<TAB>300<TAB>IN<TAB>TXT),
    /// double_tab (a double tab after the name), no_name (no name field) or double_tab_no_name
    /// (the 2018 help pages exactly).
    #[arg(long, env = "AUTODNS_SIM_DCV_FORM", value_parser = parse_enum::<DcvForm>)]
    dcv_form: Option<DcvForm>,
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

fn config(args: Args) -> Result<SimConfig, String> {
    let mut accounts = Vec::new();
    for a in &args.accounts {
        let mut parts = a.rsplitn(2, ':');
        let context = parts.next().and_then(|c| c.parse::<i32>().ok());
        let rest = parts.next();
        match (rest.and_then(|r| r.split_once(':')), context) {
            (Some((user, password)), Some(context)) if !user.is_empty() => accounts.push(Account {
                user: user.into(),
                password: password.into(),
                context,
            }),
            _ => {
                return Err(format!(
                    "--account '{}' is not USER:PASSWORD:CONTEXT",
                    a.split(':').next().unwrap_or("")
                ));
            }
        }
    }
    if let Some(path) = &args.accounts_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let more: Vec<Account> = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        accounts.extend(more);
    }
    if accounts.is_empty() {
        accounts.push(Account::demo());
    }
    let mut faults: Faults = match &args.faults {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("--faults: {e}"))?,
        None => Faults::default(),
    };
    if let Some(rate) = args.fault_rate {
        faults.rate = rate;
    }
    if let Some(limit) = args.rate_limit {
        faults.rate_limit = limit;
    }
    if let Some(outcome) = args.job_outcome {
        faults.job_outcome = outcome;
    }
    if args.mutation.is_some() {
        faults.mutation = args.mutation;
    }
    if let Some(answer) = args.rate_limit_answer {
        faults.rate_limit_answer = answer;
    }
    if let Some(hold) = args.foreign_poll_hold {
        faults.foreign_poll_hold = hold;
    }
    if let Some(p) = args.created_precision {
        faults.created_precision = p;
    }
    if let Some(l) = args.ca_list {
        faults.ca_list = l;
    }
    if let Some(f) = args.dcv_form {
        faults.dcv_form = f;
    }
    // A flag turns its knob on; leaving it out keeps what --faults says.
    for (flag, knob) in [
        (args.duplicate_poll, &mut faults.duplicate_poll),
        (args.foreign_poll, &mut faults.foreign_poll),
        (args.job_event_ctid, &mut faults.job_event_ctid),
        (args.finished_jobs_stay, &mut faults.finished_jobs_stay),
        (args.notify_deferred, &mut faults.notify_deferred),
        (args.job_search_data, &mut faults.job_search_data),
        (args.search_brief, &mut faults.search_brief),
        (args.payable, &mut faults.payable),
    ] {
        *knob |= flag;
    }
    faults.validate()?;
    let mut config = SimConfig {
        api_listen: args.listen,
        dns_listen: args.dns_listen,
        tls: !args.plain_http,
        accounts,
        dcv_nameserver: args.dcv_nameserver,
        file_check_address: args.file_check_address,
        durations: Durations {
            month: args.month,
            cert_validity: args.cert_validity,
            propagation_delay: args.propagation_delay,
            job_delay: args.job_delay,
            dcv_timeout: args.dcv_timeout,
            approval_delay: args.approval_delay,
            hang: args.hang,
            ..Durations::default()
        },
        faults,
        seed: args.seed,
        ca_file: args.ca_file,
        ..SimConfig::default()
    };
    if !args.zones.is_empty() {
        config.zones = args.zones;
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    use tracing_subscriber::prelude::*;
    let wanted = std::env::var("AUTODNS_SIM_LOG").unwrap_or_else(|_| "info".into());
    let filter: tracing_subscriber::filter::Targets = wanted.parse().unwrap_or_else(|e| {
        eprintln!("autodns-sim: AUTODNS_SIM_LOG={wanted:?} is not a log filter ({e}); using \"info\"");
        "info".parse().expect("the default log filter parses")
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only on a terminal: a redirected log stays plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .init();
    let config = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("autodns-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = match Sim::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("autodns-sim: cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let ready = serde_json::json!({
        "api": sim.api_url,
        "dns": sim.dns_addr.to_string(),
        "ca_file": sim.ca_file,
        "sim": sim.sim_url(),
        "pid": std::process::id(),
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{ready}");
    }
    tracing::info!(api = %sim.api_url, dns = %sim.dns_addr, "autodns-sim is ready");
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("autodns-sim: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    drop(sim);
    ExitCode::SUCCESS
}
