//! Certificate tables: names that become file names, repeated and hostile names, reload, and
//! who may read the installed key.

use super::*;

/// A 251-byte name is a legal host name, but `NAME.json` is not a legal file name: every state
/// load failed with ENAMETOOLONG, 157,881 log lines in 8 s. It is refused here instead.
#[test]
fn a_name_too_long_for_a_file_name_is_refused_by_check() {
    let l = "a".repeat(61);
    let long = format!("{l}.{l}.{l}.{l}.com");
    assert_eq!(long.len(), 251);
    assert!(is_hostname(&long));
    check_error(
        &replace("name = \"www.example.com\"", &format!("name = \"{long}\"")),
        "certificate[0].name",
        18,
        "at most 250",
    );
    let fits = format!("{l}.{l}.{l}.{}.com", "a".repeat(60));
    assert_eq!(fits.len(), 250);
    assert!(parse_text(&replace("name = \"www.example.com\"", &format!("name = \"{fits}\""))).is_ok());
    // As an alternative name it is fine: alt names never become file names.
    assert!(
        parse_text(&replace(
            "alt_names = [\"example.com\"]",
            &format!("alt_names = [\"{long}\"]")
        ))
        .is_ok()
    );
}

#[test]
fn repeated_alt_names_are_listed_once_in_their_first_order() {
    let alts: Vec<String> = (0..2000).map(|i| format!("\"n{}.example.com\"", i % 700)).collect();
    // (QUICKSSLPREMIUM takes 5 names; the CA judges SSL123's.)
    let c = parse_text(
        &replace(
            "alt_names = [\"example.com\"]",
            &format!("alt_names = [{}]", alts.join(", ")),
        )
        .replace("QUICKSSLPREMIUM", "SSL123"),
    )
    .unwrap();
    let names = &c.certificates[0].alt_names;
    assert_eq!(names.len(), 700);
    assert_eq!(names[0], "n0.example.com");
    assert_eq!(names[699], "n699.example.com");
}

/// What held when certkeeper was attacked, kept tested: a certificate name becomes a path, so
/// every name that is not a plain host name is refused, whatever it holds.
#[test]
fn hostile_certificate_names_are_refused() {
    let hostile = [
        "../../etc/passwd",
        "..",
        ".",
        "",
        "a/b.example.com",
        "a\\b.example.com",
        "/etc/example.com",
        "www.example.com/..",
        "www..example.com",
        ".example.com",
        "example.com..",
        "-www.example.com",
        "www-.example.com",
        "*.example.com",
        "www.*.com",
        "www.example.com\n",
        "www.example.com\u{0}",
        "www.example.com\r",
        "www.exa mple.com",
        "www.example.com;rm -rf",
        "$(touch x).example.com",
        "`id`.example.com",
        "www.example.com'",
        "www.example.com\"",
        "ww\u{1b}[2J.example.com",
        "café.example.com",
        "ｗｗｗ.example.com",
        "192.0.2.1",
        "localhost",
        "www.example.123",
        "www_under.example.com",
    ];
    assert_eq!(hostile.len(), 31);
    for name in hostile {
        let text = GOOD.replace(
            "name = \"www.example.com\"",
            &format!("name = {}", toml::Value::String(name.to_string())),
        );
        let errors = parse_text(&text).err().unwrap_or_else(|| panic!("accepted {name:?}")).0;
        assert!(
            errors.iter().any(|e| e.field == "certificate[0].name"),
            "{name:?}: {errors:?}"
        );
    }
}

/// A missing `reload` was accepted but `reload = []` refused; both now mean "no reload", and
/// `[]` overrides a default for one certificate.
#[test]
fn an_empty_reload_means_no_reload_and_overrides_the_default() {
    let c = parse_text(&format!("{GOOD}reload = []\n")).unwrap();
    assert!(c.certificates[0].reload.is_empty());
    let c = parse_text(GOOD).unwrap();
    assert_eq!(*c.certificates[0].reload, ["systemctl", "reload", "nginx"]);
    check_error(
        &format!("{GOOD}reload = [\"\"]\n"),
        "certificate[0].reload",
        20,
        "program name is empty",
    );
}

/// There was no way to let a web server running as another user read its key. `key_owner`,
/// `key_group` and `key_mode` say who may; a mode that lets others read it, or the group write
/// it, is refused, as is a user or group the host does not have.
#[test]
fn the_key_owner_group_and_mode_are_checked() {
    let c = parse_text(&replace(
        "reload = [",
        "key_owner = \"root\"\nkey_group = \"0\"\nkey_mode = \"0640\"\nreload = [",
    ))
    .unwrap();
    let access = c.certificates[0].key_access;
    assert_eq!((access.uid, access.gid, access.mode), (Some(0), Some(0), 0o640));
    let c = parse_text(GOOD).unwrap();
    assert_eq!(c.certificates[0].key_access, crate::store::KeyAccess::default());
    assert_eq!(c.certificates[0].key_access.mode, 0o600);
    for mode in ["0644", "0660", "0700", "0604", "600x", "0200"] {
        check_error(
            &replace("reload = [", &format!("key_mode = \"{mode}\"\nreload = [")),
            "defaults.key_mode",
            15,
            "never readable by others",
        );
    }
    check_error(
        &replace("reload = [", "key_owner = \"no-such-user-here\"\nreload = ["),
        "defaults.key_owner",
        15,
        "there is no 'no-such-user-here' on this host",
    );
    check_error(
        &replace("reload = [", "key_group = \"no-such-group-here\"\nreload = ["),
        "defaults.key_group",
        15,
        "there is no 'no-such-group-here' on this host",
    );
}

/// `serve_check` lists the servers that must hand out each new certificate: addresses a TLS
/// client can connect to, checked when the file is read, with the shipped timeout and interval
/// unless set; a certificate's own list overrides the default's.
#[test]
fn the_served_check_addresses_and_times_are_checked() {
    let c = parse_text(GOOD).unwrap();
    assert!(c.certificates[0].serve_check.is_empty());
    assert_eq!(c.certificates[0].serve_check_timeout, Duration::from_secs(10));
    assert_eq!(c.certificates[0].serve_check_interval, Duration::from_secs(3600));
    let c = parse_text(&replace(
        "reload = [",
        "serve_check = [\"127.0.0.1:443\", \"[::1]:8443\", \"web1.example.com:443\", \"127.0.0.1:443\"]\nserve_check_timeout = \"30s\"\nserve_check_interval = \"10m\"\nreload = [",
    ))
    .unwrap();
    let cert = &c.certificates[0];
    assert_eq!(
        *cert.serve_check,
        ["127.0.0.1:443", "[::1]:8443", "web1.example.com:443"]
    );
    assert_eq!(cert.serve_check_timeout, Duration::from_secs(30));
    assert_eq!(cert.serve_check_interval, Duration::from_secs(600));
    let own = parse_text(&format!(
        "{}serve_check = [\"10.0.0.5:443\"]\n",
        replace("reload = [", "serve_check = [\"127.0.0.1:443\"]\nreload = [")
    ))
    .unwrap();
    assert_eq!(*own.certificates[0].serve_check, ["10.0.0.5:443"]);
    for bad in [
        "127.0.0.1",
        "web1.example.com",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "*.example.com:443",
        "a b:443",
        "/tmp/sock",
    ] {
        check_error(
            &replace("reload = [", &format!("serve_check = [\"{bad}\"]\nreload = [")),
            "defaults.serve_check",
            15,
            "is not an address such as 127.0.0.1:443",
        );
    }
    check_error(
        &replace("reload = [", "serve_check_timeout = \"0s\"\nreload = ["),
        "defaults.serve_check_timeout",
        15,
        "longer than zero",
    );
    for bad in ["100ms", "11m"] {
        check_error(
            &replace("reload = [", &format!("serve_check_timeout = \"{bad}\"\nreload = [")),
            "defaults.serve_check_timeout",
            15,
            "must be between 1s and 10m",
        );
    }
}
