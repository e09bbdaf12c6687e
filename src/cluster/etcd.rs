//! The fleet's etcd: the connection (on a thread and runtime of its own, so that a synchronous
//! journal write can wait for etcd without holding up the runtime it is called from), the
//! leader's lease and election, and the fenced writes.
//!
//! Fencing: a leader's write is a transaction that compares the create revision of its own
//! election key. The key lives on the leader's lease; when the lease ends (the leader was
//! killed, paused or cut off for longer than `lease_ttl`), etcd deletes it, the comparison fails
//! and nothing is written, whatever the deposed leader believes. Before it asks etcd, a leader
//! also checks the lease's deadline by its own monotonic clock, which counts on while the
//! process is stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions};
use tokio::sync::{mpsc, oneshot, watch};

use connect::{connect_client, renew_token, stale_token};
use lease::keep_alive;

use super::seal::Seal;
use crate::config::ClusterConfig;

mod connect;
mod lease;
#[cfg(test)]
mod tests;

/// How long one etcd request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest value read from etcd (a state or a generation is a few KiB).
const MAX_VALUE: usize = 1 << 20;

/// The lease and election key of this member while it leads.
#[derive(Clone, Debug)]
struct Lead {
    key: Vec<u8>,
    rev: i64,
    /// The lease the election key lives on, and the task that keeps it alive.
    lease: i64,
    keep: tokio::task::AbortHandle,
    /// Past this instant the lease may have ended: nothing is written after it.
    until: Instant,
}

/// A key and its value as read.
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
}

/// What a watch of a prefix reports.
pub(crate) enum Change {
    Put(Entry),
    /// The watch ended (etcd gone, compacted): read everything again.
    Lost(String),
}

pub(crate) struct Fleet {
    pub(crate) cfg: ClusterConfig,
    pub(crate) seal: Seal,
    rt: tokio::runtime::Handle,
    /// One client per etcd member: a request that fails on one is tried on the next, so that
    /// a member down costs one failed attempt, not every request.
    clients: Vec<Client>,
    /// The same without a request timeout, for the campaign, which waits as long as another
    /// member leads.
    waiting: Vec<Client>,
    /// The client that answered last.
    good: std::sync::atomic::AtomicUsize,
    lead: Mutex<Option<Lead>>,
    leading: watch::Sender<bool>,
    /// The serial last published per certificate, so that each generation goes out once.
    pub(crate) published: Mutex<std::collections::HashMap<String, String>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("member", &self.cfg.member).finish()
    }
}

fn timed_out(what: &str) -> String {
    format!("etcd did not answer {what} within {} s", REQUEST_TIMEOUT.as_secs())
}

impl Fleet {
    /// Starts the etcd thread and its client. etcd need not be up: requests fail until it is.
    pub(crate) fn connect(cfg: ClusterConfig) -> Result<Arc<Fleet>, String> {
        let seal = Seal::new(cfg.fleet_key.expose())?;
        let (tx, rx) = std::sync::mpsc::channel();
        let connect_cfg = cfg.clone();
        std::thread::Builder::new()
            .name("certkeeper-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("cannot start the etcd runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut clients = Vec::new();
                    let mut waiting = Vec::new();
                    for endpoint in &connect_cfg.endpoints {
                        let both = (
                            connect_client(&connect_cfg, endpoint, true).await,
                            connect_client(&connect_cfg, endpoint, false).await,
                        );
                        match both {
                            (Ok(c), Ok(w)) => {
                                clients.push(c);
                                waiting.push(w);
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    let _ = tx.send(Ok((clients, waiting, tokio::runtime::Handle::current())));
                    // The runtime lives as long as the process.
                    std::future::pending::<()>().await;
                });
            })
            .map_err(|e| format!("cannot start the etcd thread: {e}"))?;
        let (clients, waiting, rt) = rx
            .recv_timeout(REQUEST_TIMEOUT * 3)
            .map_err(|_| "the etcd client did not start".to_string())??;
        let (leading, _) = watch::channel(false);
        Ok(Arc::new(Fleet {
            cfg,
            seal,
            rt,
            clients,
            waiting,
            good: Default::default(),
            lead: Mutex::new(None),
            leading,
            published: Mutex::new(Default::default()),
        }))
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.cfg.prefix)
    }

    /// The client that answered last.
    fn client(&self) -> Client {
        let i = self.good.load(std::sync::atomic::Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// After a failure: the next member's client from now on.
    pub(crate) fn rotate(&self) {
        self.good.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` on the etcd runtime with each member's client in turn, from the one that
    /// answered last, until one succeeds; each attempt within [`REQUEST_TIMEOUT`]. Every
    /// request certkeeper makes can be repeated (a put of the same value, a fenced put whose
    /// comparison still holds).
    async fn on<T, F, Fut>(&self, what: &str, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let n = self.clients.len();
        let start = self.good.load(std::sync::atomic::Ordering::Relaxed);
        let clients: Vec<Client> = (0..n).map(|k| self.clients[(start + k) % n].clone()).collect();
        let what_owned = what.to_string();
        self.rt.spawn(async move {
            let mut last = timed_out(&what_owned);
            for (k, c) in clients.into_iter().enumerate() {
                let mut renewed = false;
                loop {
                    match tokio::time::timeout(REQUEST_TIMEOUT, f(c.clone())).await {
                        Ok(Ok(v)) => {
                            let _ = tx.send(Ok((k, v)));
                            return;
                        }
                        Ok(Err(e)) if !renewed && stale_token(&e) => {
                            renewed = true;
                            renew_token(&c).await;
                        }
                        Ok(Err(e)) => {
                            last = e;
                            break;
                        }
                        Err(_) => {
                            last = timed_out(&what_owned);
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(Err(last));
        });
        match rx.await {
            Ok(Ok((k, v))) => {
                if k > 0 {
                    self.good.store(start + k, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(v)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(timed_out(what)),
        }
    }

    /// Whether this member leads now (its lease not past its deadline).
    pub(crate) fn is_leader(&self) -> bool {
        self.current_lead().is_some()
    }

    fn current_lead(&self) -> Option<Lead> {
        let lead = self.lead.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        (Instant::now() < lead.until).then_some(lead)
    }

    /// Follows the leadership: true while this member leads.
    pub(crate) fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Gives the leadership up: the lease is no longer kept alive and is revoked (if etcd can
    /// be reached), so that another member is elected at once instead of after `lease_ttl`.
    pub(crate) fn lose(&self, why: &str) {
        let had = self.lead.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lead) = had {
            tracing::warn!(member = %self.cfg.member, reason = why, "no longer the fleet's leader: ordering stops here");
            lead.keep.abort();
            self.revoke(lead.lease);
        }
        self.leading.send_replace(false);
    }

    /// Revokes `lease` in the background, best effort: a lease etcd does not hear of ends by
    /// itself after `lease_ttl`.
    fn revoke(&self, lease: i64) {
        let mut c = self.client();
        self.rt.spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, c.lease_revoke(lease)).await;
        });
    }

    /// At SIGTERM: the leadership given up and the lease revoked before the process ends.
    pub(crate) async fn resign(&self) {
        let lease = self
            .lead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.lease);
        self.lose("stopping");
        if let Some(lease) = lease {
            let _ = self
                .on("the lease's revocation", move |mut c| async move {
                    c.lease_revoke(lease).await.map(|_| ()).map_err(|e| e.to_string())
                })
                .await;
        }
    }

    /// Takes a lease and stands for election; returns once this member leads (or with the
    /// reason it cannot). While it leads, the lease is kept alive; when that fails for longer
    /// than the lease lasts, the leadership is given up ([`Self::leading`] turns false).
    pub(crate) async fn campaign(self: &Arc<Self>) -> Result<(), String> {
        let ttl = self.cfg.lease_ttl;
        // The deadline counts from before the request: the lease may start as soon as it is sent.
        let asked = Instant::now();
        let lease = self
            .on("the lease grant", move |mut c| async move {
                c.lease_grant(ttl.as_secs() as i64, None)
                    .await
                    .map(|r| r.id())
                    .map_err(|e| format!("cannot take a lease: {e}"))
            })
            .await?;
        // Kept alive from now on, also while the campaign waits.
        let deadline = Arc::new(Mutex::new(asked + ttl));
        let (alive_tx, mut alive_rx) = watch::channel(true);
        let keep = {
            let clients = self.clients.clone();
            let deadline = deadline.clone();
            self.rt
                .spawn(keep_alive(clients, lease, ttl, deadline, alive_tx))
                .abort_handle()
        };
        // A campaign that fails leaves no lease behind: its key would stand in the election's
        // line, kept alive, ahead of this member's next campaign.
        let give_up = |e: String| {
            keep.abort();
            self.revoke(lease);
            self.rotate();
            Err(e)
        };
        let name = self.key("leader");
        let member = self.cfg.member.clone();
        let (tx, rx) = oneshot::channel();
        let client = {
            let i = self.good.load(std::sync::atomic::Ordering::Relaxed) % self.waiting.len();
            self.waiting[i].clone()
        };
        self.rt.spawn(async move {
            let mut client = client;
            let mut r = client.campaign(name.clone(), member.clone(), lease).await;
            if let Err(e) = &r
                && stale_token(&e.to_string())
            {
                renew_token(&client).await;
                r = client.campaign(name, member, lease).await;
            }
            let r = r.map_err(|e| format!("the election failed: {e}")).and_then(|mut r| {
                r.take_leader()
                    .ok_or_else(|| "the election named no leader".to_string())
            });
            let _ = tx.send(r);
        });
        let leader = tokio::select! {
            r = rx => match r.map_err(|_| "the election was cut short".to_string()).and_then(|r| r) {
                Ok(l) => l,
                Err(e) => return give_up(e),
            },
            _ = alive_rx.wait_for(|a| !a) => {
                return give_up("the lease ended while waiting for the election".into());
            }
        };
        let until = *deadline.lock().unwrap_or_else(|p| p.into_inner());
        *self.lead.lock().unwrap_or_else(|p| p.into_inner()) = Some(Lead {
            key: leader.key().to_vec(),
            rev: leader.rev(),
            lease,
            keep: keep.clone(),
            until,
        });
        self.leading.send_replace(true);
        // The deadline follows the keep-alives; the leadership ends with the lease.
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 4);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = alive_rx.wait_for(|a| !a) => {
                        me.lose("the lease could not be kept alive");
                        return;
                    }
                }
                let until = *deadline.lock().unwrap_or_else(|p| p.into_inner());
                let mut lead = me.lead.lock().unwrap_or_else(|p| p.into_inner());
                match lead.as_mut() {
                    // Another term's lead is not this task's to follow.
                    Some(l) if l.lease != lease => return,
                    Some(l) if Instant::now() < until => l.until = until,
                    Some(_) => {
                        drop(lead);
                        me.lose("the lease's time ran out");
                        return;
                    }
                    None => return,
                }
            }
        });
        Ok(())
    }

    /// A write only the leader makes: refused unless this member leads and its election key is
    /// still the one it was elected with.
    pub(crate) async fn fenced_put(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        let lead = self
            .current_lead()
            .ok_or_else(|| "this member is not the fleet's leader; nothing is written".to_string())?;
        let shown = key.clone();
        let ok = self
            .on("a write", move |mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(lead.key.clone(), CompareOp::Equal, lead.rev)])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
                async move {
                    c.txn(txn)
                        .await
                        .map(|r| r.succeeded())
                        .map_err(|e| format!("etcd refused the write: {e}"))
                }
            })
            .await?;
        if ok {
            // Written; but a write that took until the lease was nearly over is not acted on:
            // what follows it (a paid request) would leave when another member may lead.
            let ttl = self.cfg.lease_ttl;
            match self.current_lead() {
                Some(l) if Instant::now() + ttl / 4 < l.until => Ok(()),
                _ => Err(format!(
                    "{shown} written, but this member's lease is nearly over; nothing more is done here"
                )),
            }
        } else {
            self.lose("a write found another leader's election key");
            Err(format!(
                "{shown} not written: this member's election key is gone (another member leads now)"
            ))
        }
    }

    /// [`Self::fenced_put`] for synchronous callers (the journal's writes): waits on this thread,
    /// letting the caller's runtime run its other tasks meanwhile.
    pub(crate) fn fenced_put_blocking(self: &Arc<Self>, key: String, value: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let me = self.clone();
        self.rt.spawn(async move {
            let _ = tx.send(me.fenced_put(key, value).await);
        });
        let wait = || {
            rx.recv_timeout(REQUEST_TIMEOUT * 2)
                .unwrap_or_else(|_| Err(timed_out("a write")))
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }

    /// A write of this member's own keys (its reports): not fenced.
    pub(crate) async fn put(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.on("a write", move |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("etcd refused the write: {e}"))
            }
        })
        .await
    }

    /// Every key under `prefix` (after the fleet's prefix), oldest first, and the revision read at.
    pub(crate) async fn list(&self, prefix: &str) -> Result<(Vec<Entry>, i64), String> {
        let full = self.key(prefix);
        self.on("a read", move |mut c| {
            let full = full.clone();
            async move {
                // Oldest first: the first of the election's keys is the leader's.
                let options = GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Create, SortOrder::Ascend);
                let r = c
                    .get(full, Some(options))
                    .await
                    .map_err(|e| format!("cannot read etcd: {e}"))?;
                let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                let entries = r
                    .kvs()
                    .iter()
                    .filter(|kv| kv.value().len() <= MAX_VALUE)
                    .filter_map(|kv| {
                        Some(Entry {
                            key: kv.key_str().ok()?.to_string(),
                            value: kv.value().to_vec(),
                        })
                    })
                    .collect();
                Ok((entries, rev))
            }
        })
        .await
    }

    /// The puts under `prefix` from revision `from` on, until the watch ends.
    pub(crate) fn watch(&self, prefix: &str, from: i64) -> mpsc::Receiver<Change> {
        let (tx, rx) = mpsc::channel(64);
        let full = self.key(prefix);
        let client = self.client();
        self.rt.spawn(async move {
            let mut client = client;
            let options = || Some(WatchOptions::new().with_prefix().with_start_revision(from));
            let mut watched = client.watch(full.clone(), options()).await;
            if let Err(e) = &watched
                && stale_token(&e.to_string())
            {
                renew_token(&client).await;
                watched = client.watch(full, options()).await;
            }
            let mut stream = match watched {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Change::Lost(format!("cannot watch etcd: {e}"))).await;
                    return;
                }
            };
            loop {
                // Ends with its reader: a watch nobody reads is cancelled, not left open.
                let message = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                match message {
                    Ok(Some(r)) if r.canceled() => {
                        let _ = tx.send(Change::Lost("etcd ended the watch".into())).await;
                        return;
                    }
                    Ok(Some(r)) => {
                        for e in r.events() {
                            if e.event_type() != EventType::Put {
                                continue;
                            }
                            let Some(kv) = e.kv() else { continue };
                            let (Ok(key), true) = (kv.key_str(), kv.value().len() <= MAX_VALUE) else {
                                continue;
                            };
                            let entry = Entry {
                                key: key.to_string(),
                                value: kv.value().to_vec(),
                            };
                            if tx.send(Change::Put(entry)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Change::Lost("the watch ended".into())).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Change::Lost(format!("the watch failed: {e}"))).await;
                        return;
                    }
                }
            }
        });
        rx
    }
}
