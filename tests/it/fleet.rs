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
}

impl Etcd {
    pub fn start(dir: &Path) -> Self {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut etcd = Etcd {
            members: Vec::new(),
            args: Vec::new(),
            endpoints: clients.iter().map(|c| format!("http://127.0.0.1:{c}")).collect(),
            dir: dir.join("etcd"),
        };
        for i in 0..3 {
            let data = etcd.dir.join(format!("e{i}"));
            std::fs::create_dir_all(&data).unwrap();
            etcd.args.push(vec![
                format!("--name=e{i}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls=http://127.0.0.1:{}", clients[i]),
                format!("--advertise-client-urls=http://127.0.0.1:{}", clients[i]),
                format!("--listen-peer-urls=http://127.0.0.1:{}", peers[i]),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", peers[i]),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=certkeeper-test".into(),
                "--listen-metrics-urls=".into(),
            ]);
            etcd.members.push(None);
            etcd.start_member(i);
        }
        etcd.wait_healthy(&[0, 1, 2]);
        etcd
    }

    pub fn start_member(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("e{i}.log"))).unwrap();
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
            let eps: Vec<&str> = which.iter().map(|i| self.endpoints[*i].as_str()).collect();
            let ok = Command::new("/usr/bin/etcdctl")
                .env("ETCDCTL_API", "3")
                .args([&format!("--endpoints={}", eps.join(",")), "endpoint", "health"])
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
        let out = Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints={}", self.endpoints.join(",")),
                "get",
                "--prefix",
                prefix,
            ])
            .output()
            .unwrap();
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
        for i in 0..n {
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
            std::fs::write(dir.join(format!("m{i}.toml")), text).unwrap();
        }
        Fleet {
            dir: dir.to_path_buf(),
            members: (0..n).map(|_| None).collect(),
        }
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
    let etcd = Etcd::start(&env.dir);
    env.write_config(&[Cert::autodns("www.example.com"), Cert::hook("shop.example.net")], "");
    let mut fleet = Fleet::configure(&env, &etcd, 3, "");
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
    let out = Command::new(BIN)
        .args(["status", "--cluster", "--json"])
        .env("CERTKEEPER_CONFIG", fleet.config(1))
        .current_dir(&env.dir)
        .output()
        .unwrap();
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let www = &view["certificates"][0];
    assert_eq!(www["name"], "www.example.com", "{view}");
    for m in ["m0", "m1", "m2"] {
        assert_eq!(www["members"][m]["serial"], www["issued"], "{view}");
        assert_eq!(www["members"][m]["deployed"], true, "{view}");
    }
    // Fleet mode leaves ordering to the daemons: a one-shot run here is refused.
    let once = Command::new(BIN)
        .args(["run", "--once"])
        .env("CERTKEEPER_CONFIG", fleet.config(2))
        .current_dir(&env.dir)
        .output()
        .unwrap();
    assert_eq!(once.status.code(), Some(2), "{}", stderr(&once));
    assert!(stderr(&once).contains("[cluster]"), "{}", stderr(&once));
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
    let out = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={}", etcd.endpoints.join(",")),
            "get",
            key,
            "-w",
            "json",
        ])
        .output()
        .unwrap();
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
