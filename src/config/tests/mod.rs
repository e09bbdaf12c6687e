//! Tests of the configuration: what a good file gives, and that every kind of mistake is
//! reported with its file, line and field.

use super::*;

pub(super) const GOOD: &str = r#"
[api]
url = "https://api.autodns.com/v1"
user = "user"
context = 4

[store]
state_dir = "/var/lib/certkeeper"
live_dir = "/etc/certkeeper/live"

[defaults]
product = "QUICKSSLPREMIUM"
admin_contact = 100
technical_contact = 100
reload = ["systemctl", "reload", "nginx"]

[[certificate]]
name = "www.example.com"
alt_names = ["example.com"]
"#;

pub(super) fn env(key: &str) -> Option<String> {
    (key == PASSWORD_ENV).then(|| "secret".to_string())
}

/// Parses `text` as certkeeper does, and checks that reading it as a whole on one thread gives
/// the same configuration or the same errors, line for line, and so does reading it in pieces
/// on one thread: every test of the configuration is also a test of each way of reading it.
#[track_caller]
pub(super) fn parse_text(text: &str) -> Result<Config, ConfigErrors> {
    let path = Path::new("/etc/certkeeper/certkeeper.toml");
    let got = parse(text, path, &env);
    let whole = parse_as(text, path, &env, Reading::Whole, Threads::One);
    assert_eq!(
        format!("{got:?}"),
        format!("{whole:?}"),
        "read in pieces and as a whole"
    );
    let one = parse_as(text, path, &env, Reading::InPieces, Threads::One);
    assert_eq!(format!("{got:?}"), format!("{one:?}"), "on every CPU and on one");
    got
}

/// Parses `text`, expects exactly one error, and checks its field and line.
#[track_caller]
pub(super) fn check_error(text: &str, field: &str, line: usize, words: &str) {
    let errors = match parse_text(text) {
        Ok(_) => panic!("expected an error about {field}"),
        Err(e) => e.0,
    };
    let e = errors
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error for {field} in {errors:?}"));
    assert_eq!(e.line, Some(line), "line of {e}");
    assert!(
        e.message.contains(words),
        "message '{}' should contain '{words}'",
        e.message
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("/etc/certkeeper/certkeeper.toml:{line}: {field}: ")),
        "{shown}"
    );
}

pub(super) fn replace(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn the_good_config_parses_with_defaults_applied() {
    let c = parse_text(GOOD).unwrap();
    assert_eq!(c.api.context, 4);
    assert_eq!(c.api.password.expose(), "secret");
    assert_eq!(format!("{:?}", c.api.password), "Secret(..)");
    let cert = &c.certificates[0];
    assert_eq!(cert.all_names(), ["www.example.com", "example.com"]);
    assert_eq!(cert.key, KeyKind::EcdsaP256);
    assert_eq!(cert.dns, DnsMode::Autodns);
    assert_eq!(cert.renew_before, RenewBefore::Share(1.0 / 3.0));
    assert_eq!(cert.max_paid_orders, 1);
    assert_eq!(c.store.keep_generations, 3);
}

#[test]
fn the_shipped_example_config_parses() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("certkeeper-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("api-password");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = include_str!("../../../examples/certkeeper.toml")
        .replace("/etc/certkeeper/api-password", &pw.to_string_lossy());
    let c = parse(&text, Path::new("examples/certkeeper.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!c.certificates.is_empty());
    // Nothing in it is without effect; only programs this machine may lack are warned of.
    let kinds: Vec<WarningKind> = c.warnings.iter().map(|w| w.kind).collect();
    assert!(kinds.iter().all(|k| *k == WarningKind::Program), "{:?}", c.warnings);
    let hook = &c.certificates.iter().find(|c| c.dns == DnsMode::Hook).unwrap().dns_hook;
    assert_eq!(hook.len(), 3, "dns-rfc2136 takes SERVER and KEYFILE: {hook:?}");
}

#[test]
fn per_certificate_values_override_defaults() {
    let text = format!("{GOOD}key = \"rsa-3072\"\nproduct = \"SSL123\"\nrenew_before = \"30d\"\n");
    let cert = &parse_text(&text).unwrap().certificates[0];
    assert_eq!(cert.key, KeyKind::Rsa3072);
    assert_eq!(cert.product, "SSL123");
    assert_eq!(cert.renew_before, RenewBefore::Before(Duration::from_secs(30 * 86400)));
}

#[test]
fn an_unknown_key_is_refused_with_its_line() {
    check_error(
        &replace("user = \"user\"", "user = \"user\"\ncolour = \"blue\""),
        "colour",
        5,
        "unknown field",
    );
}

#[test]
fn an_unknown_key_in_a_certificate_is_refused() {
    check_error(&format!("{GOOD}lifetime = 12\n"), "lifetime", 20, "unknown field");
}

#[test]
fn a_syntax_error_gives_its_line() {
    let e = parse_text(&replace("context = 4", "context = = 4")).unwrap_err().0;
    assert_eq!(e[0].line, Some(5), "{e:?}");
}

#[test]
fn a_wrong_type_is_refused() {
    check_error(
        &replace("context = 4", "context = \"four\""),
        "context",
        5,
        "expected i64",
    );
}

#[test]
fn a_missing_section_is_refused() {
    let text = GOOD.replace(
        "[store]\nstate_dir = \"/var/lib/certkeeper\"\nlive_dir = \"/etc/certkeeper/live\"\n",
        "",
    );
    let e = parse_text(&text).unwrap_err().0;
    assert!(e[0].message.contains("store"), "{e:?}");
}

#[test]
fn a_plain_http_url_off_loopback_is_refused() {
    check_error(
        &replace("https://api.autodns.com/v1", "http://api.autodns.com/v1"),
        "api.url",
        3,
        "https",
    );
}

#[test]
fn the_loopback_rule_looks_at_the_parsed_host_not_a_prefix() {
    for ok in [
        "https://api.autodns.com/v1",
        "https://api.demo.autodns.com/v1",
        "http://127.0.0.1:8443/v1",
        "http://127.0.0.5/v1",
        "http://[::1]:8080/v1",
        "http://localhost:8080/v1",
        "http://LOCALHOST/v1",
    ] {
        assert!(check_api_url(ok).is_ok(), "{ok}");
    }
    // Each of these used to pass as "loopback" and sent the password in clear to another host.
    for bad in [
        "http://127.0.0.1@api.example.com/v1",
        "http://127.0.0.1:80@api.example.com/v1",
        "http://127.0.0.1.example.com/v1",
        "http://localhost.example.com/v1",
        "http://localhost@api.example.com/v1",
        "http://[::1]@api.example.com/v1",
        "http://api.autodns.com/v1",
        "https://demo:secret@api.autodns.com/v1",
        "ftp://127.0.0.1/v1",
        "api.autodns.com/v1",
    ] {
        assert!(check_api_url(bad).is_err(), "{bad}");
    }
    check_error(
        &replace("https://api.autodns.com/v1", "http://127.0.0.1@api.autodns.com/v1"),
        "api.url",
        3,
        "user name",
    );
}

#[test]
fn an_empty_user_is_refused() {
    check_error(&replace("user = \"user\"", "user = \"\""), "api.user", 4, "empty");
}

#[test]
fn a_zero_context_is_refused() {
    check_error(&replace("context = 4", "context = 0"), "api.context", 5, "positive");
}

#[test]
fn a_missing_password_is_refused() {
    let e = parse(GOOD, Path::new("c.toml"), &|_| None).unwrap_err().0;
    assert!(
        e.iter()
            .any(|e| e.field == "api.password_file" && e.message.contains(PASSWORD_ENV)),
        "{e:?}"
    );
}

#[test]
fn a_world_readable_password_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("certkeeper-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = replace(
        "context = 4",
        &format!("context = 4\npassword_file = \"{}\"", pw.display()),
    );
    let e = parse(&text, Path::new("c.toml"), &|_| None).unwrap_err().0;
    assert!(
        e.iter()
            .any(|e| e.field == "api.password_file" && e.message.contains("chmod 600") && e.line == Some(6)),
        "{e:?}"
    );
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = parse(&text, Path::new("c.toml"), &|_| None).unwrap();
    assert_eq!(c.api.password.expose(), "secret");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreadable_ca_file_is_refused() {
    check_error(
        &replace("context = 4", "context = 4\nca_file = \"/nonexistent/root.pem\""),
        "api.ca_file",
        6,
        "cannot read",
    );
}

#[test]
fn a_bad_timeout_is_refused() {
    check_error(
        &replace("context = 4", "context = 4\ntimeout = \"soon\""),
        "api.timeout",
        6,
        "duration",
    );
}

#[test]
fn the_same_state_and_live_dir_are_refused() {
    check_error(
        &replace("/etc/certkeeper/live", "/var/lib/certkeeper"),
        "store.live_dir",
        9,
        "differ",
    );
}

#[test]
fn an_unknown_product_is_refused() {
    check_error(
        &replace("\"QUICKSSLPREMIUM\"", "\"FREESSL\""),
        "defaults.product",
        12,
        "unknown product",
    );
}

#[test]
fn a_bad_host_name_is_refused() {
    check_error(
        &replace("\"www.example.com\"", "\"www example com\""),
        "certificate[0].name",
        18,
        "host name",
    );
}

#[test]
fn a_bad_alt_name_is_refused() {
    check_error(
        &replace("[\"example.com\"]", "[\"*.example.com\"]"),
        "certificate[0].alt_names",
        19,
        "host name",
    );
}

#[test]
fn a_certificate_without_a_name_is_refused() {
    check_error(
        &replace("name = \"www.example.com\"\n", ""),
        "certificate[0].name",
        17,
        "needs a name",
    );
}

#[test]
fn the_same_name_twice_is_refused() {
    let text = format!("{GOOD}\n[[certificate]]\nname = \"www.example.com\"\n");
    check_error(&text, "certificate[1].name", 21, "twice");
}

#[test]
fn an_unknown_key_type_is_refused() {
    check_error(
        &format!("{GOOD}key = \"dsa-1024\"\n"),
        "certificate[0].key",
        20,
        "unknown key type",
    );
}

#[test]
fn a_bad_lifetime_is_refused() {
    check_error(
        &format!("{GOOD}lifetime_months = 36\n"),
        "certificate[0].lifetime_months",
        20,
        "12 or 24",
    );
}

#[test]
fn an_unknown_dns_mode_is_refused() {
    check_error(
        &format!("{GOOD}dns = \"manual\"\n"),
        "certificate[0].dns",
        20,
        "autodns",
    );
}

#[test]
fn hook_mode_without_a_hook_is_refused() {
    check_error(
        &format!("{GOOD}dns = \"hook\"\n"),
        "certificate[0].dns_hook",
        17,
        "needs a dns_hook",
    );
}

#[test]
fn an_empty_reload_command_is_refused() {
    check_error(
        &replace("[\"systemctl\", \"reload\", \"nginx\"]", "[\"\"]"),
        "defaults.reload",
        15,
        "program name is empty",
    );
}

#[test]
fn a_bad_renew_before_is_refused() {
    check_error(
        &format!("{GOOD}renew_before = \"120%\"\n"),
        "certificate[0].renew_before",
        20,
        "between",
    );
}

#[test]
fn a_missing_contact_is_refused() {
    check_error(
        &replace("admin_contact = 100\n", ""),
        "certificate[0].admin_contact",
        16,
        "no admin_contact",
    );
}

#[test]
fn a_negative_contact_id_is_refused() {
    check_error(
        &replace("technical_contact = 100", "technical_contact = -5"),
        "defaults.technical_contact",
        14,
        "positive",
    );
}

#[test]
fn incomplete_contact_details_are_refused() {
    let e = parse_text(&replace("admin_contact = 100", "admin_contact = { fname = \"Jo\" }"))
        .unwrap_err()
        .0;
    assert_eq!(e[0].line, Some(13), "{e:?}");
}

#[test]
fn a_name_in_defaults_is_refused() {
    check_error(
        &replace("product = \"QUICKSSLPREMIUM\"", "name = \"x.example.com\""),
        "defaults.name",
        12,
        "[[certificate]]",
    );
}

#[test]
fn a_bad_paid_order_cap_is_refused() {
    check_error(
        &format!("{GOOD}max_paid_orders = 0\n"),
        "certificate[0].max_paid_orders",
        20,
        "between 1 and 10",
    );
}

#[test]
fn a_bad_nameserver_address_is_refused() {
    check_error(
        &format!("{GOOD}\n[dns]\nnameservers = [\"ns1.example.com\"]\n"),
        "dns.nameservers",
        22,
        "not an address",
    );
}

#[test]
fn a_bad_concurrency_is_refused() {
    check_error(
        &format!("{GOOD}\n[order]\nconcurrency = 0\n"),
        "order.concurrency",
        22,
        "between 1 and 256",
    );
}

#[test]
fn several_errors_are_all_reported() {
    let text = format!("{GOOD}key = \"dsa\"\ndns = \"manual\"\n").replace("context = 4", "context = 0");
    let e = parse_text(&text).unwrap_err().0;
    assert!(e.len() >= 3, "{e:?}");
}

/// The TOML reader stopped at the first wrong type or unknown key: a file with three mistakes
/// took three rounds of `check`. Every one is reported at once, in the order of the file.
#[test]
fn every_wrong_type_and_unknown_key_is_reported_at_once_in_file_order() {
    let text = replace("context = 4", "context = \"four\"")
        .replace(
            "live_dir = \"/etc/certkeeper/live\"",
            "live_dir = \"/etc/certkeeper/live\"\nkeep = 3",
        )
        .replace("alt_names = [\"example.com\"]", "alt_names = \"example.com\"");
    let e = parse_text(&text).unwrap_err().0;
    let found: Vec<(Option<usize>, &str)> = e.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        found,
        [(Some(5), "context"), (Some(10), "keep"), (Some(20), "alt_names")],
        "{e:?}"
    );
    // A required key with a wrong type is one mistake, not also a missing key.
    let e = parse_text(&replace("user = \"user\"", "user = 7")).unwrap_err().0;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "user");
}

/// A mistake in [defaults] was reported once per certificate using it, out of order.
#[test]
fn a_mistake_in_defaults_is_reported_once_before_later_lines() {
    let text = format!(
        "{}\n[[certificate]]\nname = \"b.example.com\"\nkey = \"dsa\"\n\n[[certificate]]\nname = \"c.example.com\"\n",
        replace("product = \"QUICKSSLPREMIUM\"", "product = \"NOSUCH\"")
    );
    let e = parse_text(&text).unwrap_err().0;
    let found: Vec<(Option<usize>, &str)> = e.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        found,
        [(Some(12), "defaults.product"), (Some(23), "certificate[1].key")],
        "{e:?}"
    );
}

#[test]
fn durations_and_shares_parse_as_an_operator_writes_them() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
    assert!(parse_duration("1 fortnight").is_err());
    // Bounded, so that no setting overflows the clock it is added to (this one used to pass
    // `check` and panic after the order was paid, on every later run too).
    assert_eq!(parse_duration("400d").unwrap(), MAX_DURATION);
    let e = parse_duration("200000000000000d").unwrap_err();
    assert!(e.contains("longest allowed, 400d"), "{e}");
    assert!(parse_duration("401d").is_err());
    assert!(parse_duration("1e400s").is_err());
    assert_eq!(parse_renew_before("25%").unwrap(), RenewBefore::Share(0.25));
    assert!(parse_renew_before("0%").is_err());
}

/// Certificate tables: their names, hooks and key access.
mod certificate;

/// `validation`: FILE and EMAIL, and their keys.
mod validation;

/// Reading a file in pieces, and a large one in parts.
mod reading;

/// `[cluster]`: fleet mode.
#[cfg(feature = "cluster")]
mod cluster;

#[test]
fn certificates_with_the_same_settings_share_them() {
    let mut text = GOOD.to_string();
    for i in 0..3 {
        text += &format!("\n[[certificate]]\nname = \"c{i}.example.com\"\n");
    }
    text += "\n[[certificate]]\nname = \"own.example.com\"\nkey = \"rsa-2048\"\n";
    text += "\n[[certificate]]\nname = \"after.example.com\"\n";
    let c = parse_text(&text).unwrap();
    let [a, c0, c1, c2, own, after] = &c.certificates[..] else {
        panic!("6 certificates")
    };
    for other in [c0, c1, c2] {
        assert!(std::sync::Arc::ptr_eq(&a.settings, &other.settings), "{}", other.name);
    }
    assert_eq!(own.key, KeyKind::Rsa2048);
    assert_eq!(
        after.key,
        KeyKind::EcdsaP256,
        "the next certificate does not take another's own setting"
    );
    assert_eq!(a.settings, after.settings);
}
