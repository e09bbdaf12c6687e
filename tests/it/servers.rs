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
    let live = env.live("www.example.com");
    let d = dir.display();
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nworker_processes 1;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name www.example.com;\n    ssl_certificate {}/fullchain.pem;\n    ssl_certificate_key {}/privkey.pem;\n    location / {{ return 200 \"ok\\n\"; }}\n    {}\n  }}\n}}\n",
        live.display(),
        live.display(),
        if broken { "this_is_not_a_directive on;" } else { "" }
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
}

async fn start_nginx(env: &TestEnv) -> (Daemon, PathBuf, u16) {
    let dir = env.dir.join("nginx");
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
