use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_and_reissued_through_autodns_and_a_hook_with_ecdsa_and_rsa() {
    let env = TestEnv::start("issue").await;
    let certs = [
        Cert {
            alt: &["example.com"],
            ..Cert::autodns("www.example.com")
        },
        Cert {
            key: "rsa-2048",
            ..Cert::hook("shop.example.net")
        },
        Cert {
            key: "rsa-3072",
            ..Cert::autodns("api.example.org")
        },
        Cert {
            key: "ecdsa-p384",
            ..Cert::hook("mail.example.org")
        },
    ];
    env.write_config(&certs, "");
    env.run_ok(&["run", "--once"]).await;
    let mut serials = Vec::new();
    for c in &certs {
        env.assert_installed(c.name);
        assert_eq!(env.paid(c.name), 1, "{}", c.name);
        serials.push(env.serial(c.name));
    }
    // The hook's records were cleaned up after the jobs ended.
    assert!(
        env.sim
            .control()
            .dns_records()
            .iter()
            .all(|r| !r.name.starts_with("shop.example.net")),
        "{:?}",
        env.sim.control().dns_records()
    );

    // Nothing is due: a second run orders nothing.
    env.run_ok(&["run", "--once"]).await;
    assert_eq!(env.sim.control().ledger().len(), 4);

    // --renew-now reissues every certificate for free, with new keys.
    let old_key = std::fs::read_to_string(env.live("www.example.com").join("privkey.pem")).unwrap();
    env.run_ok(&["--renew-now"]).await;
    for (c, old) in certs.iter().zip(&serials) {
        env.assert_installed(c.name);
        assert_ne!(&env.serial(c.name), old, "{} was not reissued", c.name);
        assert_eq!(env.paid(c.name), 1);
        assert_eq!(env.reissues(c.name), 1);
    }
    assert_ne!(
        std::fs::read_to_string(env.live("www.example.com").join("privkey.pem")).unwrap(),
        old_key
    );

    // Only the named certificate is reissued.
    env.run_ok(&["run", "--renew-now", "www.example.com"]).await;
    assert_eq!(env.reissues("www.example.com"), 2);
    assert_eq!(env.reissues("shop.example.net"), 1);

    // status shows what is installed.
    let out = env.run_ok(&["status", "--json"]).await;
    let rows = status_rows(&out);
    assert_eq!(rows.as_array().unwrap().len(), 4);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "deployed" && r["days_left"].as_f64().unwrap() > 190.0),
        "{rows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_hook_gets_the_documented_environment() {
    let env = TestEnv::start("reload-env").await;
    let out = env.dir.join("reload.out");
    let script = env.script(
        "reload.sh",
        &format!("env | grep '^CERTKEEPER_' | sort > {}", out.display()),
    );
    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("reload = [\"{}\"]", script.display()),
    );
    env.run_ok(&["run", "--once"]).await;
    let seen = std::fs::read_to_string(&out).unwrap();
    let live = env.live("www.example.com");
    for line in [
        "CERTKEEPER_NAME=www.example.com".to_string(),
        format!("CERTKEEPER_CERT={}", live.join("cert.pem").display()),
        format!("CERTKEEPER_KEY={}", live.join("privkey.pem").display()),
        format!("CERTKEEPER_CHAIN={}", live.join("chain.pem").display()),
        format!("CERTKEEPER_FULLCHAIN={}", live.join("fullchain.pem").display()),
    ] {
        assert!(seen.lines().any(|l| l == line), "missing {line} in:\n{seen}");
    }
    let serial = env.serial("www.example.com");
    assert!(
        seen.contains(&format!("CERTKEEPER_SERIAL={}", serial.trim_start_matches("serial="))),
        "{seen}"
    );
    assert!(seen.contains("CERTKEEPER_NOT_AFTER=20"), "{seen}");
    // The API password never reaches a hook.
    assert!(!seen.contains("demo-password"));
}

/// `--renew-now NAME` works on NAME alone: it looked at every configured certificate's key
/// first (at 100,000 certificates, 100,000 look-ups for one reissue). Another certificate's key
/// loosened by hand is now left to the next full run, which gives it its configured mode again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_now_of_one_name_looks_at_no_other_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::start("renew-one").await;
    env.write_config(
        &[Cert::autodns("www.example.com"), Cert::autodns("shop.example.com")],
        "",
    );
    env.run_ok(&["run", "--once"]).await;
    let shop_key = env.live("shop.example.com").join("privkey.pem");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    std::fs::set_permissions(&shop_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let shop_serial = env.serial("shop.example.com");

    env.run_ok(&["--renew-now", "www.example.com"]).await;
    assert_eq!(env.reissues("www.example.com"), 1);
    env.assert_installed("www.example.com");
    assert_eq!(env.reissues("shop.example.com"), 0);
    assert_eq!(env.serial("shop.example.com"), shop_serial);
    assert_eq!(
        mode(&shop_key),
        0o640,
        "the run for www.example.com touched shop.example.com's key"
    );

    // The next run looks at every certificate: the key is 0600 again, without a reissue.
    env.run_ok(&["run", "--once"]).await;
    assert_eq!(mode(&shop_key), 0o600);
    env.assert_installed("shop.example.com");
    assert_eq!(env.reissues("shop.example.com"), 0);
}

/// Adding a name or changing the key type was reloaded as "added=[] removed=[]", `run --once`
/// exited 0, and the certificate kept its old names and key until someone guessed
/// `--renew-now`. A changed certificate is now due for a free reissue at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_reissued_at_once_for_free() {
    let env = TestEnv::start("changed").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    env.run_ok(&["run", "--once"]).await;
    let first = env.serial(name);
    // Nothing changed: nothing is due.
    env.run_ok(&["run", "--once"]).await;
    assert_eq!(env.serial(name), first);
    assert_eq!(env.reissues(name), 0);

    // Another name: reissued at once, and the new certificate covers it.
    env.write_config(
        &[Cert {
            alt: &["example.com"],
            ..Cert::autodns(name)
        }],
        "",
    );
    // Before the run, status says why the reissue is due now.
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert!(
        rows[0]["next"].as_str().unwrap().contains("because the names changed"),
        "{rows}"
    );
    let out = env.run_ok(&["run", "--once"]).await;
    assert!(stderr(&out).contains("the names changed"), "{}", stderr(&out));
    assert_eq!(env.reissues(name), 1);
    env.assert_installed(name);
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(env.live(name).join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("DNS:example.com"),
        "{text:?}"
    );

    // Another key type: reissued with a key of that type.
    env.write_config(
        &[Cert {
            alt: &["example.com"],
            key: "rsa-2048",
            ..Cert::autodns(name)
        }],
        "",
    );
    let out = env.run_ok(&["run", "--once"]).await;
    assert!(stderr(&out).contains("the key type changed"), "{}", stderr(&out));
    assert_eq!(env.reissues(name), 2);
    env.assert_installed(name);
    let key = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(env.live(name).join("privkey.pem"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&key.stdout).contains("2048 bit"), "{key:?}");
    // Settled: nothing more is due, and only the first order was paid.
    env.run_ok(&["run", "--once"]).await;
    assert_eq!(env.reissues(name), 2);
    assert_eq!(env.paid(name), 1);
}

/// The roots certkeeper trusts: Mozilla's, compiled in, by default, so that the system store is
/// not read; `api.roots = "system"` reads the system store (here pointed at the simulator's root
/// through `SSL_CERT_FILE`, as OpenSSL's tools honour it), and `ca_file` adds to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_trusted_through_the_built_in_roots_the_system_store_or_ca_file() {
    let env = TestEnv::start("roots").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    let with_ca_file = std::fs::read_to_string(env.config_path()).unwrap();
    let without = with_ca_file.replace("ca_file = \"root.pem\"\n", "");
    assert_ne!(with_ca_file, without);
    let root = env.dir.join("root.pem");
    let system = [
        ("SSL_CERT_FILE", root.to_str().unwrap()),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];

    // Built in: the simulator's root is not Mozilla's, so nothing reaches it, whatever the
    // system store says.
    std::fs::write(env.config_path(), &without).unwrap();
    let out = env.run(&["run", "--once"], &system).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).to_lowercase().contains("certificate"), "{}", stderr(&out));
    assert!(env.sim.control().ledger().is_empty());

    // The system store, as configured.
    std::fs::write(
        env.config_path(),
        without.replace("[api]\n", "[api]\nroots = \"system\"\n"),
    )
    .unwrap();
    let out = env.run(&["--renew-now", name], &system).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_installed(name);

    // ca_file on top of the built-in roots.
    std::fs::write(env.config_path(), &with_ca_file).unwrap();
    let out = env.run(&["--renew-now", name], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.reissues(name), 1);
}
