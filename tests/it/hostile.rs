//! A hostile API and a hostile network: what it sends is refused before it can read a file,
//! hang a run, reach a hook or cost money.

use std::time::{Duration, Instant};

use autodns_sim::Faults;

use crate::support::*;

/// prepareOrder's DCV line is the API's to write, and a DNS hook's to publish. Before certkeeper
/// read it with its own strict reader, `$INCLUDE` published a root-only file through the hook,
/// `/dev/zero` took gigabytes, a FIFO hung the run, and a newline added a record to the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_dcv_line_is_refused_before_any_hook_runs_or_anything_is_paid() {
    let env = TestEnv::start("hostile-dcv").await;
    let name = "www.example.com";
    let calls = env.dir.join("hook.calls");
    let hook = env.script(
        "dns-hook.sh",
        &format!("env | grep '^CERTKEEPER_' >> {0}\necho --- >> {0}", calls.display()),
    );
    // A file only root may read, holding a valid record: what `$INCLUDE` used to publish.
    let secret = env.dir.join("secret.zone");
    std::fs::write(&secret, format!("{name}. 300 IN TXT \"root-only-secret\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let fifo = env.dir.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    env.write_config(&[Cert::autodns(name)], "");
    env.append_config(&format!("dns = \"hook\"\ndns_hook = [\"{}\"]\n", hook.display()));

    let hostile = [
        format!("$INCLUDE {}", secret.display()),
        "$INCLUDE /dev/zero".to_string(),
        format!("$INCLUDE {}", fifo.display()),
        "$ORIGIN evil.example.net.\n@ 300 IN TXT \"{token}\"".to_string(),
        "{name}. 300 IN TXT \"{token}\"\nevil.example.com. 300 IN A 192.0.2.1".to_string(),
        "{name}. 300 IN TXT \"{token}\nupdate add evil.example.com. 300 IN A 192.0.2.1\"".to_string(),
        "{name}. 300 IN TXT \"{token}\rsend\"".to_string(),
        "{name}. 300 IN CNAME evil.example.net.".to_string(),
        "example.com. 300 IN TXT \"{token}\"".to_string(),
        "_x.evil.example.net. 300 IN TXT \"{token}\"".to_string(),
        "*.{name}. 300 IN TXT \"{token}\"".to_string(),
        "{name}. 300 IN TXT \"$(touch pwned)\"".to_string(),
        "{name}. 300 IN TXT \"`touch pwned`\"".to_string(),
        "{name}. 300 IN TXT \"\u{1b}[2J{token}\"".to_string(),
        "{name}. 300 IN A 192.0.2.1".to_string(),
    ];
    for line in hostile {
        env.set_faults(Faults {
            dcv_line: Some(line.clone()),
            ..Faults::default()
        });
        let started = Instant::now();
        let out = env.run(&["run", "--once"], &[]).await;
        let err = stderr(&out);
        assert!(
            !err.contains("root-only-secret"),
            "{line:?} read the root-only file:\n{err}"
        );
        assert!(
            !err.contains('\u{1b}'),
            "{line:?}: a control character reached the terminal:\n{err}"
        );
        assert!(
            !calls.exists(),
            "{line:?} reached the DNS hook:\n{}",
            std::fs::read_to_string(&calls).unwrap()
        );
        assert!(!env.dir.join("pwned").exists());
        assert_eq!(
            out.status.code(),
            Some(3),
            "{line:?} was not refused as an order failure:\n{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{line:?} held the run for {:?}",
            started.elapsed()
        );
        assert!(
            err.contains("authentication.dns"),
            "{line:?}: the error does not name the field:\n{err}"
        );
    }
    assert_eq!(env.paid(name), 0, "{:?}", env.sim.control().ledger());
    assert!(!env.live(name).join("cert.pem").exists());

    // The same run with the API's own line goes through, so the refusals above were the line's.
    env.set_faults(Faults::default());
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec {} demo-dns-hook {} {} \"$@\"\n",
            BIN,
            env.sim.sim_url(),
            env.dir.join("root.pem").display()
        ),
    )
    .unwrap();
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed(name);
    assert_eq!(env.paid(name), 1);
}

/// The shipped RFC 2136 hook is the second line of defence: what it is given goes into
/// nsupdate's input one command per line, so a value with a newline would add a record of its
/// own. It refuses such values before nsupdate runs (a stand-in nsupdate records its input).
#[test]
fn the_rfc2136_hook_refuses_values_that_would_add_a_command_to_nsupdate() {
    let dir = std::env::temp_dir().join(format!("certkeeper-it-hook2136-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("nsupdate.input");
    let fake = dir.join("nsupdate");
    std::fs::write(&fake, format!("#!/bin/sh\ncat >> {}\n", input.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/dns-rfc2136");
    let run = |name: &str, value: &str, ttl: &str| {
        std::process::Command::new(&hook)
            .args(["127.0.0.1:53", "-", "present"])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
            .env("CERTKEEPER_RECORD_NAME", name)
            .env("CERTKEEPER_RECORD_TYPE", "TXT")
            .env("CERTKEEPER_RECORD_VALUE", value)
            .env("CERTKEEPER_RECORD_TTL", ttl)
            .output()
            .unwrap()
    };
    let ok = run("www.example.com.", "token-123", "300");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        "server 127.0.0.1 53\nupdate add www.example.com. 300 TXT \"token-123\"\nsend\n"
    );
    std::fs::remove_file(&input).unwrap();
    for (name, value, ttl) in [
        (
            "www.example.com.",
            "abc\nupdate add evil.example.com. 300 A 192.0.2.1",
            "300",
        ),
        ("www.example.com.", "abc\n", "300"),
        ("www.example.com.", "abc\rsend", "300"),
        ("www.example.com.", "abc\" \"def", "300"),
        ("www.example.com.", "abc\\", "300"),
        ("www.example.com.", "a b", "300"),
        ("www.example.com.", "a;b", "300"),
        ("www.example.com.", "$(id)", "300"),
        ("www.example.com.", "`id`", "300"),
        ("www.example.com.", "\u{1b}[2J", "300"),
        ("www.example.com.", "äbc", "300"),
        (
            "www.example.com.\nupdate add evil.example.com. 300 A 192.0.2.1",
            "abc",
            "300",
        ),
        ("www.example.com. 300 IN A", "abc", "300"),
        ("www.example.com.", "abc", "300\nsend"),
    ] {
        let out = run(name, value, ttl);
        assert_eq!(out.status.code(), Some(2), "accepted {name:?} {value:?} {ttl:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused"),
            "{name:?} {value:?}"
        );
        assert!(!input.exists(), "nsupdate ran for {name:?} {value:?} {ttl:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How the fake API answers every request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// 429 with the largest Retry-After there is.
    RetryForever,
    /// A 200 whose body never ends (2 GiB of spaces, no Content-Length).
    EndlessBody,
    /// A 200 that announces a 2 GiB body.
    HugeLength,
    /// A 307 to another loopback port, over plain http.
    Redirect(u16),
    /// The answer's head one byte every half second (slowloris, the other way round).
    Slow,
    /// 5,000 header lines.
    ManyHeaders,
    /// A 200 whose body is 200 MB of zeros gzip-compressed (about 200 KB), labelled
    /// `Content-Encoding: gzip`.
    GzipBomb,
}

/// 200 MB of zeros, gzip-compressed by the system's gzip, made once.
fn gzip_bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        let out = std::process::Command::new("sh")
            .args(["-c", "head -c 200000000 /dev/zero | gzip -c"])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() < 1 << 20);
        out.stdout
    })
}

/// A fake API on loopback that answers every request the same hostile way, and counts them.
struct FakeApi {
    url: String,
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    async fn start(how: Option<Hostile>) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // The request head, then whatever body it announced; bounded.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65_536 {
                        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let head = match how {
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                        Some(Hostile::RetryForever) => "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 18446744073709551615\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                        Some(Hostile::EndlessBody) => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_string(),
                        Some(Hostile::GzipBomb) => format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", gzip_bomb().len()),
                        Some(Hostile::HugeLength) => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\nConnection: close\r\n\r\n".to_string(),
                        Some(Hostile::Slow) => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string(),
                        Some(Hostile::ManyHeaders) => String::new(),
                        Some(Hostile::Redirect(to)) => format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{to}/v1/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                    };
                    match how {
                        Some(Hostile::Slow) => {
                            for b in head.as_bytes() {
                                if s.write_all(&[*b]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            return;
                        }
                        Some(Hostile::ManyHeaders) => {
                            let mut many = String::from("HTTP/1.1 200 OK\r\n");
                            for i in 0..5000 {
                                many.push_str(&format!("X-Filler-{i}: {}\r\n", "x".repeat(20)));
                            }
                            many.push_str("Content-Length: 2\r\n\r\n{}");
                            let _ = s.write_all(many.as_bytes()).await;
                            return;
                        }
                        _ => {}
                    }
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    if how == Some(Hostile::GzipBomb) {
                        let _ = s.write_all(gzip_bomb()).await;
                        return;
                    }
                    if matches!(how, Some(Hostile::EndlessBody | Hostile::HugeLength)) {
                        let spaces = vec![b' '; 65_536];
                        for _ in 0..32_768 {
                            if s.write_all(&spaces).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/v1"),
            port,
            hits,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Points the test config at `url` instead of the simulator.
fn use_api(env: &TestEnv, url: &str) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(env.config_path(), text.replace(&env.sim.api_url, url)).unwrap();
}

/// `run --once` of one certificate against a fake API answering `how`: its output and how long it
/// took. The test directory stays for the caller to look into.
async fn once_against(env: &TestEnv, how: Hostile) -> (std::process::Output, Duration) {
    let api = FakeApi::start(Some(how)).await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    use_api(env, &api.url);
    let started = Instant::now();
    let out = env.run(&["run", "--once"], &[]).await;
    (out, started.elapsed())
}

/// `Retry-After: 18446744073709551615` used to panic the run (no failure recorded), and a large
/// one froze it for centuries holding the lock. Now it is capped: the run ends, the failure is
/// recorded, and the schedule waits at most the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_centuries_neither_panics_nor_holds_the_run() {
    let env = TestEnv::start("hostile-retry").await;
    let (out, took) = once_against(&env, Hostile::RetryForever).await;
    assert!(took < Duration::from_secs(30), "the run took {took:?}");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.dir.join("state/certs/www.example.com.json")).unwrap()).unwrap();
    let retry_after = state["retry_after"].as_i64().expect("the Retry-After is recorded");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        retry_after > now && retry_after <= now + 3600,
        "Retry-After recorded as {retry_after}, now {now}"
    );
    assert_eq!(state["failures"], 1, "{state}");
}

/// A 2 GB answer took 5.2 GB of memory. Bodies are read to 4 MiB and no further, whether the
/// answer announces its length or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_the_bound_is_refused_as_it_arrives() {
    for how in [Hostile::EndlessBody, Hostile::HugeLength] {
        let env = TestEnv::start("hostile-body").await;
        let (out, took) = once_against(&env, how).await;
        assert!(took < Duration::from_secs(60), "the run took {took:?}");
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains("larger than 4 MiB"), "{}", stderr(&out));
    }
}

/// Kept tested: a gzip bomb is not inflated (certkeeper asks for no compression and decodes
/// none): 200 KB arrive, are unreadable as JSON, and the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_not_inflated() {
    let env = TestEnv::start("hostile-gzip").await;
    let (out, took) = once_against(&env, Hostile::GzipBomb).await;
    assert!(took < Duration::from_secs(60), "the run took {took:?}");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not be read"), "{}", stderr(&out));
}

/// Redirects used to be followed, https to http, resending the credentials (and, on 307/308, a
/// paid body) to wherever they pointed. The API is called at its configured URL or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed() {
    let env = TestEnv::start("hostile-redirect").await;
    let elsewhere = FakeApi::start(None).await;
    let api = FakeApi::start(Some(Hostile::Redirect(elsewhere.port))).await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    use_api(&env, &api.url);
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(api.hits() >= 1);
    assert_eq!(elsewhere.hits(), 0, "the redirect was followed:\n{}", stderr(&out));
}

/// What held when certkeeper was attacked, kept tested: an answer that trickles in, or comes with
/// 5,000 headers, ends the attempt within the configured timeout (3 s in the test config) and
/// its retries; nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_answer_or_thousands_of_headers_end_the_attempt_in_bounded_time() {
    for how in [Hostile::Slow, Hostile::ManyHeaders] {
        let env = TestEnv::start("hostile-slow").await;
        let (out, took) = once_against(&env, how).await;
        assert!(took < Duration::from_secs(90), "the run took {took:?}");
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    }
}

/// Kept tested: the API is reached over TLS only with a server certificate certkeeper can
/// verify; the simulator's own root, not configured as `ca_file`, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_certkeeper_cannot_verify_is_refused() {
    let env = TestEnv::start("hostile-tls").await;
    assert!(env.sim.api_url.starts_with("https://"), "{}", env.sim.api_url);
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(env.config_path(), text.replace("ca_file = \"root.pem\"\n", "")).unwrap();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        env.sim.control().requests().is_empty(),
        "a request reached the API over an unverified connection"
    );
    assert_eq!(env.paid("www.example.com"), 0);
}

/// Kept tested: the API password and the private key appear in no log line (even at trace
/// level), no status output, no hook's environment and no hook's argv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_log_status_hook_environment_or_argv() {
    let env = TestEnv::start("hostile-secrets").await;
    let name = "www.example.com";
    let seen = env.dir.join("hook.seen");
    let reload = env.script(
        "reload.sh",
        &format!(
            "{{ env; echo ---; cat /proc/$$/cmdline | tr '\\0' ' '; echo; }} >> {}",
            seen.display()
        ),
    );
    env.write_config(&[Cert::hook(name)], &format!("reload = [\"{}\"]", reload.display()));
    let out = env.run(&["run", "--once"], &[("CERTKEEPER_LOG", "trace")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let key = std::fs::read_to_string(env.live(name).join("privkey.pem")).unwrap();
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let status = env.run_ok(&["status", "--json"]).await;
    let places = [
        ("the trace log", stderr(&out) + &String::from_utf8_lossy(&out.stdout)),
        ("status", String::from_utf8_lossy(&status.stdout).into_owned()),
        (
            "the reload hook's environment and argv",
            std::fs::read_to_string(&seen).unwrap(),
        ),
    ];
    for (place, text) in &places {
        assert!(!text.contains("demo-password"), "the API password is in {place}");
        assert!(!text.contains(&key_body[..40]), "the private key is in {place}");
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(line), "a line of the private key is in {place}");
        }
    }
    assert!(
        places[0].1.contains("TRACE") || places[0].1.contains("DEBUG"),
        "no trace output to search"
    );
}

/// Kept tested: a server whose certificate names another host is refused, though its CA is
/// trusted (`ca_file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_with_a_certificate_for_another_host_is_refused() {
    let env = TestEnv::start_sim(
        "hostile-wrong-host",
        autodns_sim::SimConfig {
            tls_wrong_host: Some("api.example.net".into()),
            faults: Faults {
                rate_limit: 0.0,
                ..Faults::default()
            },
            ..autodns_sim::SimConfig::default()
        },
    )
    .await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        env.sim.control().requests().is_empty(),
        "a request reached a server that answers for another host"
    );
}

/// Kept tested: ids and serials from the API never become paths. After an issue and a reissue,
/// every name under the state and live directories is one certkeeper makes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_is_made_from_what_the_api_sends() {
    let env = TestEnv::start("hostile-paths").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    env.run_ok(&["run", "--once"]).await;
    env.run_ok(&["--renew-now", name]).await;
    let serial = env.serial(name).trim_start_matches("serial=").to_ascii_lowercase();
    let allowed = |n: &str| {
        [
            "state",
            "certs",
            "live",
            ".generations",
            "lock",
            "contacts.json",
            name,
            &format!("{name}.json"),
            "cert.pem",
            "chain.pem",
            "fullchain.pem",
            "privkey.pem",
        ]
        .contains(&n)
            || (n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut stack = vec![env.dir.join("state"), env.dir.join("live")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let n = entry.file_name().into_string().unwrap();
            assert!(allowed(&n), "{} is not a name certkeeper makes", entry.path().display());
            assert!(!n.to_ascii_lowercase().contains(&serial), "{n} holds the serial");
            seen += 1;
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert!(seen >= 12, "only {seen} entries");
}
