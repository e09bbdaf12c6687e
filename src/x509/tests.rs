//! x509's tests: deliveries spoiled every way the simulator's CA can, refused by name.
use super::*;
use autodns_sim::Mutation;
use autodns_sim::ca::TestCa;

struct Fixture {
    ca: TestCa,
    key: crate::keys::PrivateKey,
    names: Vec<String>,
}

fn fixture() -> Fixture {
    Fixture {
        ca: TestCa::new().unwrap(),
        key: crate::keys::PrivateKey::generate(crate::config::KeyKind::EcdsaP256).unwrap(),
        names: vec!["www.example.com".into(), "example.com".into()],
    }
}

fn check(f: &Fixture, mutation: Option<Mutation>) -> Result<CertInfo, VerifyError> {
    let spki = f.key.public_key_der();
    let not_after = OffsetDateTime::now_utc() + ::time::Duration::days(30);
    let issued = f.ca.issue(&spki, &f.names, false, not_after, mutation).unwrap();
    let chain: Vec<String> = issued.chain.iter().map(|(_, p)| p.clone()).collect();
    verify(
        &issued.leaf_pem,
        &chain,
        &spki,
        &f.names,
        OffsetDateTime::now_utc(),
        &anchors(&f.ca),
    )
    .map(|v| v.info)
}

#[test]
fn a_certificate_is_known_by_the_key_it_certifies() {
    use sha2::{Digest, Sha256};
    let f = fixture();
    let spki = f.key.public_key_der();
    let not_after = OffsetDateTime::now_utc() + ::time::Duration::days(30);
    let issued = f.ca.issue(&spki, &f.names, false, not_after, None).unwrap();
    let ours: String = Sha256::digest(&spki).iter().map(|b| format!("{b:02x}")).collect();
    assert!(certifies_key(&issued.leaf_pem, &ours));
    assert!(certifies_key(&issued.leaf_pem, &ours.to_ascii_uppercase()));
    let other = crate::keys::PrivateKey::generate(crate::config::KeyKind::EcdsaP256).unwrap();
    let theirs: String = Sha256::digest(other.public_key_der())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!certifies_key(&issued.leaf_pem, &theirs));
    assert!(!certifies_key(
        "-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----\n",
        &ours
    ));
    assert!(!certifies_key("", &ours));
}

fn anchors(ca: &TestCa) -> TrustAnchors {
    TrustAnchors::load(Some(ca.root_pem()), None)
}

/// A delivery issued by the fixture's CA: (leaf, chain).
fn delivery(f: &Fixture) -> (String, Vec<String>) {
    let not_after = OffsetDateTime::now_utc() + ::time::Duration::days(30);
    let issued =
        f.ca.issue(&f.key.public_key_der(), &f.names, false, not_after, None)
            .unwrap();
    (issued.leaf_pem, issued.chain.into_iter().map(|(_, p)| p).collect())
}

fn verify_with(f: &Fixture, leaf: &str, chain: &[String], anchors: &TrustAnchors) -> Result<Verified, VerifyError> {
    verify(
        leaf,
        chain,
        &f.key.public_key_der(),
        &f.names,
        OffsetDateTime::now_utc(),
        anchors,
    )
}

/// Before, a chain ending at any self-signed root was accepted.
#[test]
fn a_chain_must_end_at_a_trusted_root_which_may_be_left_out() {
    let f = fixture();
    let (leaf, chain) = delivery(&f);
    let stranger = TestCa::new().unwrap();
    let e = verify_with(&f, &leaf, &chain, &anchors(&stranger)).unwrap_err();
    assert!(e.to_string().contains("not a root certkeeper trusts"), "{e}");
    assert!(verify_with(&f, &leaf, &chain, &TrustAnchors::load(None, None)).is_err());
    // certificationAuthority with the intermediate only: the root comes from the trust.
    let v = verify_with(&f, &leaf, &chain[..1], &anchors(&f.ca)).unwrap();
    assert_eq!(v.intermediates_pem.len(), 1);
    assert!(verify_with(&f, &leaf, &chain[..1], &anchors(&stranger)).is_err());
}

/// Before, text before the leaf and extra CERTIFICATE blocks reached cert.pem, chain.pem and
/// fullchain.pem unverified.
#[test]
fn only_the_verified_certificates_are_handed_on_re_encoded() {
    let f = fixture();
    let (leaf, chain) = delivery(&f);
    let a = anchors(&f.ca);
    let v = verify_with(&f, &leaf, &chain, &a).unwrap();
    assert_eq!(v.leaf_pem.trim(), leaf.trim().replace("\r\n", "\n"));
    assert_eq!(v.intermediates_pem, vec![to_pem(&pem_der(&chain[0]).unwrap())]);
    let stranger = TestCa::new().unwrap();
    let (other, _) = delivery(&Fixture {
        ca: stranger,
        ..fixture()
    });
    for spoiled in [
        format!("Subject: evil\n{leaf}"),
        format!("{leaf}{other}"),
        format!("{leaf}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    ] {
        assert!(
            matches!(verify_with(&f, &spoiled, &chain, &a), Err(VerifyError::Unreadable(_))),
            "accepted {spoiled}"
        );
        let mut chain2 = chain.clone();
        chain2[0] = spoiled.replace(&leaf, &chain[0]);
        assert!(
            verify_with(&f, &leaf, &chain2, &a).is_err(),
            "accepted a chain entry {}",
            chain2[0]
        );
    }
}

/// A hand-made chain: root → intermediate → leaf, each part spoiled on request.
struct Spoil {
    int_ca: bool,
    int_path_len: Option<u8>,
    second_int: bool,
    leaf_ca: bool,
    leaf_eku: Option<rcgen::ExtendedKeyUsagePurpose>,
}

const FINE: Spoil = Spoil {
    int_ca: true,
    int_path_len: None,
    second_int: false,
    leaf_ca: false,
    leaf_eku: Some(rcgen::ExtendedKeyUsagePurpose::ServerAuth),
};

fn hand_made(f: &Fixture, s: Spoil) -> Result<Verified, VerifyError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca = |cn: &str, is_ca: IsCa| {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = is_ca;
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca("Hand Root", IsCa::Ca(BasicConstraints::Unconstrained));
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let int_key = KeyPair::generate().unwrap();
    let int_params = ca(
        "Hand Intermediate",
        match (s.int_ca, s.int_path_len) {
            (false, _) => IsCa::ExplicitNoCa,
            (true, None) => IsCa::Ca(BasicConstraints::Unconstrained),
            (true, Some(n)) => IsCa::Ca(BasicConstraints::Constrained(n)),
        },
    );
    let int = int_params.signed_by(&int_key, &root_issuer).unwrap();
    let mut issuer = Issuer::new(int_params, int_key);
    let mut chain = vec![int.pem()];
    if s.second_int {
        let key = KeyPair::generate().unwrap();
        let params = ca("Hand Second Intermediate", IsCa::Ca(BasicConstraints::Unconstrained));
        let second = params.signed_by(&key, &issuer).unwrap();
        chain.insert(0, second.pem());
        issuer = Issuer::new(params, key);
    }
    chain.push(root.pem());
    let mut leaf = CertificateParams::new(f.names.clone()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, f.names[0].as_str());
    leaf.is_ca = if s.leaf_ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    leaf.extended_key_usages = s.leaf_eku.into_iter().collect();
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&f.key.public_key_der()).unwrap();
    let leaf = leaf.signed_by(&spki, &issuer).unwrap();
    verify_with(f, &leaf.pem(), &chain, &TrustAnchors::load(Some(&root.pem()), None))
}

/// Before, CA flags, path lengths and extended key usage were not checked.
#[test]
fn every_issuer_must_be_a_ca_allowed_that_deep_and_the_leaf_a_server_certificate() {
    let f = fixture();
    assert!(hand_made(&f, FINE).is_ok());
    let usage = |r: Result<Verified, VerifyError>| match r {
        Err(VerifyError::Usage(why)) => why,
        other => panic!("expected a usage refusal, got {other:?}"),
    };
    assert!(usage(hand_made(&f, Spoil { int_ca: false, ..FINE })).contains("not a CA"));
    assert!(usage(hand_made(&f, Spoil { leaf_ca: true, ..FINE })).contains("itself a CA"));
    assert!(usage(hand_made(&f, Spoil { leaf_eku: None, ..FINE })).contains("serverAuth"));
    assert!(
        usage(hand_made(
            &f,
            Spoil {
                leaf_eku: Some(rcgen::ExtendedKeyUsagePurpose::ClientAuth),
                ..FINE
            }
        ))
        .contains("serverAuth")
    );
    assert!(
        hand_made(
            &f,
            Spoil {
                second_int: true,
                int_path_len: Some(1),
                ..FINE
            }
        )
        .is_ok()
    );
    assert!(
        usage(hand_made(
            &f,
            Spoil {
                second_int: true,
                int_path_len: Some(0),
                ..FINE
            }
        ))
        .contains("path length")
    );
}

#[test]
fn a_good_delivery_is_accepted() {
    let f = fixture();
    let info = check(&f, None).unwrap();
    assert_eq!(info.names, f.names);
    assert_eq!(info.serial.len() % 2, 0);
}

#[test]
fn every_spoiled_delivery_is_refused() {
    let f = fixture();
    assert_eq!(check(&f, Some(Mutation::WrongKey)), Err(VerifyError::WrongKey));
    assert_eq!(
        check(&f, Some(Mutation::MissingSan)),
        Err(VerifyError::MissingName("example.com".into()))
    );
    assert!(matches!(
        check(&f, Some(Mutation::Expired)),
        Err(VerifyError::Expired(_))
    ));
    assert!(matches!(
        check(&f, Some(Mutation::NotYetValid)),
        Err(VerifyError::NotYetValid(_))
    ));
    assert!(matches!(
        check(&f, Some(Mutation::ChainOutOfOrder)),
        Err(VerifyError::Chain(_))
    ));
    assert!(matches!(
        check(&f, Some(Mutation::MissingIntermediate)),
        Err(VerifyError::Chain(_))
    ));
}

#[test]
fn garbage_is_unreadable() {
    assert!(matches!(info("not a certificate"), Err(VerifyError::Unreadable(_))));
}
