//! `TestEnv`: an in-process simulator, a temporary directory with a config, and the certkeeper
//! binary run as a child process (stopped by its PID when a test ends).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use autodns_sim::{Durations, Faults, RunningSim, Sim, SimConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

pub struct TestEnv {
    pub sim: RunningSim,
    pub dir: PathBuf,
}

/// One certificate in a test config.
pub struct Cert<'a> {
    pub name: &'a str,
    pub alt: &'a [&'a str],
    pub key: &'a str,
    pub hook: bool,
}

impl<'a> Cert<'a> {
    pub fn autodns(name: &'a str) -> Self {
        Self {
            name,
            alt: &[],
            key: "ecdsa-p256",
            hook: false,
        }
    }

    pub fn hook(name: &'a str) -> Self {
        Self {
            name,
            alt: &[],
            key: "ecdsa-p256",
            hook: true,
        }
    }
}

impl TestEnv {
    pub async fn start(tag: &str) -> Self {
        Self::start_with(
            tag,
            Faults {
                rate_limit: 0.0,
                ..Faults::default()
            },
        )
        .await
    }

    pub async fn start_with(tag: &str, faults: Faults) -> Self {
        Self::start_sim(
            tag,
            SimConfig {
                faults,
                ..SimConfig::default()
            },
        )
        .await
    }

    /// Starts with a simulator configured by `config` (its CA file and DCV interval are set here).
    pub async fn start_sim(tag: &str, config: SimConfig) -> Self {
        let dir = std::env::temp_dir().join(format!("certkeeper-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sim = Sim::start(SimConfig {
            ca_file: Some(dir.join("root.pem")),
            durations: Durations {
                dcv_interval: Duration::from_millis(50),
                ..config.durations.clone()
            },
            ..config
        })
        .await
        .unwrap();
        let pw = dir.join("api-password");
        std::fs::write(&pw, "demo-password\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self { sim, dir }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("certkeeper.toml")
    }

    pub fn live(&self, name: &str) -> PathBuf {
        self.dir.join("live").join(name)
    }

    /// Writes a config for `certs`, with `extra` appended to `[defaults]`.
    pub fn write_config(&self, certs: &[Cert<'_>], extra: &str) {
        let mut text = format!(
            r#"[api]
url = "{api}"
user = "demo"
context = 4
password_file = "api-password"
ca_file = "root.pem"
timeout = "3s"

[store]
state_dir = "state"
live_dir = "live"

[dns]
resolvers = ["{dns}"]
nameserver_port = {port}
check_interval = "100ms"
propagation_timeout = "20s"

[order]
poll_interval = "50ms"
poll_interval_max = "500ms"
job_timeout = "60s"
reconcile_grace = "2s"

[defaults]
admin_contact = {{ fname = "Jo", lname = "Doe", email = "jo@example.com", phone = "+49-941-1234560" }}
technical_contact = {{ fname = "Jo", lname = "Doe", email = "jo@example.com", phone = "+49-941-1234560" }}
{extra}
"#,
            api = self.sim.api_url,
            dns = self.sim.dns_addr,
            port = self.sim.dns_addr.port(),
        );
        for c in certs {
            let alts: Vec<String> = c.alt.iter().map(|a| format!("\"{a}\"")).collect();
            text.push_str(&format!(
                "\n[[certificate]]\nname = \"{}\"\nalt_names = [{}]\nkey = \"{}\"\n",
                c.name,
                alts.join(", "),
                c.key
            ));
            if c.hook {
                text.push_str(&format!(
                    "dns = \"hook\"\ndns_hook = [\"{BIN}\", \"demo-dns-hook\", \"{}\", \"{}\"]\n",
                    self.sim.sim_url(),
                    self.dir.join("root.pem").display()
                ));
            }
        }
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Writes an executable shell script into the test directory.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A hook that records every call: the `CERTKEEPER_*` variables it was given, sorted, and a
    /// `---` line. Returns the script and the file it writes.
    pub fn recorder(&self, name: &str) -> (PathBuf, PathBuf) {
        let out = self.dir.join(format!("{name}.calls"));
        let script = self.script(
            &format!("{name}.sh"),
            &format!(
                "env | grep '^CERTKEEPER_' | sort >> {0}\necho --- >> {0}",
                out.display()
            ),
        );
        (script, out)
    }

    /// Takes the config's test shortcuts out (the API timeout, the DNS and job intervals, the
    /// job timeout, the reconciliation grace): certkeeper's shipped settings apply.
    pub fn use_shipped_settings(&self) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        let shortcuts = [
            "timeout =",
            "poll_interval",
            "job_timeout",
            "reconcile_grace",
            "check_interval",
            "propagation_timeout",
        ];
        let kept: String = text
            .lines()
            .filter(|l| !shortcuts.iter().any(|k| l.starts_with(k)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(self.config_path(), kept).unwrap();
    }

    /// certkeeper's own API client, as certkeeper's user (to act as a user would in the SSL
    /// Manager, or to read the queue as certkeeper does).
    pub fn client(&self) -> certkeeper::api::Client {
        certkeeper::api::Client::new(&certkeeper::config::ApiConfig {
            url: self.sim.api_url.clone(),
            user: "demo".into(),
            context: 4,
            password: certkeeper::config::Secret::new("demo-password".into()),
            password_file: None,
            roots: certkeeper::config::Roots::default(),
            ca_pem: Some(self.sim.ca_pem.clone()),
            timeout: Duration::from_secs(5),
            rate_limit: 100.0,
        })
        .unwrap()
    }

    /// A simulator whose month of order term is `month` long, answering with the term's end
    /// (`payable`, as the 2022 sample does), without a rate limit.
    pub async fn start_months(tag: &str, month: Duration) -> Self {
        Self::start_sim(
            tag,
            SimConfig {
                durations: Durations {
                    month,
                    ..Durations::default()
                },
                faults: Faults {
                    payable: true,
                    rate_limit: 0.0,
                    ..Faults::default()
                },
                ..SimConfig::default()
            },
        )
        .await
    }

    /// Writes the state of `name` as a run left it: a create already paid in this term, no
    /// certificate id, and `order` in flight if given.
    pub fn save_paid_create(&self, name: &str, order: Option<certkeeper::store::OrderJournal>) {
        use certkeeper::store::{CertState, OrderKind, PaidRequest, PaidStatus, STATE_VERSION, Store};
        let store = Store::new(&self.dir.join("state"), &self.dir.join("live"), 3);
        store.prepare().unwrap();
        store
            .save(&CertState {
                version: STATE_VERSION,
                name: name.into(),
                paid: vec![PaidRequest {
                    kind: OrderKind::Create,
                    ctid: "certkeeper-earlier".into(),
                    sent_at: 0,
                    term: 0,
                    status: PaidStatus::Accepted,
                    job_id: None,
                }],
                order,
                ..CertState::default()
            })
            .unwrap();
    }

    /// Appends text (e.g. a `[daemon]` table) to the config file.
    pub fn append_config(&self, text: &str) {
        let old = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(self.config_path(), format!("{old}\n{text}\n")).unwrap();
    }

    /// Runs certkeeper with `args` (and extra environment) to the end, at most 120 s.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .env("CERTKEEPER_CONFIG", self.config_path())
            .env("CERTKEEPER_LOG", "info")
            .env_remove("CERTKEEPER_API_PASSWORD")
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("certkeeper did not finish within 120 s")
            .unwrap()
    }

    /// `run --once`, asserting success.
    pub async fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.run(args, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "certkeeper {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Replaces the simulator's faults; its rate limit stays off, since the tests are about the
    /// faults.
    pub fn set_faults(&self, faults: Faults) {
        self.sim
            .control()
            .set_faults(Faults {
                rate_limit: 0.0,
                ..faults
            })
            .unwrap();
    }

    /// The body of the first order (`POST /certificate`) the simulator received.
    pub fn sent_order(&self) -> serde_json::Value {
        self.sim
            .control()
            .requests()
            .into_iter()
            .find(|r| r.method == "POST" && r.path.ends_with("/certificate"))
            .and_then(|r| r.body)
            .expect("an order was sent")
    }

    pub fn paid(&self, name: &str) -> usize {
        self.sim
            .control()
            .ledger()
            .iter()
            .filter(|l| l.name == name && l.charged)
            .count()
    }

    pub fn reissues(&self, name: &str) -> usize {
        self.sim
            .control()
            .ledger()
            .iter()
            .filter(|l| l.name == name && l.kind == "reissue")
            .count()
    }

    pub fn serial(&self, name: &str) -> String {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(self.live(name).join("cert.pem"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Checks the installed files with openssl: the chain verifies to the simulator's root, the
    /// key matches the certificate, and the key is 0600.
    #[track_caller]
    pub fn assert_installed(&self, name: &str) {
        self.assert_installed_with_key_mode(name, 0o600);
    }

    /// [`Self::assert_installed`], with the key's mode `key_mode` says.
    #[track_caller]
    pub fn assert_installed_with_key_mode(&self, name: &str, key_mode: u32) {
        let live = self.live(name);
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(self.dir.join("root.pem"))
            .arg("-untrusted")
            .arg(live.join("chain.pem"))
            .arg(live.join("cert.pem"))
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "openssl verify for {name}: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        assert_eq!(
            pubkey(&["x509", "-noout", "-pubkey", "-in"], &live.join("cert.pem")),
            pubkey(&["pkey", "-pubout", "-in"], &live.join("privkey.pem")),
            "key and certificate of {name} differ"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(live.join("privkey.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, key_mode, "privkey.pem of {name}");
        let full = std::fs::read_to_string(live.join("fullchain.pem")).unwrap();
        assert!(full.starts_with(&std::fs::read_to_string(live.join("cert.pem")).unwrap()));
    }
}

fn pubkey(args: &[&str], file: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The variable that makes a missing tool or server a failure instead of a skip (.ci/run, which
/// installs them and runs as root, sets it).
pub const REQUIRE_SERVERS: &str = "CERTKEEPER_REQUIRE_SERVERS";

/// Says (past the harness's capture) that `test` is skipped and why; with `REQUIRE_SERVERS` set,
/// fails it instead. The caller returns after it.
pub fn skip(test: &str, why: &str) {
    let why = format!("{test}: skipped because {why}");
    assert!(
        std::env::var_os(REQUIRE_SERVERS).is_none(),
        "{why}, and {REQUIRE_SERVERS} is set"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{why}");
}

/// The variable that makes a missing `shared/` a failure instead of a skip (.ci/run sets it).
pub const REQUIRE_SHARED: &str = "CERTKEEPER_REQUIRE_SHARED";

/// `rel` inside the project's `shared/` folder beside the checkout (the real API samples, the
/// spec, the help pages): the one way certkeeper's tests reach it. Without it, says once (past
/// the harness's capture) that the tests needing it are skipped and why, and returns None; with
/// `REQUIRE_SHARED` set, its absence fails the test instead.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing: the tests against the real API samples are skipped (put the project's shared/ folder beside the checkout to run them)",
        path.display()
    );
    assert!(
        std::env::var_os(REQUIRE_SHARED).is_none(),
        "{why}, and {REQUIRE_SHARED} is set"
    );
    static SAID: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    SAID.get_or_init(|| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{why}");
    });
    None
}

/// What a [`TestEnv::recorder`] hook was given, one entry per call.
pub fn calls(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .split("---\n")
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The certificates of a `status --json` output, after checking its schema version.
pub fn status_rows(out: &std::process::Output) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["schema_version"], 4, "{report}");
    report["certificates"].clone()
}

/// The daemon, started as a child process and stopped by its PID.
pub struct Daemon {
    pub child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    pub fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &[])
    }

    pub fn start_with(env: &TestEnv, vars: &[(&str, &str)]) -> Self {
        let log = env.dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .env("CERTKEEPER_CONFIG", env.config_path())
            .env("CERTKEEPER_LOG", "info")
            .envs(vars.iter().copied())
            .current_dir(&env.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, by PID; asserts a clean exit within 15 s.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(
                    status.code(),
                    Some(0),
                    "the daemon did not stop cleanly:\n{}",
                    self.log()
                );
                return self.log();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the daemon did not stop within 15 s of SIGTERM:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done`, at most `secs`; panics with the daemon's log.
pub async fn wait_until(daemon: &Daemon, secs: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("not done within {secs} s; the daemon's log:\n{}", daemon.log());
}

/// The daemon's metrics, scraped from `127.0.0.1:port`.
pub async fn metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}
