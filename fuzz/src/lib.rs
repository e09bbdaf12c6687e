//! The oracles of certkeeper's fuzzing, shared by the cargo-fuzz targets in `fuzz_targets/` (the
//! long runs) and the property tests in `tests/it/fuzz.rs` (the short run in CI). Each one takes
//! untrusted input the way certkeeper gets it, must never panic, and checks what certkeeper does
//! with what it accepts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use certkeeper::api::wire::{self, Certificate, CertificateData, Envelope, Job, ObjectJob, PollMessage};
use certkeeper::api::{Client, Error, MAX_RETRY_AFTER};
use certkeeper::config::{self, Config, MAX_DURATION, RenewBefore};
use certkeeper::dns::{self, DcvRecord};
use certkeeper::store::{CertState, Store};
use certkeeper::x509;
use reqwest::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The certificate names that DCV lines are held against.
pub fn names() -> Vec<String> {
    ["www.example.com", "example.com", "*.example.org"]
        .map(String::from)
        .to_vec()
}

/// Whether an error message could forge a log line or reach a terminal as a control sequence.
fn assert_printable(message: &str) {
    assert!(
        !message.chars().any(char::is_control),
        "a control character in the message {message:?}"
    );
}

// ----- 1. the DCV line --------------------------------------------------------------------------

/// A DCV line from prepareOrder: read strictly; whatever is accepted is one clean record whose
/// canonical line reads back as the same record.
pub fn dcv_line(line: &str) {
    let names = names();
    let parsed = dns::parse_zone_line(line);
    let read = dns::read_dcv_line(line, &names);
    match (&parsed, &read) {
        (Ok(p), Ok(r)) => assert_eq!(p, r),
        (Err(_), Ok(r)) => panic!("read_dcv_line accepted what parse_zone_line refused: {r:?}"),
        (_, Err(e)) => assert_printable(&e.to_string()),
    }
    if let Ok(record) = parsed {
        assert_eq!(record.zone_line, line);
        assert!(
            !line.contains(['\n', '\r', '\0']),
            "a line break or NUL in an accepted line"
        );
        assert!(
            !line.trim_start().starts_with('$'),
            "a directive was accepted: {line:?}"
        );
        assert_clean(&record);
        assert_eq!(
            record.check(&names).is_ok(),
            read.is_ok(),
            "check() and read_dcv_line disagree"
        );
    }
}

/// What a DNS hook may be handed: a lower-case host name with its trailing dot, TXT or CNAME, a
/// value with no quote, backslash, space or control character, and a canonical line that reads
/// back as the same record.
pub fn assert_clean(r: &DcvRecord) {
    let host = |s: &str| {
        s.len() >= 2
            && s.len() <= 254
            && s.ends_with('.')
            && !s.starts_with('.')
            && !s.contains("..")
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    };
    assert!(host(&r.name), "the owner {:?} of {r:?}", r.name);
    match r.kind.as_str() {
        "TXT" => assert!((1..=dns::MAX_VALUE).contains(&r.value.len()), "{r:?}"),
        "CNAME" => assert!(host(&r.value), "the CNAME target of {r:?}"),
        other => panic!("the type {other:?} was accepted"),
    }
    assert!(
        r.value
            .chars()
            .all(|c| c.is_ascii_graphic() && !"\"'\\;()$`".contains(c)),
        "the value {:?} of {r:?}",
        r.value
    );
    let line = r.canonical_line();
    let again = dns::parse_zone_line(&line)
        .unwrap_or_else(|e| panic!("the canonical line {line:?} of {r:?} does not read back: {e}"));
    assert_eq!(
        (&again.name, &again.kind, &again.value, again.ttl),
        (&r.name, &r.kind, &r.value, r.ttl),
        "the canonical line {line:?} reads back as another record"
    );
    assert_eq!(again.canonical_line(), line);
}

// ----- 2. the API's JSON answers ----------------------------------------------------------------

/// One HTTP answer: classified by [`Client::check`], then read the way each request reads it.
pub fn api_answer(status: u16, retry_after: Option<u64>, body: &[u8]) {
    let Ok(status) = StatusCode::from_u16(status) else {
        return;
    };
    let retry_after = retry_after.map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    match Client::check(status, retry_after, body) {
        Ok(env) => {
            assert!(status.is_success(), "HTTP {status} became a success");
            assert!(
                matches!(env.status.kind.as_str(), "SUCCESS" | "NOTIFY"),
                "{:?}",
                env.status
            );
            typed_data(&env);
        }
        Err(e) => {
            let _ = (e.to_string(), e.is_retryable(), e.is_not_found());
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
                assert_eq!(e.retry_after(), retry_after);
            } else {
                assert_eq!(e.retry_after(), None);
            }
            // A failing server or an answer that is not the envelope never proves that a paid
            // request was not made.
            if status.is_server_error() || serde_json::from_slice::<Envelope>(body).is_err() {
                assert!(
                    e.outcome_unknown() || status == StatusCode::TOO_MANY_REQUESTS,
                    "HTTP {status}: {e:?}"
                );
            }
        }
    }
}

/// Reads the envelope's data as every request does: prepareOrder's lines, a contact's or job's
/// id, certificates, jobs and poll messages.
fn typed_data(env: &Envelope) {
    if let Ok(data) = Client::first::<CertificateData>(env, "CertificateData") {
        for a in &data.authentication {
            if a.method.as_deref() == Some("DNS")
                && let Some(line) = &a.dns
            {
                dcv_line(line);
            }
        }
    }
    if let Ok(v) = Client::first::<Value>(env, "job") {
        let _ = v.get("id").and_then(Value::as_i64);
    }
    if let Ok(c) = Client::first::<Certificate>(env, "Certificate") {
        certificate(&c);
    }
    for c in Client::all::<Certificate>(env, "Certificate").into_iter().flatten() {
        certificate(&c);
    }
    if let Ok(j) = Client::first::<ObjectJob>(env, "ObjectJob") {
        object_job(&j);
    }
    for j in Client::all::<ObjectJob>(env, "ObjectJob").into_iter().flatten() {
        object_job(&j);
    }
    if let Ok(m) = Client::first::<PollMessage>(env, "PollMessage") {
        let _ = wire::object_certificate_id(&m.object);
        if let Some(job) = &m.job {
            self::job(job);
        }
    }
    if let Err(e) = Client::all::<Job>(env, "Job") {
        let _ = e.to_string();
    }
}

fn time(s: &Option<String>) {
    if let Some(t) = s.as_deref().and_then(wire::parse_time) {
        let _ = t.unix_timestamp();
    }
}

fn certificate(c: &Certificate) {
    time(&c.expire);
    time(&c.payable);
    time(&c.created);
    for ca in &c.certification_authority {
        if let Some(pem) = &ca.ca_certificate {
            let _ = x509::info(pem);
        }
    }
}

fn job(j: &Job) {
    time(&j.created);
    let _ = j.events.iter().filter_map(|e| e.ctid.as_deref()).count();
}

fn object_job(j: &ObjectJob) {
    job(&j.job);
    let _ = wire::object_certificate_id(&j.object);
}

// ----- 3. PEM and X.509 deliveries --------------------------------------------------------------

/// A delivery as PEM text: the first certificate is the leaf, the rest the chain as listed. The
/// leaf is verified against its own key and names at its own start of validity, so that what
/// decides is the chain.
pub fn x509_bundle(text: &str) {
    let _ = x509::info(text).map(|i| assert_info(&i));
    let blocks = pem_blocks(text);
    let Some((leaf, chain)) = blocks.split_first() else {
        return;
    };
    let info = match x509::info(leaf) {
        Ok(info) => info,
        Err(e) => {
            let _ = e.to_string();
            let none = x509::TrustAnchors::load(None, None);
            let verified = x509::verify(leaf, chain, &[], &[], OffsetDateTime::now_utc(), &none);
            assert!(
                matches!(verified, Err(x509::VerifyError::Unreadable(_))),
                "{verified:?}"
            );
            return;
        }
    };
    assert_info(&info);
    let spki = leaf_spki(leaf).unwrap_or_default();
    let wanted: Vec<String> = info.names.iter().take(4).cloned().collect();
    // The delivery's own last certificate is trusted, so that the chain is what decides.
    let anchors = x509::TrustAnchors::load(chain.last().map(String::as_str), None);
    match x509::verify(leaf, chain, &spki, &wanted, info.not_before, &anchors) {
        Ok(got) => {
            assert_eq!(got.info, info);
            assert_eq!(
                x509::info(&got.leaf_pem).ok(),
                Some(info.clone()),
                "the re-encoded leaf differs"
            );
            assert!(info.not_before < info.not_after);
            assert!(chain.len() >= 2, "a chain without an intermediate was accepted");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let other = "not-a-name.example.invalid".to_string();
    let missing = x509::verify(
        leaf,
        chain,
        &spki,
        std::slice::from_ref(&other),
        info.not_before,
        &anchors,
    );
    assert!(missing.is_err(), "{other} was covered: {missing:?}");
    let late = x509::verify(leaf, chain, &spki, &wanted, info.not_after, &anchors);
    assert!(late.is_err(), "accepted at its own expiry: {late:?}");
}

/// The same for DER bytes: armoured as one certificate.
pub fn x509_der(der: &[u8]) {
    x509_bundle(&pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())));
}

fn assert_info(i: &x509::CertInfo) {
    assert!(
        i.serial
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
        "the serial {:?}",
        i.serial
    );
    assert!(
        i.serial.len().is_multiple_of(2) && !i.serial.starts_with("00"),
        "the serial {:?}",
        i.serial
    );
    for n in &i.names {
        assert_eq!(*n, n.to_ascii_lowercase());
    }
}

/// Splits PEM text after each END line.
pub fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find("-----END ") {
        let after = rest[end..].find('\n').map(|p| end + p + 1).unwrap_or(rest.len());
        out.push(rest[..after].to_string());
        rest = &rest[after..];
    }
    if !rest.trim().is_empty() {
        out.push(rest.to_string());
    }
    out.truncate(8);
    out
}

/// The SubjectPublicKeyInfo of a PEM certificate.
pub fn leaf_spki(pem_text: &str) -> Option<Vec<u8>> {
    let p = pem::parse(pem_text.trim()).ok()?;
    let (_, cert) = X509Certificate::from_der(p.contents()).ok()?;
    Some(cert.public_key().raw.to_vec())
}

// ----- 4. the TOML configuration ----------------------------------------------------------------

/// A directory for [`config_text`]: a password file that only its owner reads, one that others
/// read, and a CA file.
pub fn config_dir(tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("certkeeper-fuzz-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, mode, text) in [
        ("pw", 0o600, "secret\n"),
        ("pw-open", 0o644, "secret\n"),
        ("pw-empty", 0o600, "\n"),
        (
            "ca.pem",
            0o644,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        ),
        ("not-a-ca.pem", 0o644, "hello\n"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// Whether the files the text names stay inside the configuration's directory: the reader opens
/// `api.password_file` and `api.ca_file`, and a fuzzer must not open `/dev/stdin` or `/dev/zero`
/// through them.
fn files_stay_local(text: &str) -> bool {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return true;
    };
    let Some(api) = table.get("api").and_then(toml::Value::as_table) else {
        return true;
    };
    ["password_file", "ca_file"].iter().all(|k| match api.get(*k) {
        None => true,
        Some(toml::Value::String(s)) => {
            !s.is_empty() && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }
        Some(_) => true,
    })
}

/// Configuration text, read from `dir/certkeeper.toml`: every error is located and printable,
/// and an accepted configuration holds only values certkeeper can work with.
pub fn config_text(text: &str, dir: &Path, password_env: bool) {
    if !files_stay_local(text) {
        return;
    }
    let path = dir.join("certkeeper.toml");
    let env = move |k: &str| (password_env && k == config::PASSWORD_ENV).then(|| "secret".to_string());
    match config::parse(text, &path, &env) {
        Ok(cfg) => assert_config(&cfg),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without an error");
            let lines = text.split('\n').count();
            for e in &errors.0 {
                assert!(!e.field.is_empty(), "{e:?}");
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {e:?}");
                }
            }
            let _ = errors.to_string();
        }
    }
}

fn assert_config(cfg: &Config) {
    let duration = |d: Duration, what: &str| assert!(!d.is_zero() && d <= MAX_DURATION, "{what} = {d:?}");
    let api = &cfg.api;
    assert!(config::check_api_url(&api.url).is_ok(), "{}", api.url);
    assert!(api.context >= 1 && !api.user.is_empty() && !api.password.expose().is_empty());
    assert!(api.rate_limit.is_finite() && api.rate_limit > 0.0);
    duration(api.timeout, "api.timeout");
    assert!((2..=100).contains(&cfg.store.keep_generations));
    assert_ne!(cfg.store.state_dir, cfg.store.live_dir);
    assert!(cfg.dns.nameserver_port > 0);
    duration(cfg.dns.propagation_timeout, "dns.propagation_timeout");
    duration(cfg.dns.check_interval, "dns.check_interval");
    let o = &cfg.order;
    for (d, what) in [
        (o.job_timeout, "order.job_timeout"),
        (o.poll_interval, "order.poll_interval"),
        (o.poll_interval_max, "order.poll_interval_max"),
        (o.reconcile_grace, "order.reconcile_grace"),
        (cfg.daemon.term_warning, "daemon.term_warning"),
    ] {
        duration(d, what);
    }
    assert!((1..=256).contains(&o.concurrency));
    assert!(!cfg.daemon.retry_backoff.is_empty());
    for d in &cfg.daemon.retry_backoff {
        duration(*d, "daemon.retry_backoff");
    }
    assert!((0.0..=0.5).contains(&cfg.daemon.jitter));
    let mut seen = std::collections::HashSet::new();
    for c in &cfg.certificates {
        assert!(seen.insert(c.name.clone()), "{} twice", c.name);
        for n in c.all_names() {
            assert!(config::is_hostname(&n), "{n:?}");
        }
        assert!(!c.alt_names.contains(&c.name));
        assert!(matches!(c.lifetime_months, 12 | 24));
        assert!((1..=10).contains(&c.max_paid_orders));
        duration(c.hook_timeout, "hook_timeout");
        match c.renew_before {
            RenewBefore::Share(s) => assert!(s > 0.0 && s < 1.0, "{s}"),
            RenewBefore::Before(d) => assert!(d <= MAX_DURATION, "{d:?}"),
        }
        if c.dns == config::DnsMode::Hook {
            assert!(!c.dns_hook.is_empty());
        }
        for argv in [&c.dns_hook, &c.reload] {
            assert!(argv.iter().all(|a| !a.contains('\0')));
        }
    }
}

// ----- 5. the state files -----------------------------------------------------------------------

/// A store in a directory of its own, for [`state_bytes`].
pub fn state_store(tag: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("certkeeper-fuzz-{tag}-{}", std::process::id()));
    let store = Store::new(&dir.join("state"), &dir.join("live"), 3);
    store.prepare().unwrap();
    store
}

/// The name whose state file [`state_bytes`] writes.
pub const STATE_NAME: &str = "www.example.com";

/// A state file's bytes: read directly and through [`Store::load`] alike; an accepted state
/// saves and loads back unchanged, and a journal record that passes its check is clean.
pub fn state_bytes(bytes: &[u8], store: &Store) {
    let direct = serde_json::from_slice::<CertState>(bytes);
    let path = store.state_dir.join("certs").join(format!("{STATE_NAME}.json"));
    std::fs::write(&path, bytes).unwrap();
    let loaded = store.load(STATE_NAME);
    match (&direct, &loaded) {
        (Ok(_), Ok(_)) => {}
        // A state from a newer certkeeper is refused, and left as it is.
        (Ok(st), Err(e)) if st.version > certkeeper::store::STATE_VERSION => {
            assert!(e.to_string().contains("newer certkeeper"), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "a newer state file was changed");
            return;
        }
        (Err(_), Err(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            let _ = e.to_string();
        }
        _ => panic!("serde_json and Store::load disagree: {direct:?} / {loaded:?}"),
    }
    let (Ok(state), Ok(loaded)) = (direct, loaded) else {
        return;
    };
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(serde_json::to_value(&loaded).unwrap(), json);
    let back: CertState = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        json,
        "the state does not read back"
    );
    if let Some(order) = &state.order {
        for r in &order.records {
            // A record that passes its check is clean: what reaches the hook was read.
            if r.check(&names()).is_ok() {
                assert_clean(r);
            }
        }
    }
    let mut saved = state;
    saved.name = STATE_NAME.into();
    store.save(&saved).unwrap();
    let again = store.load(STATE_NAME).unwrap();
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&saved).unwrap(),
        "a saved state loads back changed"
    );
}
