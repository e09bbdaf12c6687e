//! Running certkeeper once over its certificates: the start (agent, directories, lock), the run
//! over what is due (or forced), and the exit status with its one precedence. The command line,
//! the daemon and the demo all start and run through here.

use std::io::IsTerminal;
use std::sync::Arc;

use crate::config::{CertConfig, Config};
use crate::order::{Agent, Outcome};

/// How a command ended, as its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: success, or nothing was due.
    Ok,
    /// 1: any other error.
    Error,
    /// 2: the configuration (or the command line) is wrong; nothing was done.
    Config,
    /// 3: an order failed.
    OrderFailed,
    /// 4: a certificate was issued but not deployed (the reload hook failed).
    NotDeployed,
    /// 5: another certkeeper holds the state directory.
    Locked,
    /// 6: the answer to a paid request was lost and is not settled yet (nothing was sent
    /// again): still being reconciled, or "payment unresolved" (see `status`).
    Unsettled,
    /// 7: `plan` only: the next run would buy something (a create or a term renewal).
    WouldPay,
    /// 8: something the configuration does not allow waits for the operator (a new order where
    /// `new_orders = "deny"`, the next term without `renew_term`, a paid request over
    /// `max_paid_orders`, a choice between the account's orders); nothing was bought.
    Waiting,
    /// 9: an order was made (and may be paid) and its job waits for a person to answer the
    /// CA's approval mail (`validation = "email"`, S/MIME); the next run looks again.
    AwaitingApproval,
}

impl Exit {
    /// The process exit status.
    pub(crate) fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Config => 2,
            Exit::OrderFailed => 3,
            Exit::NotDeployed => 4,
            Exit::Locked => 5,
            Exit::Unsettled => 6,
            Exit::WouldPay => 7,
            Exit::Waiting => 8,
            Exit::AwaitingApproval => 9,
        }
    }

    /// The exit status's meaning, from its number (as the daemon's control socket sends it).
    pub(crate) fn from_code(code: u8) -> Option<Exit> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// Every exit status, in the order of their numbers.
    pub(crate) const ALL: [Exit; 10] = [
        Exit::Ok,
        Exit::Error,
        Exit::Config,
        Exit::OrderFailed,
        Exit::NotDeployed,
        Exit::Locked,
        Exit::Unsettled,
        Exit::WouldPay,
        Exit::Waiting,
        Exit::AwaitingApproval,
    ];

    /// How serious, for a run over many certificates: what a run reports is its most serious
    /// outcome. An order failure outranks a deploy failure (a certificate that could not be
    /// ordered is further from being served than one that waits for its reload), and a paid
    /// request of unknown outcome outranks both (money may be at stake). A certificate waiting
    /// for the operator's consent is between the two failures: nothing went wrong, but nothing
    /// will happen until the operator acts. An order waiting for its approval mail is the least
    /// of them: it is under way.
    fn rank(self) -> u8 {
        match self {
            Exit::Ok | Exit::WouldPay => 0,
            Exit::AwaitingApproval => 1,
            Exit::NotDeployed => 2,
            Exit::Waiting => 3,
            Exit::OrderFailed => 4,
            Exit::Unsettled => 5,
            Exit::Error => 6,
            Exit::Config => 7,
            Exit::Locked => 8,
        }
    }

    /// The more serious of two outcomes.
    pub(crate) fn worst(self, other: Exit) -> Exit {
        if other.rank() > self.rank() { other } else { self }
    }
}

/// Prints a line on stdout. A reader that went away (`certkeeper status | head`) ends the
/// process quietly with success, as other command-line tools do, instead of a panic.
pub(crate) fn say(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{s}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        tracing::warn!(error = %e, "cannot write to stdout");
    }
}

/// Why a command could not start: the message for the operator and the exit status. The
/// command line prints it; nothing below it talks to the terminal.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(exit: Exit, message: String) -> Self {
        Self { exit, message }
    }
}

/// Does what is due (or reissues `renew` now), then returns the exit code.
pub(crate) async fn run_once(config: Config, renew: Option<Vec<String>>) -> Result<Exit, Refusal> {
    // Names compare as `check` compares them: without case.
    let renew: Option<Vec<String>> = renew.map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect());
    if let Some(names) = &renew
        && let Some(unknown) = names
            .iter()
            .find(|n| !config.certificates.iter().any(|c| &c.name == *n))
    {
        return Err(Refusal::new(
            Exit::Config,
            format!("{unknown} is not a configured certificate"),
        ));
    }
    let state_dir = config.store.state_dir.clone();
    // A daemon holding the state directory is handed the request through its control socket.
    let wait = config.order.job_timeout + config.order.reconcile_grace + std::time::Duration::from_secs(300);
    let (agent, _lock) = match (start(config), &renew) {
        (Err(r), Some(names)) if r.exit == Exit::Locked => {
            return crate::control::hand_over(&state_dir, names, wait)
                .await
                .map_err(|mut e| {
                    if e.exit == Exit::Locked {
                        e.message = format!("{} {}", r.message, e.message);
                    }
                    e
                });
        }
        (started, _) => started?,
    };
    Ok(run_all(&agent, renew.as_deref()).await)
}

/// `--renew-now --all` (or `--match`, `--issued-before`): the campaign in progress, or a new
/// one, run here; while a daemon holds the state directory, recorded and handed to it, and
/// followed here.
pub(crate) async fn run_campaign(config: Config, selection: crate::campaign::Selection) -> Result<Exit, Refusal> {
    let state_dir = config.store.state_dir.clone();
    match start(config.clone()) {
        Ok((agent, _lock)) => {
            let (campaign, log) = crate::campaign::begin(&agent, &selection)?;
            Ok(crate::campaign::run(&agent, campaign, log).await)
        }
        Err(r) if r.exit == Exit::Locked => {
            let agent = Agent::new(config).map_err(|e| Refusal::new(Exit::Error, format!("{e:#}")))?;
            crate::campaign::begin(&agent, &selection)?;
            crate::control::hand_campaign(&state_dir).await.map_err(|mut e| {
                if e.exit == Exit::Locked {
                    e.message = format!("{} {}", r.message, e.message);
                }
                e
            })?;
            crate::campaign::follow(&agent).await
        }
        Err(r) => Err(r),
    }
}

/// What one certificate's run came to: its exit status and the line that says it.
pub(crate) fn outcome_line(name: &str, result: &anyhow::Result<Outcome>) -> (Exit, String) {
    match result {
        Ok(Outcome::NothingDue) => (Exit::Ok, format!("{name}: nothing due")),
        Ok(Outcome::Deployed { serial, generation }) => (
            Exit::Ok,
            format!("{name}: deployed serial {serial} (generation {generation})"),
        ),
        Ok(Outcome::NotDeployed { serial, error, .. }) => (
            Exit::NotDeployed,
            format!("{name}: issued serial {serial} but NOT deployed: {error}"),
        ),
        Ok(Outcome::Unsettled { message, .. }) => (Exit::Unsettled, format!("{name}: NOT SETTLED: {message}")),
        Ok(Outcome::Waiting { message, .. }) => (Exit::Waiting, format!("{name}: WAITING: {message}")),
        Ok(Outcome::AwaitingApproval { message, .. }) => (
            Exit::AwaitingApproval,
            format!("{name}: WAITING FOR APPROVAL: {message}"),
        ),
        Err(e) => (Exit::OrderFailed, format!("{name}: FAILED: {e:#}")),
    }
}

/// `certkeeper resolve`: settles the lost answer of `name`'s paid request as the operator says.
pub(crate) async fn resolve(
    config: Config,
    name: &str,
    settle: crate::order::reconcile::Settle,
) -> Result<Exit, Refusal> {
    let name = name.to_ascii_lowercase();
    let Some(cert) = config.certificates.iter().find(|c| c.name == name).cloned() else {
        return Err(Refusal::new(
            Exit::Config,
            format!("{name} is not a configured certificate"),
        ));
    };
    let (agent, _lock) = start(config)?;
    match agent.resolve(&cert, settle).await {
        Ok(done) => {
            say(&done);
            Ok(Exit::Ok)
        }
        Err(e) => Err(Refusal::new(Exit::Error, format!("{e:#}"))),
    }
}

/// Builds the agent, creates its directories and takes the state directory's lock; on failure
/// says why, with the exit status.
pub(crate) fn start(config: Config) -> Result<(Arc<Agent>, crate::store::Lock), Refusal> {
    if config.cluster.is_some() {
        return Err(Refusal::new(
            Exit::Config,
            format!(
                "{} has a [cluster] table: in a fleet only the elected member's daemon (`certkeeper run`) talks to the API; this command would order or change orders on this host alone",
                config.path.display()
            ),
        ));
    }
    start_member(config)
}

/// [`start`] for a fleet's member (`crate::cluster::run`).
pub(crate) fn start_member(config: Config) -> Result<(Arc<Agent>, crate::store::Lock), Refusal> {
    let agent = Agent::new(config)
        .map(Arc::new)
        .map_err(|e| Refusal::new(Exit::Error, format!("{e:#}")))?;
    agent.store.prepare().map_err(|e| {
        Refusal::new(
            Exit::Error,
            format!(
                "cannot use {} and {}: {e}",
                agent.store.state_dir.display(),
                agent.store.live_dir.display()
            ),
        )
    })?;
    let mut lock = agent.store.lock().map_err(|e| Refusal::new(Exit::Locked, e))?;
    lock.sweep();
    Ok((agent, lock))
}

/// Runs the `on_failure` hook, if one is configured, for `event` (`failed`, `not_deployed`,
/// `not_served`, `expiring`): from the daemon and from one-shot runs alike, so that cron and timers are told
/// too. The failure count is the state file's, or `at_least` where the caller knows of more (a
/// task that panicked recorded nothing).
pub(crate) async fn tell_on_failure(
    agent: &Agent,
    cert: &crate::config::CertConfig,
    event: &str,
    error: &str,
    at_least: u32,
) {
    let argv = &agent.config.daemon.on_failure;
    if argv.is_empty() {
        return;
    }
    let st = agent.store.load(&cert.name).unwrap_or_default();
    let env = crate::hooks::FailureEnv {
        name: &cert.name,
        event,
        error,
        failures: st.failures.max(at_least),
        not_after: st.not_after,
        not_served: st.not_served.as_deref(),
    }
    .vars();
    if let Err(e) = crate::hooks::run(argv, &env, cert.hook_timeout).await {
        tracing::error!(cert = %cert.name, error = %e, "the on_failure hook failed");
    }
}

/// Gives every live key the owner, group and mode its configuration says (a changed
/// `key_owner`, `key_group` or `key_mode` applies without a reissue).
pub(crate) fn apply_key_access(agent: &Agent) {
    let dirs = agent.store.look().ok();
    for cert in &agent.config.certificates {
        apply_key_access_of(agent, dirs.as_ref(), cert);
    }
}

fn apply_key_access_of(agent: &Agent, look: Option<&crate::store::Look>, cert: &CertConfig) {
    match agent.store.apply_key_access(look, &cert.name, cert.key_access) {
        Ok(false) => {}
        Ok(true) => tracing::info!(cert = %cert.name, "gave the live key the configured owner, group and mode"),
        Err(e) => {
            tracing::error!(cert = %cert.name, error = %e, "cannot give the live key the configured owner, group and mode")
        }
    }
}

/// Gives the live key of every certificate of `picked` its configured access (as
/// [`apply_key_access`]) and returns those that are due (all of them when `force`). A run for
/// named certificates (`--renew-now NAME`) looks at those alone: the others' keys get their
/// access at the next run or the daemon's next pass. At 100,000 certificates a run with nothing
/// due is this look, a state file and a key's metadata per certificate, so it is shared out over
/// the CPUs.
fn look_at_all(agent: &Agent, picked: impl Fn(&CertConfig) -> bool, force: bool, now: i64) -> Vec<CertConfig> {
    let all: Vec<&CertConfig> = agent.config.certificates.iter().filter(|c| picked(c)).collect();
    // Below a few thousand certificates one thread is as fast as starting more.
    let part = crate::config::part_size(all.len());
    // Where the directories cannot be opened, each path is resolved in full (and its error
    // reported for its certificate, as before).
    let dirs = agent.store.look().ok();
    let look = |c: &&CertConfig| {
        apply_key_access_of(agent, dirs.as_ref(), c);
        force || agent.is_due(dirs.as_ref(), c, now)
    };
    let due: Vec<bool> = if all.len() <= part {
        all.iter().map(look).collect()
    } else {
        std::thread::scope(|s| {
            let parts: Vec<_> = all
                .chunks(part)
                .map(|p| s.spawn(|| p.iter().map(look).collect::<Vec<bool>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    };
    all.into_iter()
        .zip(due)
        .filter(|(_, due)| *due)
        .map(|(c, _)| c.clone())
        .collect()
}

/// Works on every certificate (or the named ones, forced), a bounded number at a time.
pub(crate) async fn run_all(agent: &Arc<Agent>, renew: Option<&[String]>) -> Exit {
    let force = renew.is_some();
    // Only what is due gets a task; a run with nothing due touches nothing but the state files.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let picked = |c: &CertConfig| renew.is_none_or(|n| n.is_empty() || n.contains(&c.name));
    let certs = look_at_all(agent, picked, force, now);
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
            // Cron and timers hear of failures as the daemon's operators do.
            match &result {
                Ok(Outcome::NotDeployed { error, not_served, .. }) => {
                    let event = if *not_served { "not_served" } else { "not_deployed" };
                    tell_on_failure(&agent, &cert, event, error, 0).await
                }
                Ok(Outcome::Unsettled {
                    unresolved: true,
                    newly: true,
                    message,
                }) => tell_on_failure(&agent, &cert, "payment_unresolved", message, 0).await,
                // Told once, when the wait begins (the next runs would only repeat it).
                Ok(Outcome::Waiting { newly: true, message }) => {
                    tell_on_failure(&agent, &cert, "consent_needed", message, 0).await
                }
                Ok(Outcome::AwaitingApproval { newly: true, message }) => {
                    tell_on_failure(&agent, &cert, "awaiting_approval", message, 0).await
                }
                Err(e) => tell_on_failure(&agent, &cert, "failed", &format!("{e:#}"), 0).await,
                Ok(_) => {}
            }
            (cert.name, result)
        });
    }
    let mut code = Exit::Ok;
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += 1;
        let (name, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "a task failed");
                code = code.worst(Exit::Error);
                continue;
            }
        };
        match &result {
            Ok(Outcome::Unsettled { message, .. }) => {
                tracing::warn!(cert = %name, %message, "the outcome of a paid request is not settled");
            }
            Err(e) => tracing::error!(cert = %name, error = %format!("{e:#}"), "order failed"),
            Ok(Outcome::Waiting { message, .. }) => {
                tracing::warn!(cert = %name, %message, "waiting for the operator; nothing was bought")
            }
            Ok(Outcome::AwaitingApproval { message, .. }) => {
                tracing::warn!(cert = %name, %message, "the order waits for its approval")
            }
            Ok(_) => {}
        }
        let (exit, line) = outcome_line(&name, &result);
        code = code.worst(exit);
        if progress {
            say(&format!("[{done}/{total}] {line}"));
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an order failure and a deploy failure in the same run, the run reported 4 (the
    /// larger number), though an order failure is the more serious.
    #[test]
    fn an_order_failure_outranks_a_deploy_failure_in_either_order() {
        assert_eq!(Exit::OrderFailed.worst(Exit::NotDeployed), Exit::OrderFailed);
        assert_eq!(Exit::NotDeployed.worst(Exit::OrderFailed), Exit::OrderFailed);
        assert_eq!(Exit::Ok.worst(Exit::NotDeployed), Exit::NotDeployed);
        assert_eq!(Exit::OrderFailed.worst(Exit::Error), Exit::Error);
        assert_eq!(Exit::Ok.worst(Exit::Ok).code(), 0);
        assert_eq!(Exit::OrderFailed.worst(Exit::Unsettled), Exit::Unsettled);
        assert_eq!(Exit::Unsettled.worst(Exit::Error), Exit::Error);
        assert_eq!(Exit::Waiting.worst(Exit::NotDeployed), Exit::Waiting);
        assert_eq!(Exit::Waiting.worst(Exit::OrderFailed), Exit::OrderFailed);
        // An order waiting for its approval mail is under way: any trouble outranks it.
        assert_eq!(Exit::AwaitingApproval.worst(Exit::NotDeployed), Exit::NotDeployed);
        assert_eq!(Exit::Ok.worst(Exit::AwaitingApproval), Exit::AwaitingApproval);
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "the documented exit codes");
        assert!(
            codes
                .iter()
                .all(|c| Exit::from_code(*c).is_some_and(|e| e.code() == *c))
        );
    }
}
