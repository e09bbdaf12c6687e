//! `[cluster]`: a good table, and each of its mistakes with its field and line.

use std::os::unix::fs::PermissionsExt;

use super::*;

/// A directory with a fleet key (0600) and an etcd client certificate and key, removed when
/// dropped.
struct Files(PathBuf);

impl Files {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("certkeeper-cfg-cluster-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let private = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        private("fleet.key", &format!("{}\n", "AB".repeat(32)));
        private(
            "client.key",
            "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
        );
        private("etcd.pass", "etcd-secret\n");
        std::fs::write(
            dir.join("client.pem"),
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        Files(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// GOOD with a `[cluster]` table of `lines` (after backend and the fleet key) before
    /// `[defaults]`.
    fn config(&self, lines: &str) -> String {
        replace(
            "[defaults]",
            &format!(
                "[cluster]\nbackend = \"etcd\"\nfleet_key_file = \"{}\"\n{lines}\n\n[defaults]",
                self.path("fleet.key")
            ),
        )
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The line, within `[cluster]`, of the first line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    let table = text.lines().position(|l| l == "[cluster]").expect("[cluster]");
    text.lines()
        .enumerate()
        .skip(table)
        .find(|(_, l)| l.starts_with(start))
        .expect(start)
        .0
        + 1
}

#[track_caller]
fn refused(text: &str, at: &str, field: &str, words: &str) {
    check_error(text, field, line_of(text, at), words);
}

const ENDPOINTS: &str = "endpoints = [\"https://10.0.0.11:2379\", \"https://10.0.0.12:2379\"]";

#[test]
fn a_good_cluster_table_parses_with_its_defaults() {
    let f = Files::new("good");
    let text = f.config(&format!(
        "{ENDPOINTS}\nmember = \"web1\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nuser = \"certkeeper\"\npassword_file = \"{}\"",
        f.path("client.pem"),
        f.path("client.key"),
        f.path("etcd.pass")
    ));
    let c = parse_text(&text).unwrap().cluster.expect("a cluster");
    assert_eq!(c.endpoints, ["https://10.0.0.11:2379", "https://10.0.0.12:2379"]);
    assert_eq!(c.member, "web1");
    assert_eq!(c.prefix, "/certkeeper/");
    assert_eq!(c.lease_ttl, Duration::from_secs(10));
    assert_eq!(
        c.fleet_key.expose(),
        "ab".repeat(32),
        "the key is read as lower-case hex"
    );
    let (user, password) = c.user.expect("a user");
    assert_eq!((user.as_str(), password.expose()), ("certkeeper", "etcd-secret"));
    assert!(c.identity.is_some());
    // Without [cluster], nothing of it.
    assert!(parse_text(GOOD).unwrap().cluster.is_none());
}

#[test]
fn each_mistake_in_the_cluster_table_names_its_field_and_line() {
    let f = Files::new("errors");
    let cases: Vec<(String, &str, &str, &str)> = vec![
        (
            f.config(&format!("{ENDPOINTS}\nbackend_extra = 1")),
            "backend_extra",
            "backend_extra",
            "unknown field",
        ),
        (
            f.config("endpoints = []"),
            "endpoints",
            "cluster.endpoints",
            "at least one",
        ),
        (
            f.config("endpoints = [\"http://10.0.0.11:2379\"]"),
            "endpoints",
            "cluster.endpoints",
            "http://10.0.0.11:2379",
        ),
        (
            f.config(&format!("{ENDPOINTS}\ncert_file = \"{}\"", f.path("client.pem"))),
            "cert_file",
            "cluster.cert_file",
            "go together",
        ),
        (
            f.config(&format!("{ENDPOINTS}\nuser = \"certkeeper\"")),
            "user",
            "cluster.password_file",
            "needs its password_file",
        ),
        (
            f.config(&format!("{ENDPOINTS}\nprefix = \"certkeeper\"")),
            "prefix",
            "cluster.prefix",
            "start and end with /",
        ),
        (
            f.config(&format!("{ENDPOINTS}\nmember = \"web 1\"")),
            "member",
            "cluster.member",
            "'web 1' must be a name",
        ),
        (
            f.config(&format!("{ENDPOINTS}\nlease_ttl = \"1s\"")),
            "lease_ttl",
            "cluster.lease_ttl",
            "whole seconds from 2s to 5m",
        ),
        (
            f.config(&format!("{ENDPOINTS}\nlease_ttl = \"2500ms\"")),
            "lease_ttl",
            "cluster.lease_ttl",
            "whole seconds",
        ),
        (
            f.config(&format!("{ENDPOINTS}\nca_file = \"{}\"", f.path("etcd.pass"))),
            "ca_file",
            "cluster.ca_file",
            "holds no PEM block",
        ),
    ];
    for (text, at, field, words) in &cases {
        refused(text, at, field, words);
    }
    let backend = f
        .config(ENDPOINTS)
        .replace("backend = \"etcd\"", "backend = \"consul\"");
    refused(&backend, "backend", "cluster.backend", "'consul' is not a backend");
}

#[test]
fn a_fleet_key_that_is_not_32_hex_bytes_or_is_readable_by_others_is_refused() {
    let f = Files::new("key");
    let text = f.config(ENDPOINTS);
    std::fs::write(f.0.join("fleet.key"), "abcd\n").unwrap();
    refused(
        &text,
        "fleet_key_file",
        "cluster.fleet_key_file",
        "openssl rand -hex 32",
    );
    std::fs::write(f.0.join("fleet.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(f.0.join("fleet.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&text, "fleet_key_file", "cluster.fleet_key_file", "600");
    std::fs::set_permissions(f.0.join("fleet.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(parse_text(&text).unwrap().cluster.is_some());
}
