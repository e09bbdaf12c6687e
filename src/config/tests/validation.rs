//! `validation`: FILE (a web root, or a file hook) and EMAIL (an approver), and the keys that
//! belong to a mode the certificate does not use.

use super::*;

fn with(extra: &str) -> String {
    replace(
        "alt_names = [\"example.com\"]",
        &format!("alt_names = [\"example.com\"]\n{extra}"),
    )
}

#[test]
fn a_file_validation_takes_one_web_root_or_one_per_name() {
    let c = parse_text(&with("validation = \"file\"\nwebroot = \"/var/www/example\"")).unwrap();
    let Validation::File(f) = &c.certificates[0].validation else {
        panic!("not file: {:?}", c.certificates[0].validation)
    };
    assert_eq!(f.webroot("example.com"), Some(Path::new("/var/www/example")));
    assert_eq!(f.webroot("www.example.com"), Some(Path::new("/var/www/example")));
    assert_eq!(f.check_address, None);
    assert_eq!(
        c.certificates[0].publish_mode(),
        DnsMode::Hook,
        "journaled like a DNS hook"
    );
    let c = parse_text(&with(
        "validation = \"file\"\nfile_check_address = \"127.0.0.1:8080\"\nwebroot = { \"www.example.com\" = \"/srv/www\", \"example.com\" = \"/srv/apex\" }",
    ))
    .unwrap();
    let Validation::File(f) = &c.certificates[0].validation else {
        panic!()
    };
    assert_eq!(f.webroot("example.com"), Some(Path::new("/srv/apex")));
    assert_eq!(f.webroot("www.example.com"), Some(Path::new("/srv/www")));
    assert_eq!(f.check_address.as_deref(), Some("127.0.0.1:8080"));
    // The default is DNS.
    assert_eq!(parse_text(GOOD).unwrap().certificates[0].validation, Validation::Dns);
}

#[test]
fn a_file_validation_without_a_place_for_the_file_or_with_a_bad_one_is_refused() {
    check_error(
        &with("validation = \"file\""),
        "certificate[0].webroot",
        17,
        "needs a webroot",
    );
    check_error(
        &with("validation = \"file\"\nwebroot = \"www\""),
        "certificate[0].webroot",
        21,
        "absolute path",
    );
    check_error(
        &with("validation = \"file\"\nwebroot = { \"www.example.com\" = \"/srv/www\" }"),
        "certificate[0].webroot",
        21,
        "has no web root for example.com",
    );
    check_error(
        &with(
            "validation = \"file\"\nwebroot = { \"www.example.com\" = \"/a\", \"example.com\" = \"/b\", \"evil.org\" = \"/c\" }",
        ),
        "certificate[0].webroot",
        21,
        "'evil.org' is not one of the certificate's names",
    );
    check_error(
        &with("validation = \"file\"\nwebroot = \"/srv/www\"\nfile_hook = [\"/bin/true\"]"),
        "certificate[0].webroot",
        17,
        "not both",
    );
    check_error(
        &with("validation = \"file\"\nwebroot = \"/srv/www\"\nfile_check_address = \"127.0.0.1\""),
        "certificate[0].file_check_address",
        22,
        "not an address",
    );
    check_error(
        &with("validation = \"http\""),
        "certificate[0].validation",
        20,
        "use \"dns\", \"file\" or \"email\"",
    );
}

#[test]
fn an_email_validation_needs_an_address_and_keys_of_another_mode_are_refused() {
    let c = parse_text(&with("validation = \"email\"\napprover_email = \"Admin@Example.com\"")).unwrap();
    assert_eq!(
        c.certificates[0].validation,
        Validation::Email {
            approver: "admin@example.com".into()
        }
    );
    assert_eq!(
        c.certificates[0].publish_mode(),
        DnsMode::Autodns,
        "nothing of ours is published"
    );
    check_error(
        &with("validation = \"email\""),
        "certificate[0].approver_email",
        17,
        "needs an approver_email",
    );
    for bad in [
        "admin",
        "admin@",
        "@example.com",
        "a b@example.com",
        "admin@exa mple.com",
        "admin@example.com\n",
    ] {
        let text = with(&format!("validation = \"email\"\napprover_email = {bad:?}"));
        check_error(&text, "certificate[0].approver_email", 21, "not an e-mail address");
    }
    // A key that does nothing in this mode is said, not passed over.
    check_error(
        &with("approver_email = \"admin@example.com\""),
        "certificate[0].approver_email",
        20,
        "only used with validation = \"email\"",
    );
    check_error(
        &with("validation = \"email\"\napprover_email = \"admin@example.com\"\nwebroot = \"/srv\""),
        "certificate[0].webroot",
        22,
        "only used with validation = \"file\"",
    );
    // In [defaults], a mode's keys serve the certificates that choose it.
    let text = replace(
        "product = \"QUICKSSLPREMIUM\"",
        "product = \"QUICKSSLPREMIUM\"\nwebroot = \"/srv/www\"\napprover_email = \"admin@example.com\"",
    );
    assert_eq!(parse_text(&text).unwrap().certificates[0].validation, Validation::Dns);
}

/// An S/MIME certificate: its name a mailbox, its product an S/MIME one, its person and
/// password files given; each mismatch refused by name.
#[test]
fn an_smime_certificate_needs_a_mailbox_an_smime_product_and_its_person() {
    let dir = std::env::temp_dir().join(format!("certkeeper-smime-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (f, mode) in [("pass", 0o600), ("p12", 0o600), ("open", 0o644)] {
        std::fs::write(dir.join(f), "pw\n").unwrap();
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let d = dir.display();
    let smime = format!(
        "smime = {{ first_name = \"Jane\", last_name = \"Doe\", password_file = \"{d}/pass\", p12_password_file = \"{d}/p12\" }}"
    );
    let mail = |extra: &str| {
        GOOD.replacen(
            "name = \"www.example.com\"\nalt_names = [\"example.com\"]",
            &format!("name = \"Jane.Doe@example.com\"\nproduct = \"GLOBALSIGN_PERSONALSIGN_1\"\n{extra}"),
            1,
        )
    };
    let c = parse_text(&mail(&smime)).unwrap();
    let cert = &c.certificates[0];
    assert_eq!(cert.name, "jane.doe@example.com");
    assert_eq!(
        cert.validation,
        Validation::Email {
            approver: "jane.doe@example.com".into()
        }
    );
    let s = cert.smime.as_ref().unwrap();
    assert_eq!(
        (s.first_name.as_str(), s.password.expose(), s.p12_password.expose()),
        ("Jane", "pw", "pw")
    );
    assert!(!format!("{c:?}").contains("\"pw\""), "no password in Debug output");

    // A mailbox without an S/MIME product, and the reverse.
    check_error(
        &replace("name = \"www.example.com\"", "name = \"jane@example.com\""),
        "certificate[0].name",
        18,
        "needs an S/MIME product",
    );
    check_error(
        &GOOD.replacen(
            "alt_names = [\"example.com\"]",
            "product = \"GLOBALSIGN_PERSONALSIGN_1\"",
            1,
        ),
        "certificate[0].name",
        18,
        "must be the e-mail address",
    );
    check_error(&mail(""), "certificate[0].smime", 17, "needs smime = {");
    check_error(
        &mail(&format!("{smime}\nalt_names = [\"www.example.com\"]")),
        "certificate[0].alt_names",
        21,
        "one mailbox",
    );
    check_error(
        &mail(&format!("{smime}\nvalidation = \"dns\"")),
        "certificate[0].validation",
        21,
        "approved by its own mailbox",
    );
    check_error(
        &with(&smime),
        "certificate[0].smime",
        20,
        "only used with an S/MIME product",
    );
    check_error(
        &mail(&smime.replace("/p12\"", "/open\"")),
        "certificate[0].smime.p12_password_file",
        20,
        "chmod 600",
    );
    check_error(
        &mail(&smime.replace("\"Jane\"", "\"Ja\\nne\"")),
        "certificate[0].smime.first_name",
        20,
        "printable",
    );
    for bad in [
        "jane@",
        "@example.com",
        "ja ne@example.com",
        "../x@example.com",
        ".jane@example.com",
    ] {
        let text = mail(&smime).replace("Jane.Doe@example.com", bad);
        assert!(parse_text(&text).is_err(), "{bad} was taken");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
