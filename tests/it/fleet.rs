//! Fleet mode: a real 3-member etcd cluster on loopback (Debian's etcd-server) and three
//! certkeeper daemons, each with its own state and live directories, against one simulator.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// Whether etcd and etcdctl are installed; if not, the test is skipped (or fails in CI).
fn require_etcd(test: &str) -> bool {
    if ["/usr/bin/etcd", "/usr/bin/etcdctl"]
        .iter()
        .all(|p| Path::new(p).exists())
    {
        return true;
    }
    skip(
        test,
        "etcd is not installed (Debian: apt-get install etcd-server etcd-client; .ci/run installs them)",
    );
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three etcd members on loopback ports, each with its data in a temporary directory, stopped
/// by PID when dropped.
pub struct Etcd {
    members: Vec<Option<Child>>,
    args: Vec<Vec<String>>,
    pub endpoints: Vec<String>,
    dir: PathBuf,
    /// With TLS and users: what etcdctl needs (as root), and the `[cluster]` lines of a member.
    secure: Option<Secure>,
}

struct Secure {
    ctl_env: Vec<(String, String)>,
    root: String,
    cluster: String,
}

impl Etcd {
    /// Plain HTTP, no users.
    pub fn start(dir: &Path) -> Self {
        Self::launch(dir, false)
    }

    /// As a fleet runs it: client certificates made by `examples/fleet/etcd-tls.sh`, users by
    /// `examples/fleet/etcd-auth.sh` (certkeeper's with a password), and auth tokens that
    /// expire after 2 s idle (etcd's default is 5 minutes), so that members renew theirs.
    pub fn start_secure(dir: &Path) -> Self {
        Self::launch(dir, true)
    }

    /// The `[cluster]` lines a member needs for this etcd (TLS files, user, password file).
    pub fn cluster_lines(&self) -> String {
        self.secure.as_ref().map(|s| s.cluster.clone()).unwrap_or_default()
    }

    fn launch(dir: &Path, secure: bool) -> Self {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let scheme = if secure { "https" } else { "http" };
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}={scheme}://127.0.0.1:{p}"))
            .collect();
        let tls = dir.join("etcd-tls");
        let mut etcd = Etcd {
            members: Vec::new(),
            args: Vec::new(),
            endpoints: clients.iter().map(|c| format!("{scheme}://127.0.0.1:{c}")).collect(),
            dir: dir.join("etcd"),
            secure: None,
        };
        if secure {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/etcd-tls.sh");
            let out = Command::new("sh")
                .arg(&script)
                .arg(&tls)
                .args(["IP:127.0.0.1", "IP:127.0.0.1", "IP:127.0.0.1"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "etcd-tls.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (i, peer) in peers.iter().enumerate() {
            let data = etcd.dir.join(format!("e{i}"));
            std::fs::create_dir_all(&data).unwrap();
            let mut args = vec![
                format!("--name=e{i}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={}", etcd.endpoints[i]),
                format!("--advertise-client-urls={}", etcd.endpoints[i]),
                format!("--listen-peer-urls={scheme}://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls={scheme}://127.0.0.1:{peer}"),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=certkeeper-test".into(),
                "--listen-metrics-urls=".into(),
            ];
            if secure {
                let n = i + 1;
                args.extend([
                    format!("--cert-file={}", tls.join(format!("etcd-{n}.pem")).display()),
                    format!("--key-file={}", tls.join(format!("etcd-{n}.key")).display()),
                    format!("--trusted-ca-file={}", tls.join("ca.pem").display()),
                    "--client-cert-auth".into(),
                    // The peers too, with the same certificates, as examples/fleet/etcd.default.
                    format!("--peer-cert-file={}", tls.join(format!("etcd-{n}.pem")).display()),
                    format!("--peer-key-file={}", tls.join(format!("etcd-{n}.key")).display()),
                    format!("--peer-trusted-ca-file={}", tls.join("ca.pem").display()),
                    "--peer-client-cert-auth".into(),
                    "--auth-token-ttl=2".into(),
                ]);
            }
            etcd.args.push(args);
            etcd.members.push(None);
            etcd.start_member(i);
        }
        if secure {
            let file = |name: &str| tls.join(name).display().to_string();
            let ctl_env = vec![
                ("ETCDCTL_CACERT".to_string(), file("ca.pem")),
                ("ETCDCTL_CERT".to_string(), file("client.pem")),
                ("ETCDCTL_KEY".to_string(), file("client.key")),
            ];
            etcd.secure = Some(Secure {
                ctl_env,
                root: String::new(),
                cluster: String::new(),
            });
            etcd.wait_healthy(&[0, 1, 2]);
            let private = |name: &str, text: &str| {
                let path = dir.join(name);
                std::fs::write(&path, text).unwrap();
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
                path
            };
            let root = private("etcd-root.pass", "root-secret\n");
            let password = private("etcd.pass", "certkeeper-secret\n");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/etcd-auth.sh");
            let out = etcd.ctl().arg(&script).arg(&root).arg(&password).output().unwrap();
            assert!(
                out.status.success(),
                "etcd-auth.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let secure = etcd.secure.as_mut().unwrap();
            secure.root = "root:root-secret".into();
            secure.cluster = format!(
                "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nuser = \"certkeeper\"\npassword_file = \"{}\"\n",
                file("ca.pem"),
                file("client.pem"),
                file("client.key"),
                password.display()
            );
        }
        etcd.wait_healthy(&[0, 1, 2]);
        etcd
    }

    /// A command with etcdctl's connection (the endpoints, TLS) in its environment: etcdctl
    /// itself with `ctl()`, a script that runs it with `ctl().arg(script)`.
    fn ctl_on(&self, which: &[usize], program: &str) -> Command {
        let eps: Vec<&str> = which.iter().map(|i| self.endpoints[*i].as_str()).collect();
        let mut c = Command::new(program);
        c.env("ETCDCTL_API", "3").env("ETCDCTL_ENDPOINTS", eps.join(","));
        if let Some(s) = &self.secure {
            c.envs(s.ctl_env.iter().map(|(k, v)| (k, v)));
            if !s.root.is_empty() {
                c.env("ETCDCTL_USER", &s.root);
            }
        }
        c
    }

    fn ctl(&self) -> Command {
        self.ctl_on(&[0, 1, 2], "sh")
    }

    /// etcdctl on every member, as root when etcd has users.
    pub fn etcdctl(&self) -> Command {
        self.ctl_on(&[0, 1, 2], "/usr/bin/etcdctl")
    }

    pub fn start_member(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("e{i}.log")))
            .unwrap();
        let child = Command::new("/usr/bin/etcd")
            .args(&self.args[i])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i] = Some(child);
    }

    /// Stops member `i` by its PID (SIGKILL) and waits for it.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = Command::new("kill").args(["-KILL", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    pub fn wait_healthy(&self, which: &[usize]) {
        let start = Instant::now();
        loop {
            let ok = self
                .ctl_on(which, "/usr/bin/etcdctl")
                .args(["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every key and value under `prefix`, as etcdctl prints them.
    pub fn dump(&self, prefix: &str) -> String {
        let out = self.etcdctl().args(["get", "--prefix", prefix]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }
}

/// The fleet's members: a config each (its own state and live directories, the same etcd and
/// fleet key), and their daemons.
pub struct Fleet {
    pub dir: PathBuf,
    pub members: Vec<Option<Member>>,
    /// Each member's metrics port (`daemon.metrics_listen`).
    pub metrics: Vec<u16>,
}

pub struct Member {
    pub child: Child,
    pub log: PathBuf,
}

impl Member {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Fleet {
    /// Writes a config per member from `env`'s (written before), with `cluster_extra` in each
    /// `[cluster]` table.
    pub fn configure(env: &TestEnv, etcd: &Etcd, n: usize, cluster_extra: &str) -> Self {
        let base = std::fs::read_to_string(env.config_path()).unwrap();
        Self::configure_in(&env.dir, &base, &etcd.endpoints, n, cluster_extra)
    }

    /// Writes `dir/mI.toml` for `n` members from the config text `base`: its own state and live
    /// directories under `dir`, the etcd `endpoints` and the fleet key `dir/fleet.key`.
    pub fn configure_in(dir: &Path, base: &str, endpoints: &[String], n: usize, cluster_extra: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("fleet.key");
        if !key.exists() {
            let hex: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
            std::fs::write(&key, format!("{hex}\n")).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let metrics: Vec<u16> = (0..n).map(|_| free_port()).collect();
        for (i, port) in metrics.iter().enumerate() {
            let text = base
                .replace("state_dir = \"state\"", &format!("state_dir = \"m{i}/state\""))
                .replace("live_dir = \"live\"", &format!("live_dir = \"m{i}/live\""))
                .replace(
                    "[defaults]",
                    &format!(
                        "[cluster]\nbackend = \"etcd\"\nendpoints = [{}]\nmember = \"m{i}\"\nfleet_key_file = \"fleet.key\"\n{cluster_extra}\n\n[defaults]",
                        endpoints.join(", ")
                    ),
                );
            let listen = format!("metrics_listen = \"127.0.0.1:{port}\"\n");
            let text = match text.contains("[daemon]\n") {
                true => text.replacen("[daemon]\n", &format!("[daemon]\n{listen}"), 1),
                false => format!("{text}\n[daemon]\n{listen}"),
            };
            std::fs::write(dir.join(format!("m{i}.toml")), text).unwrap();
        }
        Fleet {
            dir: dir.to_path_buf(),
            members: (0..n).map(|_| None).collect(),
            metrics,
        }
    }

    /// `certkeeper status --cluster --json` with member `i`'s config.
    pub fn status(&self, i: usize) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["status", "--cluster", "--json"])
            .env("CERTKEEPER_CONFIG", self.config(i))
            .current_dir(&self.dir)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("m{i}.toml"))
    }

    pub fn start(&mut self, i: usize, vars: &[(&str, &str)]) {
        let log = self.dir.join(format!(
            "m{i}-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .env("CERTKEEPER_CONFIG", self.config(i))
            .env("CERTKEEPER_LOG", "info")
            .envs(vars.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.members[i] = Some(Member { child, log });
    }

    /// SIGKILL by PID.
    pub fn kill(&mut self, i: usize) {
        self.members[i] = None;
    }

    pub fn live(&self, i: usize, name: &str) -> PathBuf {
        self.dir.join(format!("m{i}/live")).join(name)
    }

    /// The serial of what member `i` has live for `name`, by openssl; empty when nothing.
    pub fn serial(&self, i: usize, name: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(self.live(i, name).join("cert.pem"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Whether member `i`'s live key matches its live certificate (openssl compares the public
    /// keys).
    pub fn pair_matches(&self, i: usize, name: &str) -> bool {
        let pubkey = |args: &[&str], file: &str| {
            Command::new("openssl")
                .args(args)
                .arg(self.live(i, name).join(file))
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default()
        };
        let a = pubkey(&["x509", "-noout", "-pubkey", "-in"], "cert.pem");
        let b = pubkey(&["pkey", "-pubout", "-in"], "privkey.pem");
        !a.is_empty() && a == b
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| format!("--- m{i}:\n{}", m.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `done`, at most `secs`; panics with every member's log.
    pub async fn wait(&self, secs: u64, what: &str, mut done: impl FnMut(&Fleet) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{what}: not within {secs} s; the members' logs:\n{}", self.logs());
    }

    /// Whether every member in `which` serves the same serial for `name`, with a matching key,
    /// and that serial is not `other_than`.
    pub fn all_serve(&self, which: &[usize], name: &str, other_than: &str) -> bool {
        let first = self.serial(which[0], name);
        !first.is_empty()
            && first != other_than
            && which
                .iter()
                .all(|i| self.serial(*i, name) == first && self.pair_matches(*i, name))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_order_each_certificate_once_and_all_serve_it() {
    if !require_etcd("three_members_order_each_certificate_once_and_all_serve_it") {
        return;
    }
    let env = TestEnv::start("fleet-once").await;
    // etcd as a fleet runs it: TLS with client certificates, users, tokens that expire.
    let etcd = Etcd::start_secure(&env.dir);
    env.write_config(&[Cert::autodns("www.example.com"), Cert::hook("shop.example.net")], "");
    let mut fleet = Fleet::configure(&env, &etcd, 3, &etcd.cluster_lines());
    for i in 0..3 {
        fleet.start(i, &[]);
    }
    for name in ["www.example.com", "shop.example.net"] {
        fleet
            .wait(120, &format!("all members serve {name}"), |f| {
                f.all_serve(&[0, 1, 2], name, "")
            })
            .await;
        assert_eq!(env.paid(name), 1, "{:?}", env.sim.control().ledger());
    }
    // The key is the same on every member, and openssl verifies each member's chain.
    let key = |i: usize| std::fs::read(fleet.live(i, "www.example.com").join("privkey.pem")).unwrap();
    assert!(key(0) == key(1) && key(1) == key(2));
    // The private key never appears in etcd in clear: not its PEM, not its body.
    let dump = etcd.dump("/certkeeper/");
    assert!(dump.contains("/certkeeper/material/www.example.com"), "{dump}");
    let pem = String::from_utf8(key(0)).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !dump.contains("PRIVATE KEY") && !dump.contains(&body[..40]),
        "a key in etcd in clear"
    );
    // status --cluster shows every member serving the issued serial.
    let view = fleet.status(1);
    let www = &view["certificates"][0];
    assert_eq!(www["name"], "www.example.com", "{view}");
    for m in ["m0", "m1", "m2"] {
        assert_eq!(www["members"][m]["serial"], www["issued"], "{view}");
        assert_eq!(www["members"][m]["deployed"], true, "{view}");
    }
    // Every member's metrics, the followers' too, count the three members serving it (once
    // the last member's report is in).
    let lines = [
        "certkeeper_cluster_members_deployed{name=\"www.example.com\"} 3",
        "certkeeper_cluster_members_deployed{name=\"shop.example.net\"} 3",
        "certkeeper_certificate_ready_status{name=\"www.example.com\"} 1",
        "certkeeper_cluster_etcd_up 1",
    ];
    let start = Instant::now();
    for port in &fleet.metrics {
        loop {
            let text = metrics(*port).await;
            let missing: Vec<&str> = lines.iter().copied().filter(|l| !text.contains(l)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {missing:?} on port {port}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let leaders: usize = leaders_in_metrics(&fleet).await;
    assert_eq!(leaders, 1, "not one leader in the metrics");
    // Fleet mode leaves ordering to the daemons: a one-shot run here is refused.
    let once = Command::new(BIN)
        .args(["run", "--once"])
        .env("CERTKEEPER_CONFIG", fleet.config(2))
        .current_dir(&env.dir)
        .output()
        .unwrap();
    assert_eq!(once.status.code(), Some(2), "{}", stderr(&once));
    assert!(stderr(&once).contains("[cluster]"), "{}", stderr(&once));
    // The leader stopped as a rolling restart stops it (SIGTERM) hands over at once; the next
    // leader orders a new certificate with the contact the first one created, not a new one.
    let mut leader = None;
    for (i, port) in fleet.metrics.iter().enumerate() {
        if metrics(*port).await.contains("\ncertkeeper_cluster_leader 1\n") {
            leader = Some(i);
        }
    }
    let leader = leader.expect("a leader in the metrics");
    let view = fleet.status(0);
    assert_eq!(view["leader"], format!("m{leader}"), "{view}");
    let member = fleet.members[leader].as_mut().unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &member.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let stopped = member.child.wait().unwrap();
    assert!(stopped.success(), "the leader's exit at SIGTERM: {stopped:?}");
    add_certificate(&fleet, "new.example.com");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    fleet
        .wait(60, "the next leader's new certificate served", |f| {
            f.all_serve(&others, "new.example.com", "")
        })
        .await;
    let contacts = env
        .sim
        .control()
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/sslcontact"))
        .count();
    assert_eq!(contacts, 1, "contacts created:\n{}", fleet.logs());
    fleet.start(leader, &[]);
    fleet
        .wait(60, "the restarted member serves the new certificate", |f| {
            f.all_serve(&[0, 1, 2], "new.example.com", "")
        })
        .await;
    // A member started with another fleet key refuses the material with a clear error, keeps
    // the files it serves and says so to the fleet: the metrics count two members serving.
    fleet.kill(2);
    let served = std::fs::read(fleet.live(2, "www.example.com").join("cert.pem")).unwrap();
    let other: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let other_key = env.dir.join("other.key");
    std::fs::write(&other_key, format!("{other}\n")).unwrap();
    std::fs::set_permissions(&other_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(fleet.config(2)).unwrap();
    std::fs::write(fleet.config(2), text.replace("\"fleet.key\"", "\"other.key\"")).unwrap();
    fleet.start(2, &[]);
    let counted = "certkeeper_cluster_members_deployed{name=\"www.example.com\"} 2";
    let start = Instant::now();
    while !metrics(fleet.metrics[0]).await.contains(counted) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{counted} not seen:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = fleet.members[2].as_ref().unwrap().log();
    assert!(log.contains("does not open with this member's fleet key"), "{log}");
    assert_eq!(
        std::fs::read(fleet.live(2, "www.example.com").join("cert.pem")).unwrap(),
        served
    );
    assert!(fleet.pair_matches(2, "www.example.com"));
}

/// How many members' metrics say they lead.
async fn leaders_in_metrics(fleet: &Fleet) -> usize {
    let mut n = 0;
    for port in &fleet.metrics {
        n += usize::from(metrics(*port).await.contains("\ncertkeeper_cluster_leader 1\n"));
    }
    n
}

/// The journal's steps, and after `sending` the point `answered` (the paid request's answer is
/// here but not journaled). A kill at `sending` is settled after the reconciliation grace: the
/// test config's 2 s here (the single-host crash tests wait out the shipped 10 minutes).
fn kill_points() -> Vec<&'static str> {
    use certkeeper::store::Step;
    let mut points = Vec::new();
    for step in Step::ALL {
        points.push(step.name());
        if step == Step::Sending {
            points.push(certkeeper::order::ANSWERED);
        }
    }
    points
}

/// One kill: member 0 starts alone (so it leads), orders `k{i}.example.com` and is SIGKILLed
/// where it pauses at `point`; members 1 and 2, started meanwhile, take over when its lease (the
/// shipped 10 s) runs out and finish the order. Then member 0 comes back and installs it too.
async fn kill_leader_at(env: Arc<TestEnv>, endpoints: Vec<String>, i: usize, point: &'static str) {
    let name = format!("k{i}.example.com");
    let dir = env.dir.join(format!("p{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let base = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace(
            "\"api-password\"",
            &format!("\"{}\"", env.dir.join("api-password").display()),
        )
        .replace("\"root.pem\"", &format!("\"{}\"", env.dir.join("root.pem").display()))
        + &format!("\n[[certificate]]\nname = \"{name}\"\nkey = \"ecdsa-p256\"\n");
    let mut fleet = Fleet::configure_in(&dir, &base, &endpoints, 3, &format!("prefix = \"/kill{i}/\""));
    fleet.start(0, &[(certkeeper::order::PAUSE_ENV, point)]);
    fleet
        .wait(60, &format!("member 0 pauses at {point}"), |f| {
            f.members[0]
                .as_ref()
                .is_some_and(|m| m.log().contains(&format!("paused at {point} ")))
        })
        .await;
    fleet.start(1, &[]);
    fleet.start(2, &[]);
    // SIGKILL, by PID.
    fleet.kill(0);
    fleet
        .wait(
            90,
            &format!("members 1 and 2 serve {name} after the kill at {point}"),
            |f| f.all_serve(&[1, 2], &name, ""),
        )
        .await;
    fleet.start(0, &[]);
    fleet
        .wait(60, &format!("member 0 serves {name} again"), |f| {
            f.all_serve(&[0, 1, 2], &name, "")
        })
        .await;
    // One paid order, and no reissue: the new leader went on with the old one's order from its
    // journal (with the order's key), it did not adopt the certificate and reissue it for a key
    // of its own.
    let ledger = env.sim.control().ledger();
    assert_eq!(
        (env.paid(&name), env.reissues(&name)),
        (1, 0),
        "killed at {point}: {ledger:?}\n{}",
        fleet.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_at_every_journal_step_is_replaced_and_nothing_is_paid_twice() {
    if !require_etcd("the_leader_killed_at_every_journal_step_is_replaced_and_nothing_is_paid_twice") {
        return;
    }
    let env = Arc::new(TestEnv::start("fleet-kill").await);
    let etcd = Etcd::start(&env.dir);
    // The validation by AutoDNS; the single-host crash test covers the DNS hook's steps, and
    // the handover is the same at every step.
    env.write_config(&[], "");
    let points = kill_points();
    // Six at a time, each with its own certificate, etcd prefix and members.
    for (b, batch) in points.chunks(6).enumerate() {
        let mut runs = tokio::task::JoinSet::new();
        for (j, point) in batch.iter().enumerate() {
            runs.spawn(kill_leader_at(env.clone(), etcd.endpoints.clone(), b * 6 + j, point));
        }
        while let Some(r) = runs.join_next().await {
            if let Err(e) = r {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// `etcdctl get KEY -w json`: the key's mod revision, 0 when absent.
fn mod_revision(etcd: &Etcd, key: &str) -> i64 {
    let out = etcd.etcdctl().args(["get", key, "-w", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["kvs"][0]["mod_revision"].as_i64().unwrap_or(0)
}

fn signal(member: &Member, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &member.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_wakes() {
    if !require_etcd("a_leader_paused_past_its_lease_writes_nothing_when_it_wakes") {
        return;
    }
    let env = TestEnv::start("fleet-stop").await;
    let etcd = Etcd::start(&env.dir);
    let name = "stop.example.com";
    env.write_config(&[Cert::hook(name)], "");
    // The DNS hook says it was called, then takes 3 s: the leader is stopped meanwhile.
    let called = env.dir.join("hook-called");
    let hook = env.script(
        "slow-hook.sh",
        &format!(
            "echo \"$1\" >> {}\nsleep 3\nexec {BIN} demo-dns-hook {} {} \"$@\"",
            called.display(),
            env.sim.sim_url(),
            env.dir.join("root.pem").display()
        ),
    );
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("dns_hook =") {
                format!("dns_hook = [\"{}\"]\n", hook.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(env.config_path(), text).unwrap();
    let mut fleet = Fleet::configure(&env, &etcd, 2, "");
    fleet.start(0, &[]);
    fleet.wait(60, "member 0 runs the DNS hook", |_| called.exists()).await;
    // SIGSTOP by PID, past the shipped 10 s lease: member 1 takes over and finishes the order.
    signal(fleet.members[0].as_ref().unwrap(), "-STOP");
    fleet.start(1, &[]);
    fleet
        .wait(90, "member 1 serves the certificate", |f| f.all_serve(&[1], name, ""))
        .await;
    let state_key = format!("/certkeeper/state/{name}");
    let material_key = format!("/certkeeper/material/{name}");
    let before = (mod_revision(&etcd, &state_key), mod_revision(&etcd, &material_key));
    assert!(before.0 > 0 && before.1 > 0, "{before:?}");
    let requests = env.sim.control().requests().len();
    // Woken: its hook has returned, and the order goes on where it was, until its first write.
    signal(fleet.members[0].as_ref().unwrap(), "-CONT");
    fleet
        .wait(30, "member 0 finds it no longer leads", |f| {
            f.members[0]
                .as_ref()
                .is_some_and(|m| m.log().contains("no longer the fleet's leader"))
        })
        .await;
    // As a member it installs what member 1 ordered.
    fleet
        .wait(60, "member 0 serves member 1's certificate", |f| {
            f.all_serve(&[0, 1], name, "")
        })
        .await;
    // It wrote nothing of the order: the state and the material are member 1's, and it sent
    // no paid request.
    assert_eq!(
        (mod_revision(&etcd, &state_key), mod_revision(&etcd, &material_key)),
        before,
        "{}",
        fleet.logs()
    );
    assert_eq!(env.paid(name), 1, "{:?}", env.sim.control().ledger());
    let sent: Vec<String> = env.sim.control().requests()[requests..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        !sent.iter().any(|r| r.contains("POST") && r.ends_with("/certificate")),
        "{sent:?}"
    );
}

/// Appends a `[[certificate]]` for `name` (validated by AutoDNS) to every member's config.
fn add_certificate(fleet: &Fleet, name: &str) {
    for i in 0..fleet.members.len() {
        let path = fleet.config(i);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!("\n[[certificate]]\nname = \"{name}\"\nkey = \"ecdsa-p256\"\n"));
        std::fs::write(&path, text).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_etcd_members_keeps_every_member_serving_and_ordering_resumes_when_they_return() {
    if !require_etcd("losing_etcd_members_keeps_every_member_serving_and_ordering_resumes_when_they_return") {
        return;
    }
    let env = TestEnv::start("fleet-etcd-down").await;
    let mut etcd = Etcd::start(&env.dir);
    env.write_config(&[Cert::autodns("a.example.com")], "");
    let mut fleet = Fleet::configure(&env, &etcd, 3, "");
    for i in 0..3 {
        fleet.start(i, &[]);
    }
    let all = [0, 1, 2];
    fleet
        .wait(90, "all serve a.example.com", |f| {
            f.all_serve(&all, "a.example.com", "")
        })
        .await;
    // One etcd member down: a new certificate is ordered and installed everywhere.
    etcd.stop_member(2);
    add_certificate(&fleet, "b.example.com");
    fleet
        .wait(90, "all serve b.example.com with one etcd member down", |f| {
            f.all_serve(&all, "b.example.com", "")
        })
        .await;
    assert_eq!(env.paid("b.example.com"), 1);
    // All down: the leader stops leading once its lease cannot be kept, and nothing is asked of
    // the API; every member keeps serving what it has.
    etcd.stop_member(0);
    etcd.stop_member(1);
    fleet
        .wait(60, "the leader stands down", |f| {
            f.members
                .iter()
                .flatten()
                .any(|m| m.log().contains("no longer the fleet's leader"))
        })
        .await;
    let requests = env.sim.control().requests().len();
    add_certificate(&fleet, "c.example.com");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let sent: Vec<String> = env.sim.control().requests()[requests..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(sent.is_empty(), "API calls without etcd: {sent:?}\n{}", fleet.logs());
    // The members' metrics say so, in time, with what each member knows without etcd.
    for port in &fleet.metrics {
        let text = metrics(*port).await;
        assert!(text.contains("\ncertkeeper_cluster_etcd_up 0\n"), "{text}");
        assert!(text.contains("\ncertkeeper_cluster_leader 0\n"), "{text}");
        assert!(
            text.contains("certkeeper_certificate_ready_status{name=\"b.example.com\"} 1"),
            "{text}"
        );
    }
    for name in ["a.example.com", "b.example.com"] {
        assert!(
            fleet.all_serve(&all, name, ""),
            "{name} no longer served:\n{}",
            fleet.logs()
        );
    }
    // etcd back: a leader is elected again and orders the new certificate, once.
    for i in 0..3 {
        etcd.start_member(i);
    }
    etcd.wait_healthy(&all);
    fleet
        .wait(120, "all serve c.example.com after etcd returned", |f| {
            f.all_serve(&all, "c.example.com", "")
        })
        .await;
    assert_eq!(env.paid("c.example.com"), 1);
}

/// The fleet's example configuration passes `certkeeper check` with the files it names in
/// place: the etcd certificates made by `examples/fleet/etcd-tls.sh`, a fleet key, the API
/// password. (No etcd is asked: `check` reads the configuration only.)
#[test]
fn the_fleet_example_configuration_checks_with_the_example_etcd_certificates() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("certkeeper-it-fleet-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let etc = dir.join("etc");
    let out = Command::new("sh")
        .arg(repo.join("examples/fleet/etcd-tls.sh"))
        .arg(etc.join("etcd"))
        .args(["IP:10.0.0.11", "IP:10.0.0.12", "IP:10.0.0.13"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, text) in [
        ("api-password", "secret\n"),
        ("fleet.key", &format!("{}\n", "ab".repeat(32))),
    ] {
        std::fs::write(etc.join(name), text).unwrap();
        std::fs::set_permissions(etc.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let example = std::fs::read_to_string(repo.join("examples/fleet/certkeeper.toml")).unwrap();
    let text = example
        .replace("/etc/certkeeper", &etc.display().to_string())
        .replace("/var/lib/certkeeper", &dir.join("state").display().to_string())
        .replace("/usr/share/certkeeper/hooks", &repo.join("hooks").display().to_string());
    let config = dir.join("certkeeper.toml");
    std::fs::write(&config, text).unwrap();
    let check = Command::new(BIN)
        .arg("check")
        .env("CERTKEEPER_CONFIG", &config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    // The key etcd-tls.sh made for the members is private from its first byte.
    let mode = std::fs::metadata(etc.join("etcd/client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}
