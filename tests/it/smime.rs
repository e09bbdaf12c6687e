//! S/MIME (GlobalSign PersonalSign) against autodns-sim: ordered as MAIL with our own CSR, the
//! approval waited for and told, installed like a server certificate and as a PKCS#12 bundle
//! that openssl opens with its password (and refuses with another); reissued before expiry.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use autodns_sim::{Durations, Faults, SimConfig};

use crate::support::*;

const MAILBOX: &str = "jane.doe@example.com";

fn secret(env: &TestEnv, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = env.dir.join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn smime_config(env: &TestEnv) {
    secret(env, "smime-jane.pass", "download-S3cret");
    secret(env, "smime-jane.p12pass", "bundle-P4ss");
    env.write_config(&[], "");
    env.append_config(&format!(
        "[[certificate]]\nname = \"{MAILBOX}\"\nproduct = \"GLOBALSIGN_PERSONALSIGN_1\"\nsmime = {{ first_name = \"Jane\", last_name = \"Doe\", organization_unit = \"Sales\", password_file = \"smime-jane.pass\", p12_password_file = \"smime-jane.p12pass\" }}\n"
    ));
}

fn openssl(args: &[&str], file: &Path) -> std::process::Output {
    Command::new("openssl").args(args).arg(file).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smime_certificate_is_ordered_as_mail_approved_and_installed_with_its_pkcs12_bundle() {
    let env = TestEnv::start("smime").await;
    smime_config(&env);
    let (on_failure, told) = env.recorder("on-failure");
    let (reload, reloaded) = env.recorder("reload");
    env.append_config(&format!(
        "reload = [\"{}\"]\n[daemon]\non_failure = [\"{}\"]\n",
        reload.display(),
        on_failure.display()
    ));
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("download-S3cret"),
        "the password is never logged"
    );
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(
        rows[0]["state_text"],
        format!("waiting for approval by {MAILBOX}"),
        "{rows}"
    );
    assert!(
        std::fs::read_to_string(&told)
            .unwrap()
            .contains("CERTKEEPER_EVENT=awaiting_approval")
    );
    // Ordered as the help page orders: MAIL, our own CSR, the person and the password.
    let body = env.sent_order();
    for (field, want) in [
        ("certificateType", serde_json::json!("MAIL")),
        ("product", serde_json::json!("GLOBALSIGN_PERSONALSIGN_1")),
        ("name", serde_json::json!(MAILBOX)),
        ("hasCsr", serde_json::json!(true)),
        ("firstname", serde_json::json!("Jane")),
        ("lastname", serde_json::json!("Doe")),
        ("organizationUnitName", serde_json::json!("Sales")),
    ] {
        assert_eq!(body[field], want, "{field} in {body}");
    }
    assert!(
        body["csr"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    let ledger = env.sim.control().ledger();
    assert!(env.sim.control().approve(ledger[0].job_id));
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed(MAILBOX);
    assert_eq!(env.paid(MAILBOX), 1);

    let live = env.live(MAILBOX);
    let cert = live.join("cert.pem");
    // openssl: the chain verifies for S/MIME signing, the mailbox is in the SAN, the EKU is
    // emailProtection.
    let verify = Command::new("openssl")
        .args(["verify", "-purpose", "smimesign", "-CAfile"])
        .arg(env.dir.join("root.pem"))
        .arg("-untrusted")
        .arg(live.join("chain.pem"))
        .arg(&cert)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let ext = openssl(
        &["x509", "-noout", "-ext", "subjectAltName,extendedKeyUsage", "-in"],
        &cert,
    );
    let ext = String::from_utf8_lossy(&ext.stdout);
    assert!(ext.contains(&format!("email:{MAILBOX}")), "{ext}");
    assert!(ext.contains("E-mail Protection"), "{ext}");

    // The bundle: 0600, opened by openssl with its password (PBES2/AES-256, a SHA-256 MAC),
    // refused with another, and holding the installed key and certificate.
    let p12 = live.join("bundle.p12");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&p12).unwrap().permissions().mode() & 0o777, 0o600);
    let pass = format!("file:{}", env.dir.join("smime-jane.p12pass").display());
    let info = Command::new("openssl")
        .args(["pkcs12", "-info", "-noenc", "-passin", &pass, "-in"])
        .arg(&p12)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&info.stdout),
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(info.status.success(), "{text}");
    assert!(text.contains("MAC: sha256"), "{text}");
    assert!(text.contains("PBES2") && text.contains("AES-256-CBC"), "{text}");
    assert!(!text.contains("RC2") && !text.contains("3DES"), "{text}");
    let key_in_bundle = Command::new("openssl")
        .args(["pkcs12", "-nocerts", "-noenc", "-passin", &pass, "-in"])
        .arg(&p12)
        .output()
        .unwrap();
    let bundle_pub = pipe(&["pkey", "-pubout"], &key_in_bundle.stdout);
    let installed_pub = openssl(&["pkey", "-pubout", "-in"], &live.join("privkey.pem")).stdout;
    assert_eq!(bundle_pub, installed_pub, "the bundle holds the installed key");
    let wrong = Command::new("openssl")
        .args(["pkcs12", "-info", "-noenc", "-passin", "pass:not-the-password", "-in"])
        .arg(&p12)
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "a wrong password is refused");
    // The reload hook is told where the bundle is.
    let calls = std::fs::read_to_string(&reloaded).unwrap();
    assert!(calls.contains(&format!("CERTKEEPER_P12={}", p12.display())), "{calls}");
    assert_eq!(
        std::fs::read_to_string(&told)
            .unwrap()
            .matches("CERTKEEPER_EVENT=")
            .count(),
        1,
        "told once"
    );
}

fn pipe(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// On a compressed clock (a certificate lives 20 s, an approval comes after 1 s), the S/MIME
/// certificate is reissued before it expires, with a new key, and its bundle follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smime_certificate_is_reissued_before_it_expires() {
    let env = TestEnv::start_sim(
        "smime-reissue",
        SimConfig {
            durations: Durations {
                cert_validity: Duration::from_secs(20),
                approval_delay: Some(Duration::from_secs(1)),
                ..Durations::default()
            },
            faults: Faults {
                rate_limit: 0.0,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    smime_config(&env);
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed(MAILBOX);
    let first = env.serial(MAILBOX);
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let out = env.run(&["run", "--once"], &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        if env.serial(MAILBOX) != first {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(18),
            "not reissued before expiry"
        );
    }
    env.assert_installed(MAILBOX);
    assert_eq!(env.paid(MAILBOX), 1);
    assert!(env.reissues(MAILBOX) >= 1);
    let pass = format!("file:{}", env.dir.join("smime-jane.p12pass").display());
    let certs = Command::new("openssl")
        .args(["pkcs12", "-nokeys", "-clcerts", "-passin", &pass, "-in"])
        .arg(env.live(MAILBOX).join("bundle.p12"))
        .output()
        .unwrap();
    let serial = pipe(&["x509", "-noout", "-serial"], &certs.stdout);
    assert_eq!(
        String::from_utf8_lossy(&serial).trim(),
        env.serial(MAILBOX),
        "the bundle follows"
    );
}
