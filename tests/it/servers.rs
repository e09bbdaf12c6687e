//! Tests against the servers users run: BIND9, nginx and Apache, started on loopback high ports
//! in temporary directories with their own configs, and stopped by their PIDs.
//!
//! Where a server is not installed the test says so and returns, unless
//! `CERTKEEPER_REQUIRE_SERVERS=1` (set by .ci/run, which installs them) makes that a failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use autodns_sim::{Faults, SimConfig};

use crate::support::*;

/// Whether every tool is installed; if not, the test is skipped (or fails in CI).
fn require(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(t).exists())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: skipped because {} not installed (Debian: apt-get install nginx apache2 bind9 bind9-dnsutils; .ci/run installs them)",
        missing.join(", ")
    );
    assert!(
        std::env::var_os("CERTKEEPER_REQUIRE_SERVERS").is_none(),
        "{why}, and CERTKEEPER_REQUIRE_SERVERS is set"
    );
    // Straight to stderr, past the test harness's capture, so that a skip is seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{why}");
    false
}

fn hook(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hooks")
        .join(name)
        .display()
        .to_string()
}

fn free_port() -> u16 {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    drop(std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap());
    port
}

/// A server process, stopped by its PID when dropped.
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    fn start(name: &'static str, cmd: &mut Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { name, child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} ({pid}) did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `port`.
async fn wait_for_port(port: u16, what: &str, log: &Path) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what} did not start listening on {port}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The serial the TLS server on `port` presents, checked against the simulator's root.
fn served_serial(env: &TestEnv, port: u16) -> String {
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "www.example.com",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(env.dir.join("root.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s_client.stdout).into_owned();
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "the served chain does not verify:\n{text}\n{}",
        String::from_utf8_lossy(&s_client.stderr)
    );
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls until the server presents `serial` (a reload takes effect asynchronously).
async fn wait_for_serial(env: &TestEnv, port: u16, serial: &str) {
    let mut last = String::new();
    for _ in 0..50 {
        last = served_serial(env, port);
        if last == serial {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server still presents {last}, not {serial}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind9_serves_the_record_published_by_the_rfc2136_hook_and_the_ca_validates_against_it() {
    if !require("bind9", &["named", "nsupdate", "tsig-keygen"]) {
        return;
    }
    let port = free_port();
    let bind: SocketAddr = ([127, 0, 0, 1], port).into();
    let env = TestEnv::start_sim(
        "bind9",
        SimConfig {
            dcv_nameserver: Some(bind),
            faults: Faults {
                rate_limit: 0.0,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    let dir = env.dir.join("bind");
    std::fs::create_dir_all(&dir).unwrap();
    let key = Command::new("tsig-keygen")
        .args(["-a", "hmac-sha256", "certkeeper-key"])
        .output()
        .unwrap();
    assert!(key.status.success());
    std::fs::write(dir.join("key.conf"), &key.stdout).unwrap();
    std::fs::write(
        dir.join("example.com.zone"),
        "$TTL 300\n@ IN SOA ns1.example.com. hostmaster.example.com. ( 1 3600 600 86400 60 )\n@ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\n",
    )
    .unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("named.conf"),
        format!(
            "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
              recursion no; allow-query {{ any; }}; dnssec-validation no; }};
             controls {{ }};
             include \"{d}/key.conf\";
             zone \"example.com\" {{ type primary; file \"{d}/example.com.zone\"; allow-update {{ key certkeeper-key; }}; }};\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("named");
    cmd.args(["-g", "-c"]).arg(dir.join("named.conf"));
    if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
    {
        cmd.args(["-u", "root"]);
    }
    let log = dir.join("named.log");
    let _named = Daemon::start("named", &mut cmd, &log);
    wait_for_port(port, "named", &log).await;

    // certkeeper publishes through nsupdate (TSIG), and finds BIND as the zone's only
    // authoritative server through its NS record.
    env.write_config(&[Cert::hook("www.example.com")], "");
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let hook_line = text.lines().find(|l| l.starts_with("dns_hook")).unwrap().to_string();
    let text = text
        .replace(
            &hook_line,
            &format!(
                "dns_hook = [\"{}\", \"127.0.0.1:{port}\", \"{}\"]",
                hook("dns-rfc2136"),
                dir.join("key.conf").display()
            ),
        )
        .replace(
            &format!("resolvers = [\"{}\"]", env.sim.dns_addr),
            &format!("resolvers = [\"{bind}\"]"),
        )
        .replace(
            &format!("nameserver_port = {}", env.sim.dns_addr.port()),
            &format!("nameserver_port = {port}"),
        );
    std::fs::write(env.config_path(), text).unwrap();
    let out = env.run_ok(&["run", "--once"]).await;
    env.assert_installed("www.example.com");
    assert_eq!(env.paid("www.example.com"), 1);
    let log = stderr(&out);
    assert!(
        log.contains("dns-rfc2136: present www.example.com. TXT")
            && log.contains("dns-rfc2136: cleanup www.example.com. TXT"),
        "{log}"
    );
    // The simulator validated against BIND, not its own server, and the record is gone again.
    assert!(env.sim.control().dns_records().is_empty());
    let dig = Command::new("dig")
        .args([
            "+short",
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "TXT",
            "www.example.com",
        ])
        .output()
        .unwrap();
    assert!(
        dig.status.success() && dig.stdout.is_empty(),
        "the record was not cleaned up: {}",
        String::from_utf8_lossy(&dig.stdout)
    );
}

/// A configured nginx on `port` in `dir`, serving live/www.example.com.
fn nginx_conf(env: &TestEnv, dir: &Path, port: u16, broken: bool) {
    nginx_conf_from(dir, port, &env.live("www.example.com"), broken);
}

/// A configured nginx on `port` in `dir`, serving the files in `files`.
fn nginx_conf_from(dir: &Path, port: u16, files: &Path, broken: bool) {
    let d = dir.display();
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name www.example.com;\n    ssl_certificate {}/fullchain.pem;\n    ssl_certificate_key {}/privkey.pem;\n    location / {{ return 200 \"ok\\n\"; }}\n    {}\n  }}\n}}\n",
        files.display(),
        files.display(),
        if broken { "this_is_not_a_directive on;" } else { "" }
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
}

async fn start_nginx(env: &TestEnv) -> (Daemon, PathBuf, u16) {
    start_nginx_in(env, "nginx").await
}

/// An nginx in `env.dir/sub`, on a port of its own, serving live/www.example.com.
async fn start_nginx_in(env: &TestEnv, sub: &str) -> (Daemon, PathBuf, u16) {
    let dir = env.dir.join(sub);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    nginx_conf(env, &dir, port, false);
    let log = dir.join("stdout.log");
    let mut cmd = Command::new("nginx");
    cmd.arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"]);
    let daemon = Daemon::start("nginx", &mut cmd, &log);
    wait_for_port(port, "nginx", &dir.join("error.log")).await;
    (daemon, dir, port)
}

fn nginx_reload(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "reload = [\"{}\", \"-c\", \"{d}/nginx.conf\", \"-p\", \"{d}\", \"-e\", \"{d}/error.log\"]",
        hook("reload-nginx")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_the_reissued_certificate_after_the_reload_hook() {
    if !require("nginx", &["nginx"]) {
        return;
    }
    let env = TestEnv::start("nginx").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.run_ok(&["run", "--once"]).await;
    let (_nginx, dir, port) = start_nginx(&env).await;
    let s1 = served_serial(&env, port);
    assert_eq!(s1, env.serial("www.example.com"));

    env.write_config(&[Cert::autodns("www.example.com")], &nginx_reload(&dir));
    let out = env.run_ok(&["--renew-now"]).await;
    assert!(
        stderr(&out).contains("reload-nginx: nginx reloaded for www.example.com"),
        "{}",
        stderr(&out)
    );
    let s2 = env.serial("www.example.com");
    assert_ne!(s1, s2);
    wait_for_serial(&env, port, &s2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_nginx_config_rolls_back_and_the_next_run_deploys_once_fixed() {
    if !require("nginx", &["nginx"]) {
        return;
    }
    let env = TestEnv::start("nginx-broken").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.run_ok(&["run", "--once"]).await;
    let (_nginx, dir, port) = start_nginx(&env).await;
    let s1 = served_serial(&env, port);
    env.write_config(&[Cert::autodns("www.example.com")], &nginx_reload(&dir));

    // Someone breaks the nginx config: the running nginx keeps its old one, `nginx -t` fails.
    nginx_conf(&env, &dir, port, true);
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("nginx -t failed"), "{}", stderr(&out));
    assert_eq!(env.serial("www.example.com"), s1, "live/NAME was not switched back");
    assert_eq!(served_serial(&env, port), s1);
    let status = env.run_ok(&["status", "--json"]).await;
    let rows = status_rows(&status);
    assert_eq!(rows[0]["state"], "issued_not_deployed", "{rows}");

    // Fixed, the next run deploys the certificate already issued, without a new order.
    nginx_conf(&env, &dir, port, false);
    env.run_ok(&["run", "--once"]).await;
    let s2 = env.serial("www.example.com");
    assert_ne!(s1, s2);
    wait_for_serial(&env, port, &s2).await;
    assert_eq!(env.reissues("www.example.com"), 1);
    let status = env.run_ok(&["status", "--json"]).await;
    let rows = status_rows(&status);
    assert_eq!(rows[0]["state"], "deployed", "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_serves_the_reissued_certificate_after_the_reload_hook() {
    if !require("apache", &["apache2"]) {
        return;
    }
    let env = TestEnv::start("apache").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.run_ok(&["run", "--once"]).await;
    let dir = env.dir.join("apache");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let live = env.live("www.example.com");
    let modules = "/usr/lib/apache2/modules";
    let d = dir.display();
    std::fs::write(
        dir.join("httpd.conf"),
        format!(
            "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\nLogLevel warn\nMutex file:{d} default\n\
             LoadModule mpm_event_module {modules}/mod_mpm_event.so\nLoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule socache_shmcb_module {modules}/mod_socache_shmcb.so\nLoadModule ssl_module {modules}/mod_ssl.so\n\
             User nobody\nGroup nogroup\nServerName www.example.com\nListen 127.0.0.1:{port}\nSSLSessionCache shmcb:{d}/ssl_scache(512000)\nDocumentRoot {d}\n\
             <VirtualHost 127.0.0.1:{port}>\n  ServerName www.example.com\n  SSLEngine on\n  SSLCertificateFile {}/fullchain.pem\n  SSLCertificateKeyFile {}/privkey.pem\n</VirtualHost>\n",
            live.display(),
            live.display()
        ),
    )
    .unwrap();
    let log = dir.join("stdout.log");
    let mut cmd = Command::new("apache2");
    cmd.arg("-d")
        .arg(&dir)
        .arg("-f")
        .arg(dir.join("httpd.conf"))
        .arg("-DFOREGROUND");
    let _apache = Daemon::start("apache2", &mut cmd, &log);
    wait_for_port(port, "apache2", &dir.join("error.log")).await;
    let s1 = served_serial(&env, port);
    assert_eq!(s1, env.serial("www.example.com"));

    let reload = format!(
        "reload = [\"{}\", \"apache2\", \"-d\", \"{d}\", \"-f\", \"{d}/httpd.conf\"]",
        hook("reload-apache")
    );
    env.write_config(&[Cert::autodns("www.example.com")], &reload);
    let out = env.run_ok(&["--renew-now"]).await;
    assert!(
        stderr(&out).contains("reload-apache: graceful restart for www.example.com"),
        "{}",
        stderr(&out)
    );
    let s2 = env.serial("www.example.com");
    assert_ne!(s1, s2);
    wait_for_serial(&env, port, &s2).await;
}

/// The serial `status --json` shows for the only certificate, and its row.
async fn status_of(env: &TestEnv) -> serde_json::Value {
    let status = env.run_ok(&["status", "--json"]).await;
    status_rows(&status)[0].clone()
}

/// A reload hook can exit 0 while the server hands out the old certificate. With
/// `serve_check`, certkeeper asks the server itself (TLS, SNI set to the name): a real reload
/// passes; a hook that never reloads is caught within the shipped 10 s, rolled back, reported
/// "issued, not served" with exit 4, and told to `on_failure` as `not_served`, without a new order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_check_passes_a_real_reload_and_catches_a_hook_that_did_not_reload() {
    if !require("nginx", &["nginx"]) {
        return;
    }
    let env = TestEnv::start("served-check").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.run_ok(&["run", "--once"]).await;
    let (_nginx, dir, port) = start_nginx(&env).await;
    let (on_failure, told) = env.recorder("on-failure");
    let check = format!("serve_check = [\"127.0.0.1:{port}\"]");
    let daemon = format!("[daemon]\non_failure = [\"{}\"]", on_failure.display());

    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("{}\n{check}", nginx_reload(&dir)),
    );
    env.append_config(&daemon);
    env.run_ok(&["--renew-now"]).await;
    let row = status_of(&env).await;
    assert_eq!(row["state"], "deployed", "{row}");
    let s2 = row["serial"].as_str().unwrap().to_string();
    assert_eq!(row["served"][0]["address"], format!("127.0.0.1:{port}"), "{row}");
    assert_eq!(row["served"][0]["serial"], s2, "{row}");
    // (An old nginx worker may still take a connection for a moment after the reload.)
    wait_for_serial(&env, port, &env.serial("www.example.com")).await;

    // A hook that says yes and does nothing.
    let no_reload = env.script(
        "no-reload.sh",
        &format!(
            "env | grep '^CERTKEEPER_' >> {}\nexit 0",
            env.dir.join("no-reload.env").display()
        ),
    );
    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("reload = [\"{}\"]\n{check}", no_reload.display()),
    );
    env.append_config(&daemon);
    let started = std::time::Instant::now();
    let out = env.run(&["--renew-now"], &[]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let expected = format!("issued, not served (127.0.0.1:{port} serves {s2} for www.example.com)");
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(60),
        "the check waited {took:?}, not the shipped 10 s"
    );
    let row = status_of(&env).await;
    assert_eq!(row["state"], "issued_not_served", "{row}");
    assert!(row["state_text"].as_str().unwrap().contains(&expected[8..]), "{row}");
    assert_eq!(row["serial"], s2, "live/NAME was not switched back: {row}");
    assert_ne!(row["issued"]["serial"], s2, "{row}");
    assert_eq!(served_serial(&env, port), env.serial("www.example.com"));
    let calls = calls(&told);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("CERTKEEPER_EVENT=not_served"), "{calls:?}");
    let what = expected
        .strip_prefix("issued, not served (")
        .unwrap()
        .strip_suffix(')')
        .unwrap();
    assert!(
        calls[0].contains(&format!("CERTKEEPER_NOT_SERVED={what}\n")),
        "{calls:?}"
    );
    // The hook was told which servers would be asked.
    let told_hook = std::fs::read_to_string(env.dir.join("no-reload.env")).unwrap();
    assert!(
        told_hook.contains(&format!("CERTKEEPER_SERVE_CHECK=127.0.0.1:{port}\n")),
        "{told_hook}"
    );
    assert_eq!(env.reissues("www.example.com"), 2, "the failed check bought nothing");
}

/// `nginx -s reload` for the nginx in `dir`, as an operator would.
fn reload_by_hand(dir: &Path) {
    let reloaded = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-s", "reload"])
        .status()
        .unwrap();
    assert!(reloaded.success());
}

/// One metric line's value.
fn metric(metrics: &str, line_start: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l[line_start.len()..].trim().to_string())
}

/// Two nginx behind one name, and a reload hook that forgets the second: the deploy is caught
/// and the forgotten server shows in the metrics with the certificate it still hands out. Once
/// the hook reloads both, the daemon deploys; when the second reverts to an old copy later, the
/// daemon's periodic check reports it (state, metric, `on_failure` once), and sees it fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_a_server_never_reloaded_and_one_that_reverted() {
    if !require("nginx", &["nginx"]) {
        return;
    }
    let env = TestEnv::start("served-daemon").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.run_ok(&["run", "--once"]).await;
    let s1 = status_of(&env).await["serial"].as_str().unwrap().to_string();
    let (_a, dir_a, port_a) = start_nginx_in(&env, "nginx-a").await;
    let (_b, dir_b, port_b) = start_nginx_in(&env, "nginx-b").await;
    // An old copy of the files, for the revert later.
    let old = env.dir.join("old-copy");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["fullchain.pem", "privkey.pem"] {
        std::fs::copy(env.live("www.example.com").join(f), old.join(f)).unwrap();
    }
    let reload_of = |dir: &Path| {
        let d = dir.display();
        format!("{} -c {d}/nginx.conf -p {d} -e {d}/error.log", hook("reload-nginx"))
    };
    let only_a = env.script("reload-a.sh", &format!("set -e\n{}", reload_of(&dir_a)));
    let both = env.script(
        "reload-both.sh",
        &format!("set -e\n{}\n{}", reload_of(&dir_a), reload_of(&dir_b)),
    );
    let (on_failure, told) = env.recorder("on-failure");
    let metrics_port = free_port();
    let config = |reload: &Path| {
        env.write_config(
            &[Cert::autodns("www.example.com")],
            &format!(
                "reload = [\"{}\"]\nserve_check = [\"127.0.0.1:{port_a}\", \"127.0.0.1:{port_b}\"]\nserve_check_timeout = \"2s\"\nserve_check_interval = \"1s\"",
                reload.display()
            ),
        );
        env.append_config(&format!(
            "[daemon]\nretry_backoff = [\"1s\"]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\non_failure = [\"{}\"]",
            on_failure.display()
        ));
    };
    config(&only_a);
    let daemon = crate::support::Daemon::start(&env);
    let served =
        |port: u16| format!("certkeeper_certificate_served{{name=\"www.example.com\",address=\"127.0.0.1:{port}\"}}");
    wait_until(&daemon, 20, || {
        std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok()
    })
    .await;
    let mut m = String::new();
    for _ in 0..50 {
        m = metrics(metrics_port).await;
        if metric(&m, &served(port_a)).is_some() && metric(&m, &served(port_b)).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&m, &served(port_a)).as_deref(), Some("1"), "{m}");
    assert_eq!(metric(&m, &served(port_b)).as_deref(), Some("1"), "{m}");

    // A reissue: the hook reloads A only.
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}\n{}", stderr(&out), daemon.log());
    let forgotten = format!("127.0.0.1:{port_b} serves {s1} for www.example.com");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&forgotten) || stderr(&out).contains(&forgotten),
        "{}",
        stderr(&out)
    );
    let m = metrics(metrics_port).await;
    assert_eq!(metric(&m, &served(port_a)).as_deref(), Some("1"), "{m}");
    assert_eq!(metric(&m, &served(port_b)).as_deref(), Some("0"), "{m}");
    let expiry = |port: u16| {
        format!(
            "certkeeper_certificate_served_expiration_timestamp_seconds{{name=\"www.example.com\",address=\"127.0.0.1:{port}\"}}"
        )
    };
    let s1_not_after = status_of(&env).await["not_after"].as_str().unwrap().to_string();
    let b_expiry: i64 = metric(&m, &expiry(port_b)).unwrap().parse().unwrap();
    let a_expiry: i64 = metric(&m, &expiry(port_a)).unwrap().parse().unwrap();
    assert!(
        a_expiry > b_expiry,
        "A hands out the new certificate, B the old one: {m}"
    );
    let formatted = time::OffsetDateTime::from_unix_timestamp(b_expiry)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(formatted, s1_not_after, "{m}");

    // The hook reloads both: the daemon deploys the issued certificate, without a new order.
    config(&both);
    wait_until(&daemon, 30, || {
        std::process::Command::new(BIN)
            .args(["status", "--json"])
            .env("CERTKEEPER_CONFIG", env.config_path())
            .output()
            .ok()
            .is_some_and(|o| status_rows(&o)[0]["state"] == "deployed")
    })
    .await;
    let s2 = env.serial("www.example.com");
    assert_eq!(served_serial(&env, port_a), s2);
    assert_eq!(served_serial(&env, port_b), s2);
    assert_eq!(env.reissues("www.example.com"), 1);
    let not_served_told = || {
        calls(&told)
            .iter()
            .filter(|c| c.contains("CERTKEEPER_EVENT=not_served"))
            .count()
    };
    assert_eq!(not_served_told(), 1, "{:?}", calls(&told));

    // B reverts to the old copy; the periodic check catches it.
    nginx_conf_from(&dir_b, port_b, &old, false);
    reload_by_hand(&dir_b);
    let status_json = || {
        std::process::Command::new(BIN)
            .args(["status", "--json"])
            .env("CERTKEEPER_CONFIG", env.config_path())
            .output()
            .map(|o| status_rows(&o)[0].clone())
            .unwrap_or_default()
    };
    wait_until(&daemon, 20, || status_json()["state"] == "not_served").await;
    let row = status_json();
    assert!(
        row["state_text"]
            .as_str()
            .unwrap()
            .contains(&format!("deployed, not served ({forgotten})")),
        "{row}"
    );
    let m = metrics(metrics_port).await;
    assert_eq!(metric(&m, &served(port_b)).as_deref(), Some("0"), "{m}");
    assert_eq!(metric(&m, &served(port_a)).as_deref(), Some("1"), "{m}");
    wait_until(&daemon, 10, || not_served_told() == 2).await;
    // Checked again every second, but told once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(not_served_told(), 2, "{:?}", calls(&told));

    // Fixed: seen served again.
    nginx_conf(&env, &dir_b, port_b, false);
    reload_by_hand(&dir_b);
    wait_until(&daemon, 20, || status_json()["state"] == "deployed").await;
    let m = metrics(metrics_port).await;
    assert_eq!(metric(&m, &served(port_b)).as_deref(), Some("1"), "{m}");
    assert_eq!(env.reissues("www.example.com"), 1);
    daemon.stop();
}

/// A key compromise with a real nginx and the served check: when the revoke is about to leave,
/// nginx already hands out the new certificate and nothing is revoked yet; the revoke then
/// names the old serial, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_is_sent_only_once_nginx_serves_the_new_certificate() {
    if !require("nginx", &["nginx"]) {
        return;
    }
    let env = TestEnv::start("revoke-nginx").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.run_ok(&["run", "--once"]).await;
    let (_nginx, dir, port) = start_nginx(&env).await;
    let old = status_of(&env).await["serial"].as_str().unwrap().to_string();
    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("{}\nserve_check = [\"127.0.0.1:{port}\"]", nginx_reload(&dir)),
    );
    let revokes = || {
        env.sim
            .control()
            .ledger()
            .iter()
            .filter(|l| l.kind == "revoke")
            .map(|l| l.serial.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let args = ["revoke", "www.example.com", "--reason", "key-compromise"];
    crate::crash::kill_at(&env, &args, certkeeper::revoke::PAUSE_SENDING).await;
    let row = status_of(&env).await;
    assert_ne!(row["serial"], old, "{row}");
    assert_eq!(row["served"][0]["serial"], row["serial"], "{row}");
    assert_eq!(
        served_serial(&env, port),
        env.serial("www.example.com"),
        "nginx serves the new one"
    );
    assert!(
        revokes().is_empty(),
        "nothing revoked before the new certificate is served"
    );
    env.run_ok(&args).await;
    assert_eq!(revokes(), [old]);
    assert_eq!(env.reissues("www.example.com"), 1);
    assert_eq!(served_serial(&env, port), env.serial("www.example.com"));
}

/// An nginx serving plain HTTP on `port` from one web root per server name: what a CA fetches a
/// FILE validation from.
async fn start_nginx_http(dir: &Path, port: u16, roots: &[(&str, &Path)]) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    let servers: String = roots
        .iter()
        .map(|(name, root)| {
            format!(
                "  server {{\n    listen 127.0.0.1:{port};\n    server_name {name};\n    root {};\n  }}\n",
                root.display()
            )
        })
        .collect();
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\nevents {{ worker_connections 64; }}\nhttp {{\n  log_format ua '$host $request_uri $status \"$http_user_agent\"';\n  access_log {d}/access.log ua;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n{servers}}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .args(["-g", "daemon off;"]);
    let daemon = Daemon::start("nginx", &mut cmd, &dir.join("stdout.log"));
    wait_for_port(port, "nginx", &dir.join("error.log")).await;
    daemon
}

/// FILE validation with a real nginx: the files go under each name's web root (or through a
/// file hook), certkeeper and the simulator both fetch them through nginx, the certificates are
/// issued, and the files are gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_validation_is_fetched_through_nginx_and_the_files_are_removed_after() {
    if !require("file_validation_through_nginx", &["nginx"]) {
        return;
    }
    let port = free_port();
    let web: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let env = TestEnv::start_sim(
        "file-nginx",
        SimConfig {
            file_check_address: Some(web),
            faults: Faults {
                rate_limit: 0.0,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    let (www, apex, shop) = (env.dir.join("www"), env.dir.join("apex"), env.dir.join("shop"));
    for d in [&www, &apex, &shop] {
        std::fs::create_dir_all(d).unwrap();
    }
    let nginx_dir = env.dir.join("nginx-http");
    let _nginx = start_nginx_http(
        &nginx_dir,
        port,
        &[
            ("www.example.com", &www),
            ("example.com", &apex),
            ("shop.example.net", &shop),
        ],
    )
    .await;
    // The file hook writes where the third server's root is: the data comes in its environment.
    let calls = env.dir.join("file-hook.calls");
    let hook = env.script(
        "file-hook",
        &format!(
            "echo \"$1 $CERTKEEPER_FILE_HOST $CERTKEEPER_FILE_PATH\" >> {calls}\ncase \"$1\" in\n  present) mkdir -p \"{root}$(dirname \"$CERTKEEPER_FILE_PATH\")\" && printf '%s\\n' \"$CERTKEEPER_FILE_CONTENT\" > \"{root}$CERTKEEPER_FILE_PATH\" ;;\n  cleanup) rm -f \"{root}$CERTKEEPER_FILE_PATH\" ;;\nesac",
            calls = calls.display(),
            root = shop.display()
        ),
    );
    env.write_config(&[], "");
    env.append_config(&format!(
        r#"
[[certificate]]
name = "www.example.com"
alt_names = ["example.com"]
validation = "file"
file_check_address = "{web}"
webroot = {{ "www.example.com" = "{www}", "example.com" = "{apex}" }}

[[certificate]]
name = "shop.example.net"
validation = "file"
file_check_address = "{web}"
file_hook = ["{hook}"]
"#,
        www = www.display(),
        apex = apex.display(),
        hook = hook.display(),
    ));
    env.run_ok(&["run", "--once"]).await;
    for name in ["www.example.com", "shop.example.net"] {
        env.assert_installed(name);
        assert_eq!(env.paid(name), 1, "{name}");
    }
    // The SAN holds both names, checked by openssl.
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(env.live("www.example.com").join("cert.pem"))
        .output()
        .unwrap();
    let san = String::from_utf8_lossy(&text.stdout);
    assert!(
        san.contains("DNS:www.example.com") && san.contains("DNS:example.com"),
        "{san}"
    );
    // nginx served each file to both certkeeper's check and the simulator's, under its Host.
    let log = std::fs::read_to_string(nginx_dir.join("access.log")).unwrap();
    for host in ["www.example.com", "example.com", "shop.example.net"] {
        for agent in ["certkeeper/", "autodns-sim-dcv"] {
            assert!(
                log.lines().any(
                    |l| l.starts_with(&format!("{host} /.well-known/pki-validation/fileauth.txt 200"))
                        && l.contains(agent)
                ),
                "no 200 for {host} to {agent}:\n{log}"
            );
        }
    }
    // Gone afterwards: from the web roots, and through the hook's cleanup.
    for root in [&www, &apex, &shop] {
        let file = root.join(".well-known/pki-validation/fileauth.txt");
        assert!(!file.exists(), "{} is left", file.display());
    }
    let lines = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            "present shop.example.net /.well-known/pki-validation/fileauth.txt",
            "cleanup shop.example.net /.well-known/pki-validation/fileauth.txt"
        ],
        "{lines}"
    );
    // A reissue validates again; here prepareOrder names the file as a URL, as the XML help
    // page writes it.
    let before = env.serial("www.example.com");
    env.set_faults(Faults {
        file_name: Some("http://{name}/.well-known/pki-validation/fileauth.txt".into()),
        ..Faults::default()
    });
    env.run_ok(&["--renew-now"]).await;
    for name in ["www.example.com", "shop.example.net"] {
        env.assert_installed(name);
        assert_eq!((env.paid(name), env.reissues(name)), (1, 1), "{name}");
    }
    assert_ne!(env.serial("www.example.com"), before);
    for root in [&www, &apex, &shop] {
        assert!(!root.join(".well-known/pki-validation/fileauth.txt").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fleet_members_behind_their_own_nginx_both_serve_the_reissued_certificate() {
    if !require("fleet-nginx", &["nginx", "etcd", "etcdctl"]) {
        return;
    }
    let env = TestEnv::start("fleet-nginx").await;
    let etcd = crate::fleet::Etcd::start(&env.dir);
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    let mut fleet = crate::fleet::Fleet::configure(&env, &etcd, 2, "");
    fleet.start(0, &[]);
    fleet.start(1, &[]);
    fleet
        .wait(90, "both members serve the first certificate", |f| {
            f.all_serve(&[0, 1], name, "")
        })
        .await;
    let s1 = fleet.serial(0, name);
    // Each member's nginx serves that member's live directory.
    let mut nginx = Vec::new();
    for i in 0..2 {
        let dir = env.dir.join(format!("nginx{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        nginx_conf_from(&dir, port, &fleet.live(i, name), false);
        let mut cmd = Command::new("nginx");
        cmd.arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"]);
        let daemon = Daemon::start("nginx", &mut cmd, &dir.join("stdout.log"));
        wait_for_port(port, "nginx", &dir.join("error.log")).await;
        wait_for_serial(&env, port, &s1).await;
        nginx.push((daemon, dir, port));
    }
    // Every member's config gets its nginx's reload hook and a new key type: the leader
    // reissues once, and both members install the new certificate and reload their nginx.
    for (i, (_, dir, _)) in nginx.iter().enumerate() {
        let path = fleet.config(i);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("[defaults]\n", &format!("[defaults]\n{}\n", nginx_reload(dir)), 1)
            .replace("key = \"ecdsa-p256\"", "key = \"ecdsa-p384\"");
        std::fs::write(&path, text).unwrap();
    }
    fleet
        .wait(90, "both members serve the reissued certificate", |f| {
            f.all_serve(&[0, 1], name, &s1)
        })
        .await;
    let s2 = fleet.serial(0, name);
    for (_, _, port) in &nginx {
        wait_for_serial(&env, *port, &s2).await;
    }
    assert_eq!(
        (env.paid(name), env.reissues(name)),
        (1, 1),
        "{:?}",
        env.sim.control().ledger()
    );
}
