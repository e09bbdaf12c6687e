//! `certkeeper run`: the daemon. It sleeps until the next certificate is due (or an event
//! arrives), works on what is due a bounded number at a time, most urgent first, re-reads its
//! configuration when the file or the password file changes (or on SIGHUP), serves metrics, and
//! stops on SIGTERM without starting new work; an order in flight resumes at the next start.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{CertConfig, Config};
use crate::control;
use crate::order::{self, Agent, Outcome};
use crate::run::Exit;
use crate::schedule::Action;

mod agenda;
mod campaign;
mod checks;
mod forced;
mod metrics;
mod reload;
mod setbacks;

use agenda::Agenda;
use checks::ServeChecks;
use forced::Forced;
#[cfg(feature = "cluster")]
pub(crate) use metrics::Extra;
pub(crate) use metrics::serve_metrics;
use reload::{reload, settle, watch};
use setbacks::Setbacks;

/// The agent the daemon works with now, replaced when the configuration is read again.
pub(crate) type Shared = Arc<RwLock<Arc<Agent>>>;

/// What a fleet's member hands the daemon's loop while it leads: the leadership to follow, and
/// the member's own metrics (served for the member's whole life, not only while it leads).
pub(crate) struct Leadership {
    /// Says `false` when the leadership is lost.
    pub(crate) leading: tokio::sync::watch::Receiver<bool>,
    /// The agent the member's metrics read (and nothing else): the loop puts its own there, at
    /// its start and at each re-read of the configuration. The loop orders only through its
    /// own, which nothing else writes.
    pub(crate) metrics: Shared,
    /// When the member last looked at its certificates.
    pub(crate) last_check: Arc<AtomicI64>,
}

pub(crate) fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) fn current(shared: &Shared) -> Arc<Agent> {
    shared
        .read()
        .map(|a| a.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// Runs until SIGTERM or SIGINT; returns the exit code. With `[cluster]`, as a member of the
/// fleet (`crate::cluster`).
pub(crate) async fn run(path: PathBuf, config: Config) -> Result<Exit, crate::run::Refusal> {
    #[cfg(feature = "cluster")]
    if config.cluster.is_some() {
        return crate::cluster::run(path, config).await;
    }
    let (agent, _lock) = crate::run::start(config)?;
    Ok(serve(path, agent, None).await.unwrap_or(Exit::Ok))
}

/// The daemon's loop over `agent`, whose state directory the caller has locked. With `fleet`
/// (a fleet's leader), it also ends when the leadership is lost: then `None`, with every task
/// stopped as SIGTERM stops them; the member serves the metrics then, not the loop.
pub(crate) async fn serve(path: PathBuf, agent: Arc<Agent>, fleet: Option<Leadership>) -> Option<Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot watch signals (SIGTERM, SIGINT, SIGHUP)");
        return Some(Exit::Error);
    };
    let shared: Shared = Arc::new(RwLock::new(agent.clone()));
    let (mut leading, fleet_metrics, last_check) = match fleet {
        Some(f) => (Some(f.leading), Some(f.metrics), f.last_check),
        None => (None, None, Arc::new(AtomicI64::new(now()))),
    };
    let mirror = |shared: &Shared| {
        if let Some(m) = &fleet_metrics {
            *m.write().unwrap_or_else(|p| p.into_inner()) = current(shared);
        }
    };
    mirror(&shared);
    let (tx, mut changes) = mpsc::channel::<()>(16);
    let mut watcher = watch(&path, &agent.config, tx.clone());
    let (control_tx, mut control_rx) = mpsc::channel::<control::Request>(16);
    let _control = control::listen(&agent.store.state_dir, control_tx);
    let mut background = JoinSet::new();
    if let Some(addr) = agent.config.daemon.metrics_listen.filter(|_| leading.is_none()) {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving metrics");
                background.spawn(serve_metrics(listener, shared.clone(), last_check.clone(), None));
            }
            Err(e) => tracing::error!(%addr, error = %e, "cannot serve metrics"),
        }
    }
    tracing::info!(
        certificates = agent.config.certificates.len(),
        pid = std::process::id(),
        "certkeeper daemon started"
    );
    crate::run::apply_key_access(&agent);

    let mut tasks: JoinSet<anyhow::Result<Outcome>> = JoinSet::new();
    let mut task_names: HashMap<tokio::task::Id, CertConfig> = HashMap::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut warned: HashSet<String> = HashSet::new();
    let mut alarmed: HashMap<String, i64> = HashMap::new();
    let mut setbacks = Setbacks::default();
    let mut forced = Forced::default();
    let mut agenda = Agenda::new(&agent.config.certificates);
    let mut serve_checks = ServeChecks::new(&agent.config.certificates, None, now());
    // The tasks that are served checks, not orders, and the certificates whose drift (a server
    // that no longer hands out the installed certificate) `on_failure` was told of.
    let mut checking: HashSet<tokio::task::Id> = HashSet::new();
    let mut drifted: HashSet<String> = HashSet::new();
    // A mass reissue recorded in the state directory (`--renew-now --all`), and how its tasks end.
    let mut campaign = campaign::InDaemon::load(&agent);
    let mut deposed_now = false;
    let (campaign_tx, mut campaign_rx) = mpsc::unbounded_channel::<(String, crate::campaign::Ended)>();
    loop {
        let agent = current(&shared);
        let t = now();
        last_check.store(t, Ordering::Relaxed);
        // Reissues asked for through the control socket start first, once not in flight, as many
        // as `order.concurrency` leaves room for (the rest when a task ends).
        let room = agent.config.order.concurrency.saturating_sub(in_flight.len());
        let start = forced.startable(&in_flight, room);
        let by_name: HashMap<&str, &CertConfig> = match start.is_empty() {
            true => HashMap::new(),
            false => agent.config.certificates.iter().map(|c| (c.name.as_str(), c)).collect(),
        };
        for name in start {
            let Some(cert) = by_name.get(name.as_str()).map(|c| (*c).clone()) else {
                let line = format!("{name}: no longer configured; nothing was done");
                forced.ended(&name, Exit::Config, line);
                continue;
            };
            in_flight.insert(cert.name.clone());
            let task_agent = agent.clone();
            let task_cert = cert.clone();
            let handle = tasks.spawn(async move { Box::pin(task_agent.ensure(&task_cert, true)).await });
            forced.started(handle.id());
            task_names.insert(handle.id(), cert);
        }
        let mut due: Vec<(bool, CertConfig)> = Vec::new();
        let mut next_at = t + 3600;
        // Only the certificates whose time has come are looked at (their state files read).
        let dirs = agent.store.look().ok();
        for i in agenda.due(t) {
            let Some(cert) = agent.config.certificates.get(i) else {
                continue;
            };
            // Back on the agenda when their task ends.
            if in_flight.contains(&cert.name) || forced.is_waiting(&cert.name) {
                continue;
            }
            let st = agent.store.load_from(dirs.as_ref(), &cert.name).unwrap_or_default();
            let mut facts = setbacks.facts(&cert.name, &st);
            order::plan::for_config(&mut facts, cert, &st);
            let d = order::next_from(&facts, cert, &agent.config.daemon, t);
            if d.term_warning && warned.insert(cert.name.clone()) {
                tracing::warn!(cert = %cert.name, term_end = %crate::text::maybe_time(st.term_end), "the order term ends soon and renew_term is off: renew it in the SSL Manager, or set renew_term = true");
            }
            if d.urgent && alarmed.get(&cert.name) != st.not_after.as_ref() {
                alarmed.insert(cert.name.clone(), st.not_after.unwrap_or(0));
                tracing::error!(cert = %cert.name, not_after = %crate::text::maybe_time(st.not_after), "less than 1/20 of the certificate's validity is left");
                background.spawn(alarm(
                    agent.clone(),
                    cert.clone(),
                    "expiring",
                    st.last_error.clone().unwrap_or_default(),
                    0,
                ));
            }
            // An ended term is tried once, so that the wait for the next term's consent is
            // recorded and told; after that it waits for the operator.
            if d.action == Action::TermEnded
                && (d.at > t || st.consent.is_some() && !order::plan::consent_given(cert, &st))
            {
                agenda.later(i, agenda::look_again(&d, &st, &agent.config.daemon, t));
                continue;
            }
            if d.at <= t {
                due.push((d.urgent, cert.clone()));
            } else {
                agenda.later(i, agenda::look_again(&d, &st, &agent.config.daemon, t));
            }
        }
        if let Some(at) = agenda.next() {
            next_at = next_at.min(at);
        }
        due.sort_by_key(|(urgent, _)| !urgent);
        let limit = agent.config.order.concurrency;
        for (_, cert) in due {
            if in_flight.len() >= limit {
                // Looked at again as soon as a task ends.
                agenda.now(&cert.name);
                continue;
            }
            in_flight.insert(cert.name.clone());
            let task_agent = agent.clone();
            let task_cert = cert.clone();
            let forgiven = setbacks.is_forgiven(&cert.name, &agent.store.load(&cert.name).unwrap_or_default());
            let handle =
                tasks.spawn(async move { Box::pin(task_agent.ensure_with(&task_cert, false, forgiven)).await });
            task_names.insert(handle.id(), cert);
        }
        // The served checks that are due, in the room the orders left.
        let room = limit.saturating_sub(in_flight.len());
        if room > 0 && serve_checks.next().is_some_and(|at| at <= t) {
            let by_name: HashMap<&str, &CertConfig> =
                agent.config.certificates.iter().map(|c| (c.name.as_str(), c)).collect();
            for name in serve_checks.due(t, room, |n| in_flight.contains(n) || forced.is_waiting(n)) {
                let Some(cert) = by_name.get(name.as_str()).map(|c| (*c).clone()) else {
                    continue;
                };
                in_flight.insert(cert.name.clone());
                let task_agent = agent.clone();
                let task_cert = cert.clone();
                let handle = tasks.spawn(async move { task_agent.recheck_served(&task_cert).await });
                checking.insert(handle.id());
                task_names.insert(handle.id(), cert);
            }
        }
        // (Without room, a task's end wakes the loop: a past time here would wake it every
        // second.)
        if let Some(at) = serve_checks.next()
            && in_flight.len() < limit
        {
            next_at = next_at.min(at);
        }
        // A campaign with nothing left (also one a run killed after its last certificate) ends.
        if let Some(c) = campaign.as_ref()
            && c.over()
        {
            tracing::info!("{}", c.summary());
            if let Err(e) = agent.store.end_campaign() {
                tracing::error!(error = %e, "cannot close the campaign's files");
            }
            campaign = None;
        }
        // The campaign's next certificates, in the room the due orders and the served checks
        // left.
        if let Some(c) = campaign.as_mut() {
            let room = limit.saturating_sub(in_flight.len());
            if room > 0 {
                let by_name: HashMap<&str, &CertConfig> =
                    agent.config.certificates.iter().map(|c| (c.name.as_str(), c)).collect();
                for (name, started) in c.startable(room, |n| in_flight.contains(n) || forced.is_waiting(n), t) {
                    let Some(cert) = by_name.get(name.as_str()).map(|c| (*c).clone()) else {
                        let ended = Err(format!("{name}: no longer configured; nothing was done"));
                        crate::campaign::record(&agent, &name, &ended);
                        c.ended(&name, Some(ended), t);
                        continue;
                    };
                    in_flight.insert(cert.name.clone());
                    let (task_agent, task_cert, tx) = (agent.clone(), cert.clone(), campaign_tx.clone());
                    let handle = tasks.spawn(async move {
                        let (ended, result) = crate::campaign::work(&task_agent, &task_cert, started).await;
                        if let Some(e) = &ended {
                            crate::campaign::record(&task_agent, &task_cert.name, e);
                        }
                        let _ = tx.send((task_cert.name.clone(), ended));
                        result
                    });
                    c.tasks.insert(handle.id());
                    task_names.insert(handle.id(), cert);
                }
            }
            if let Some(at) = c.next()
                && in_flight.len() < limit
            {
                next_at = next_at.min(at);
            }
        }
        // At least once a minute, so that the last-check metric shows a live daemon.
        let wait = Duration::from_secs((next_at - t).clamp(1, 60) as u64);
        let event = tokio::select! {
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => match joined {
                Ok((id, result)) => Event::TaskDone(id, result),
                // A task that panicked is a failure like any other: released, counted, told.
                Err(e) => {
                    let id = e.id();
                    Event::TaskDone(id, Err(anyhow::anyhow!("the order task stopped unexpectedly: {}", panic_text(e))))
                }
            },
            Some(()) = changes.recv() => Event::ConfigChanged,
            Some(request) = control_rx.recv() => Event::Control(request),
            _ = hup.recv() => Event::Hangup,
            _ = deposed(&mut leading) => Event::Deposed,
            _ = term.recv() => Event::Stop,
            _ = int.recv() => Event::Stop,
            Some(_) = background.join_next(), if !background.is_empty() => Event::BackgroundDone,
            _ = tokio::time::sleep(wait) => Event::Due,
        };
        match event {
            Event::TaskDone(id, result) => {
                if let Some(cert) = task_names.remove(&id) {
                    in_flight.remove(&cert.name);
                    agenda.now(&cert.name);
                    if let Some(c) = campaign.as_mut()
                        && !c.tasks.contains(&id)
                    {
                        c.other_task_ended(&agent, &cert.name, matches!(result, Ok(Outcome::Deployed { .. })));
                    }
                    if checking.remove(&id) {
                        serve_checks.checked(&cert, now());
                        match &result {
                            Ok(Outcome::NotDeployed {
                                error,
                                not_served: true,
                                ..
                            }) => {
                                // Told once per drift; again only after it was served again.
                                if drifted.insert(cert.name.clone()) {
                                    background.spawn(alarm(
                                        agent.clone(),
                                        cert.clone(),
                                        "not_served",
                                        error.clone(),
                                        0,
                                    ));
                                }
                            }
                            Ok(_) => {
                                drifted.remove(&cert.name);
                            }
                            Err(e) => {
                                tracing::warn!(cert = %cert.name, error = %format!("{e:#}"), "the served check could not run")
                            }
                        }
                        continue;
                    }
                    serve_checks.task_ended(&cert.name, now());
                    if let Some(c) = campaign.as_mut()
                        && c.tasks.remove(&id)
                    {
                        let mut heard = false;
                        while let Ok((name, ended)) = campaign_rx.try_recv() {
                            heard |= name == cert.name;
                            c.ended(&name, ended, now());
                        }
                        // A task that panicked said nothing: tried again later.
                        if !heard {
                            c.ended(&cert.name, None, now());
                        }
                    }

                    if matches!(result, Ok(Outcome::Deployed { .. }) | Ok(Outcome::NotDeployed { .. })) {
                        // The deploy checked what is served.
                        serve_checks.checked(&cert, now());
                        drifted.remove(&cert.name);
                    }
                    if forced.was_forced(id) {
                        let (exit, line) = crate::run::outcome_line(&cert.name, &result);
                        forced.ended(&cert.name, exit, line);
                    }
                    if let Ok(Outcome::AwaitingApproval { message, newly }) = &result {
                        // Not a setback: the job is waited for again at once (a minute a look),
                        // so that the certificate comes as soon as the mail is answered; told
                        // once, when the order's journal first noted the wait (so not again
                        // after a restart, nor after a one-shot run told it).
                        if *newly {
                            background.spawn(alarm(
                                agent.clone(),
                                cert.clone(),
                                "awaiting_approval",
                                message.clone(),
                                0,
                            ));
                        }
                    } else if let Some((event, state, error)) = report(&cert, &result) {
                        let st = agent.store.load(&cert.name).unwrap_or_default();
                        if setbacks.record(&cert.name, &st, now(), state) {
                            let failures = setbacks.count(&cert.name);
                            background.spawn(alarm(agent.clone(), cert.clone(), event, error, failures));
                        }
                    } else {
                        setbacks.clear(&cert.name);
                    }
                }
            }
            Event::ConfigChanged | Event::Hangup => {
                if matches!(event, Event::Hangup) {
                    tracing::info!("SIGHUP: re-reading the configuration");
                } else {
                    settle(&path, &mut changes).await;
                }
                if let Some(changed) = reload(&path, &shared) {
                    mirror(&shared);
                    watcher = watch(&path, &current(&shared).config, tx.clone());
                    // Every certificate is looked at again under the new configuration.
                    agenda = Agenda::new(&current(&shared).config.certificates);
                    serve_checks = ServeChecks::new(&current(&shared).config.certificates, Some(&serve_checks), now());
                    crate::run::apply_key_access(&current(&shared));
                    // A fixed configuration is tried at once, not after the old backoff.
                    for name in changed {
                        setbacks.forgive(&name, now());
                    }
                }
            }
            Event::Control(request) if request.campaign => {
                if campaign.is_none() {
                    campaign = campaign::InDaemon::load(&current(&shared));
                }
                let reply = match campaign {
                    Some(_) => control::Reply::End(Exit::Ok),
                    None => control::Reply::Refused(
                        Exit::Error,
                        "no campaign can be read in the state directory (see the daemon's log)".into(),
                    ),
                };
                let _ = request.reply.send(reply);
            }
            Event::Control(request) => {
                let names = &current(&shared).config.certificates;
                let asked: Vec<String> = if request.names.is_empty() {
                    names.iter().map(|c| c.name.clone()).collect()
                } else {
                    request.names.clone()
                };
                // A set, not a search per name: `--renew-now` of all 100,000 names would take
                // 10^10 comparisons.
                let known: HashSet<&str> = if request.names.is_empty() {
                    HashSet::new()
                } else {
                    names.iter().map(|c| c.name.as_str()).collect()
                };
                match request.names.iter().find(|n| !known.contains(n.as_str())) {
                    Some(unknown) => {
                        let _ = request.reply.send(control::Reply::Refused(
                            Exit::Config,
                            format!("{unknown} is not a configured certificate"),
                        ));
                    }
                    None => {
                        tracing::info!(certificates = %asked.join(", "), "reissue asked for through the control socket");
                        forced.ask(asked, request.reply);
                    }
                }
            }
            Event::Stop => break,
            Event::Deposed => {
                deposed_now = true;
                break;
            }
            Event::BackgroundDone | Event::Due => {}
        }
    }
    drop(watcher);
    tracing::info!(
        in_flight = in_flight.len(),
        "stopping; no new request starts, and any order in flight resumes from its journal at the next start"
    );
    // Journal writes are synchronous, so stopping a task never leaves one half-written.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    background.abort_all();
    (!deposed_now).then_some(Exit::Ok)
}

/// Resolves when `leading` says the leadership is lost (never without one).
async fn deposed(leading: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match leading {
        Some(rx) => {
            let _ = rx.wait_for(|leader| !leader).await;
        }
        None => std::future::pending().await,
    }
}

/// What wakes the daemon up; each turn of its loop plans what is due, then waits for one.
enum Event {
    /// This member is no longer the fleet's leader.
    Deposed,
    /// An order task ended (a task that panicked ends with an error).
    TaskDone(tokio::task::Id, anyhow::Result<Outcome>),
    /// The configuration or the password file changed on disk.
    ConfigChanged,
    /// SIGHUP: re-read the configuration.
    Hangup,
    /// `certkeeper --renew-now`, handed over through the control socket.
    Control(control::Request),
    /// SIGTERM or SIGINT: start nothing new, stop.
    Stop,
    /// A background task (an `on_failure` hook, the metrics server) ended.
    BackgroundDone,
    /// The next certificate is due (or the hourly look came round).
    Due,
}

/// What a task that ended abnormally said (its panic message), without the task's id, so that
/// the same failure reads the same each time.
fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "it was cancelled".into();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Logs how an order task ended; for a failure, says what `on_failure` would be told: the
/// event, the state it leaves the certificate in (reported once), and the error.
fn report(cert: &CertConfig, result: &anyhow::Result<Outcome>) -> Option<(&'static str, String, String)> {
    match result {
        Ok(Outcome::Deployed { serial, .. }) => {
            tracing::info!(cert = %cert.name, %serial, "renewed");
            None
        }
        Ok(Outcome::NothingDue) => None,
        Ok(Outcome::Unsettled {
            unresolved: false,
            message,
            ..
        }) => {
            tracing::warn!(cert = %cert.name, %message, "looking again in a minute");
            None
        }
        Ok(Outcome::Unsettled { message, .. }) => {
            tracing::error!(cert = %cert.name, %message, "payment unresolved");
            Some(("payment_unresolved", "payment_unresolved".into(), message.clone()))
        }
        Ok(Outcome::Waiting { message, .. }) => {
            tracing::warn!(cert = %cert.name, %message, "waiting for the operator; nothing was bought");
            Some(("consent_needed", format!("consent_needed {message}"), message.clone()))
        }
        Ok(Outcome::AwaitingApproval { message, .. }) => {
            tracing::warn!(cert = %cert.name, %message, "the order waits for its approval");
            None
        }
        Ok(Outcome::NotDeployed {
            serial,
            error,
            not_served: true,
        }) => {
            tracing::error!(cert = %cert.name, %serial, %error, "not served; will retry after the backoff");
            Some(("not_served", format!("not_served {serial}"), error.clone()))
        }
        Ok(Outcome::NotDeployed { serial, error, .. }) => {
            tracing::error!(cert = %cert.name, %serial, %error, "issued but not deployed; will retry after the backoff");
            Some(("not_deployed", format!("not_deployed {serial}"), error.clone()))
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(cert = %cert.name, %error, "order failed; will retry after the backoff");
            Some(("failed", format!("failed {error}"), error))
        }
    }
}

async fn alarm(agent: Arc<Agent>, cert: CertConfig, event: &'static str, error: String, failures: u32) {
    crate::run::tell_on_failure(&agent, &cert, event, &error, failures).await;
}
