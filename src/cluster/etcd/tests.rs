//! The fence against a real etcd (Debian's etcd-server), one member on loopback ports.

use super::*;
use crate::config::Secret;

/// One etcd member on loopback ports with its data in a temporary directory; stopped by PID.
struct OneEtcd {
    child: std::process::Child,
    endpoint: String,
    dir: std::path::PathBuf,
}

impl Drop for OneEtcd {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd() -> Option<OneEtcd> {
    if !std::path::Path::new("/usr/bin/etcd").exists() {
        let why = "the fencing test is skipped: etcd is not installed (Debian: etcd-server; .ci/run installs it)";
        assert!(std::env::var_os("CERTKEEPER_REQUIRE_SERVERS").is_none(), "{why}");
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{why}");
        }
        return None;
    }
    let dir = std::env::temp_dir().join(format!("certkeeper-fence-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (c, p) = (port(), port());
    let child = std::process::Command::new("/usr/bin/etcd")
        .args([
            "--name=f0".to_string(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls=http://127.0.0.1:{c}"),
            format!("--advertise-client-urls=http://127.0.0.1:{c}"),
            format!("--listen-peer-urls=http://127.0.0.1:{p}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{p}"),
            format!("--initial-cluster=f0=http://127.0.0.1:{p}"),
            "--listen-metrics-urls=".to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Some(OneEtcd {
        child,
        endpoint: format!("http://127.0.0.1:{c}"),
        dir,
    })
}

fn config(endpoint: &str, member: &str) -> ClusterConfig {
    ClusterConfig {
        endpoints: vec![endpoint.to_string()],
        ca_pem: None,
        identity: None,
        user: None,
        prefix: "/fence/".into(),
        member: member.into(),
        fleet_key: Secret::new("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into()),
        lease_ttl: Duration::from_secs(10),
    }
}

async fn value(f: &Fleet, key: &str) -> Option<Vec<u8>> {
    let (entries, _) = f.list(key).await.unwrap();
    entries.into_iter().find(|e| e.key == f.key(key)).map(|e| e.value)
}

/// The fence is etcd's comparison, not the leader's belief: with its election key gone (its
/// lease revoked) and its own deadline still ahead, a leader's write is refused, and the
/// next leader's is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_election_key_is_gone_cannot_write() {
    let Some(etcd) = etcd() else { return };
    let first = Fleet::connect(config(&etcd.endpoint, "a")).unwrap();
    let start = Instant::now();
    loop {
        match first.campaign().await {
            Ok(()) => break,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(30), "etcd did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    first.fenced_put(first.key("x"), b"1".to_vec()).await.unwrap();
    let lease = first.lead.lock().unwrap().as_ref().unwrap().lease;
    first
        .on("a revoke", move |mut c| async move {
            c.lease_revoke(lease).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await
        .unwrap();
    // It still believes it leads: its deadline is seconds ahead.
    assert!(first.is_leader());
    let e = first.fenced_put(first.key("x"), b"2".to_vec()).await.unwrap_err();
    assert!(e.contains("election key is gone"), "{e}");
    assert_eq!(value(&first, "x").await.as_deref(), Some(&b"1"[..]));
    assert!(!first.is_leader(), "a refused fence ends the leadership");
    let second = Fleet::connect(config(&etcd.endpoint, "b")).unwrap();
    second.campaign().await.unwrap();
    second.fenced_put(second.key("x"), b"3".to_vec()).await.unwrap();
    assert!(first.fenced_put(first.key("x"), b"4".to_vec()).await.is_err());
    assert_eq!(value(&second, "x").await.as_deref(), Some(&b"3"[..]));
}
