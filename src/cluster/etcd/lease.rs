//! The leader's lease kept alive, on each etcd member's client in turn.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::watch;

/// Keeps `lease` alive every third of its time; moves `deadline` on at each answer, and says
/// `false` on `alive` once the lease is gone or its deadline passed without an answer.
pub(super) async fn keep_alive(
    clients: Vec<Client>,
    lease: i64,
    ttl: Duration,
    deadline: Arc<Mutex<Instant>>,
    alive: watch::Sender<bool>,
) {
    let mut which = 0;
    let mut keeper = None;
    loop {
        tokio::time::sleep(ttl / 3).await;
        if Instant::now() >= *deadline.lock().unwrap_or_else(|p| p.into_inner()) {
            break;
        }
        if keeper.is_none() {
            let mut client = clients[which % clients.len()].clone();
            keeper = tokio::time::timeout(ttl / 3, client.lease_keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
            if keeper.is_none() {
                which += 1;
                continue;
            }
        }
        let Some((k, stream)) = keeper.as_mut() else { continue };
        let sent = Instant::now();
        let answer = tokio::time::timeout(ttl / 3, async {
            k.keep_alive().await.ok()?;
            stream.message().await.ok().flatten()
        })
        .await;
        match answer {
            Ok(Some(r)) if r.ttl() > 0 => {
                *deadline.lock().unwrap_or_else(|p| p.into_inner()) = sent + Duration::from_secs(r.ttl() as u64);
            }
            // etcd says the lease is gone.
            Ok(Some(_)) => break,
            // No answer: another member's client next time, until the deadline.
            _ => {
                keeper = None;
                which += 1;
            }
        }
    }
    let _ = alive.send(false);
}
