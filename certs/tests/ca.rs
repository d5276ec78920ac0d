//! End-to-end tests of the CA through its public API, cross-checked with x509-parser and webpki.

use std::time::Instant;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use tribune_certs::{
    CertError, RootCa, cross_sign, inspect, new_root, service_spiffe_id, sign_leaf, trust_domain,
    verify_chain,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256, OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
};
use x509_parser::pem::Pem;

const NOW: i64 = 1_700_000_000;
const DAY: i64 = 86_400;
const TD: &str = "abc.tribune";

fn der_of(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("valid PEM");
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).expect("valid DER");
    assert!(rest.is_empty());
    cert
}

fn assert_p256(cert: &X509Certificate<'_>) {
    let spki = cert.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .expect("curve parameter")
        .as_oid()
        .expect("curve OID");
    assert_eq!(curve, OID_EC_P256);
    assert_eq!(cert.signature_algorithm.algorithm, OID_SIG_ECDSA_WITH_SHA256);
}

fn assert_key_matches(key_pem: &str, cert: &X509Certificate<'_>) {
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM expected"
    );
    let key =
        KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &PKCS_ECDSA_P256_SHA256).expect("P-256 PKCS#8 key");
    assert_eq!(
        key.public_key_raw(),
        cert.public_key().subject_public_key.data.as_ref()
    );
}

fn ski<'a>(cert: &'a X509Certificate<'_>) -> &'a [u8] {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
        .expect("subject key identifier")
}

fn aki<'a>(cert: &'a X509Certificate<'_>) -> &'a [u8] {
    let ext = cert
        .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .expect("unique")
        .expect("AKI");
    match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().expect("key id").0,
        other => panic!("unexpected {other:?}"),
    }
}

fn root1() -> RootCa {
    new_root(TD, "Tribune CA 1", 365 * DAY, NOW).expect("root")
}

fn web_id() -> String {
    service_spiffe_id(TD, "dc1", "web")
}

fn chain_error(result: Result<(), CertError>) -> webpki::Error {
    match result {
        Err(CertError::ChainInvalid { source, .. }) => source,
        other => panic!("expected ChainInvalid, got {other:?}"),
    }
}

#[test]
fn naming_helpers() {
    assert_eq!(
        service_spiffe_id("abc.tribune", "dc1", "web"),
        "spiffe://abc.tribune/ns/default/dc/dc1/svc/web"
    );
    assert_eq!(
        trust_domain("8f14e45f-ceea-467f-a0e6-7d2a1e8d2c11"),
        "8f14e45f-ceea-467f-a0e6-7d2a1e8d2c11.tribune"
    );
}

#[test]
fn root_is_self_signed_p256_ca_with_trust_domain_san_and_requested_validity() {
    let root = new_root(TD, "Tribune CA 1", 30 * DAY, NOW).expect("root");
    let der = der_of(&root.cert_pem);
    let cert = parse(&der);

    // Self-signed: issuer == subject (bytes), and the signature verifies with its own key.
    assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
    assert_eq!(cert.subject().to_string(), "CN=Tribune CA 1");
    cert.verify_signature(None).expect("self-signature verifies");
    assert_p256(&cert);
    assert_key_matches(&root.key_pem, &cert);

    // CA, unconstrained path length, CA key usages.
    let bc = cert.basic_constraints().expect("ok").expect("basicConstraints");
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, None);
    let ku = cert.key_usage().expect("ok").expect("keyUsage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    assert!(!ku.key_encipherment());
    assert!(
        cert.extended_key_usage().expect("ok").is_none(),
        "no EKU on the root"
    );

    // Exactly one SAN: the trust domain URI.
    let san = cert.subject_alternative_name().expect("ok").expect("SAN");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://abc.tribune")]
    );

    // Validity as asked.
    assert_eq!(cert.validity().not_before.timestamp(), NOW - 60);
    assert_eq!(cert.validity().not_after.timestamp(), NOW + 30 * DAY);
    assert_eq!(
        (root.not_before_unix, root.not_after_unix),
        (NOW - 60, NOW + 30 * DAY)
    );

    // Identity fields.
    let info = inspect(&root.cert_pem).expect("inspect");
    assert_eq!(root.id, info.fingerprint_sha256);
    assert_eq!(root.id.len(), 64);
    assert!(
        root.id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(info.is_ca);
    assert!(info.dns_sans.is_empty());
    assert!(
        (0x10..=0x7f).contains(&cert.raw_serial()[0]),
        "positive serial, no sign padding"
    );
    assert_eq!(cert.raw_serial().len(), 16);
}

#[test]
fn leaf_has_only_the_spiffe_uri_san_and_leaf_properties() {
    let root = root1();
    let id = web_id();
    let leaf = sign_leaf(&root, &id, 3600, NOW).expect("leaf");
    let der = der_of(&leaf.cert_pem);
    let cert = parse(&der);
    let root_der = der_of(&root.cert_pem);
    let root_cert = parse(&root_der);

    // Exactly one SAN, and it is the URI SPIFFE ID.
    let san = cert.subject_alternative_name().expect("ok").expect("SAN");
    assert_eq!(san.value.general_names, vec![GeneralName::URI(id.as_str())]);
    assert_eq!(leaf.spiffe_id, id);
    assert_eq!(cert.subject().to_string(), "CN=web");

    // Not a CA, explicitly.
    let bc = cert
        .basic_constraints()
        .expect("ok")
        .expect("basicConstraints present");
    assert!(!bc.value.ca);
    // Key usage and EKU.
    let ku = cert.key_usage().expect("ok").expect("keyUsage").value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    let eku = cert.extended_key_usage().expect("ok").expect("EKU").value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing && eku.other.is_empty());

    // Issued by the root: issuer DN byte-identical to the root's subject, AKI = root SKI, signature.
    assert_eq!(cert.issuer().as_raw(), root_cert.subject().as_raw());
    assert_eq!(aki(&cert), ski(&root_cert));
    cert.verify_signature(Some(root_cert.public_key()))
        .expect("signed by the root key");
    assert_eq!(leaf.root_id, root.id);

    // Fresh P-256 key matching the certificate, different from the root's.
    assert_p256(&cert);
    assert_key_matches(&leaf.key_pem, &cert);
    assert_ne!(cert.public_key().raw, root_cert.public_key().raw);

    // Validity.
    assert_eq!(cert.validity().not_before.timestamp(), NOW - 60);
    assert_eq!(cert.validity().not_after.timestamp(), NOW + 3600);
    assert_eq!(
        (leaf.not_before_unix, leaf.not_after_unix),
        (NOW - 60, NOW + 3600)
    );
}

#[test]
fn leaf_verifies_against_its_root_only_and_only_within_validity() {
    let root = root1();
    let leaf = sign_leaf(&root, &web_id(), 3600, NOW).expect("leaf");
    verify_chain(&leaf.cert_pem, &[], &[&root.cert_pem], NOW).expect("verifies now");
    verify_chain(&leaf.cert_pem, &[], &[&root.cert_pem], leaf.not_after_unix)
        .expect("not_after is inclusive");

    // An unrelated root is not trusted: with another name the issuer is unknown; with the same
    // trust domain and common name (same subject DN) the name matches but the signature does not.
    let stranger = new_root("xyz.tribune", "Other CA", 365 * DAY, NOW).expect("stranger root");
    assert!(matches!(
        chain_error(verify_chain(&leaf.cert_pem, &[], &[&stranger.cert_pem], NOW)),
        webpki::Error::UnknownIssuer
    ));
    let other = new_root(TD, "Tribune CA 1", 365 * DAY, NOW).expect("other root");
    assert!(matches!(
        chain_error(verify_chain(&leaf.cert_pem, &[], &[&other.cert_pem], NOW)),
        webpki::Error::InvalidSignatureForPublicKey
    ));
    // But trusting both works.
    verify_chain(&leaf.cert_pem, &[], &[&other.cert_pem, &root.cert_pem], NOW).expect("one of the roots");

    // Expired one second after not_after; not yet valid before not_before.
    assert!(matches!(
        chain_error(verify_chain(
            &leaf.cert_pem,
            &[],
            &[&root.cert_pem],
            leaf.not_after_unix + 1
        )),
        webpki::Error::CertExpired { .. }
    ));
    assert!(matches!(
        chain_error(verify_chain(
            &leaf.cert_pem,
            &[],
            &[&root.cert_pem],
            leaf.not_before_unix - 1
        )),
        webpki::Error::CertNotValidYet { .. }
    ));
}

#[test]
fn leaf_never_outlives_its_root() {
    let root = new_root(TD, "Tribune CA 1", 2 * 3600, NOW).expect("root");
    let leaf = sign_leaf(&root, &web_id(), 365 * DAY, NOW).expect("leaf");
    assert_eq!(leaf.not_after_unix, root.not_after_unix);
    assert_eq!(
        inspect(&leaf.cert_pem).expect("inspect").not_after_unix,
        root.not_after_unix
    );
    // An expired root issues nothing.
    assert!(matches!(
        sign_leaf(&root, &web_id(), 3600, root.not_after_unix),
        Err(CertError::InvalidValidity { .. })
    ));
}

#[test]
fn rotation_with_cross_signed_root() {
    let root1 = root1();
    let root2 = new_root(TD, "Tribune CA 2", 365 * DAY, NOW + 100).expect("root2");
    let x = cross_sign(&root2, &root1, NOW + 100).expect("cross-sign");
    let leaf = sign_leaf(&root2, &web_id(), 3600, NOW + 200).expect("leaf");
    let at = NOW + 300;

    // New root trusted: direct.
    verify_chain(&leaf.cert_pem, &[], &[&root2.cert_pem], at).expect("leaf -> root2");
    // Only old root trusted: fails alone, verifies through the cross-signed certificate.
    assert!(matches!(
        chain_error(verify_chain(&leaf.cert_pem, &[], &[&root1.cert_pem], at)),
        webpki::Error::UnknownIssuer
    ));
    verify_chain(&leaf.cert_pem, &[&x], &[&root1.cert_pem], at).expect("leaf -> x -> root1");
    // A peer presenting leaf + cross-signed cert as one chain PEM also works.
    let chain = format!("{}{}", leaf.cert_pem, x);
    verify_chain(&chain, &[], &[&root1.cert_pem], at).expect("chain in leaf_pem");
    // Both roots trusted (the bundle during rotation) with the intermediate: still fine.
    let bundle = format!("{}{}", root1.cert_pem, root2.cert_pem);
    verify_chain(&leaf.cert_pem, &[&x], &[&bundle], at).expect("bundle of roots");
    // Leaves of the old root keep verifying against the old root during rotation.
    let old_leaf = sign_leaf(&root1, &web_id(), 3600, at).expect("old leaf");
    verify_chain(&old_leaf.cert_pem, &[], &[&bundle], at).expect("old leaf");
    // A cross-signed cert from a different old root does not help.
    let unrelated = new_root(TD, "Tribune CA 0", 365 * DAY, NOW).expect("unrelated");
    let x_bad = cross_sign(&root2, &unrelated, NOW).expect("cross-sign by unrelated");
    assert!(verify_chain(&leaf.cert_pem, &[&x_bad], &[&root1.cert_pem], at).is_err());

    // The cross-signed certificate: root2's subject, key and SKI; root1 as issuer; CA.
    let (x_der, r1_der, r2_der) = (der_of(&x), der_of(&root1.cert_pem), der_of(&root2.cert_pem));
    let (xc, r1, r2) = (parse(&x_der), parse(&r1_der), parse(&r2_der));
    assert_eq!(xc.subject().as_raw(), r2.subject().as_raw());
    assert_eq!(xc.issuer().as_raw(), r1.subject().as_raw());
    assert_eq!(xc.public_key().raw, r2.public_key().raw);
    assert_eq!(ski(&xc), ski(&r2));
    assert_eq!(aki(&xc), ski(&r1));
    xc.verify_signature(Some(r1.public_key()))
        .expect("signed by root1");
    let xi = inspect(&x).expect("inspect x");
    assert!(xi.is_ca);
    assert_eq!(xi.uri_sans, ["spiffe://abc.tribune"]);
    assert_eq!(xi.not_before_unix, root2.not_before_unix);
    // root2 lives 100 s longer than root1: clipped to root1's not_after.
    assert_eq!(xi.not_after_unix, root1.not_after_unix);
    assert!(root2.not_after_unix > root1.not_after_unix);

    // Serials are distinct and positive.
    let serials = [
        &root1.serial_hex,
        &root2.serial_hex,
        &xi.serial_hex,
        &leaf.serial_hex,
    ];
    for (i, a) in serials.iter().enumerate() {
        for b in &serials[i + 1..] {
            assert_ne!(a, b);
        }
    }
    for der in [&x_der, &r1_der, &r2_der, &der_of(&leaf.cert_pem)] {
        let c = parse(der);
        assert!(
            c.raw_serial()[0] & 0x80 == 0 && c.raw_serial()[0] != 0,
            "positive, minimal"
        );
    }
}

#[test]
fn cross_sign_rejects_bad_inputs() {
    let root1 = root1();
    let same_subject = new_root(TD, "Tribune CA 1", 365 * DAY, NOW).expect("root");
    assert!(matches!(
        cross_sign(&same_subject, &root1, NOW),
        Err(CertError::InvalidArgument { .. })
    ));
    let root2 = new_root(TD, "Tribune CA 2", 365 * DAY, NOW).expect("root2");
    assert!(matches!(
        cross_sign(&root2, &root1, root1.not_after_unix),
        Err(CertError::InvalidValidity { .. })
    ));
    let mut wrong_key = root1.clone();
    wrong_key.key_pem = root2.key_pem.clone();
    assert!(matches!(
        cross_sign(&root2, &wrong_key, NOW),
        Err(CertError::KeyMismatch { .. })
    ));
}

#[test]
fn inspect_round_trips_what_was_asked() {
    let root = root1();
    let id = service_spiffe_id(TD, "eu-west", "payments");
    let leaf = sign_leaf(&root, &id, 7200, NOW).expect("leaf");
    let info = inspect(&leaf.cert_pem).expect("inspect");
    assert_eq!(info.serial_hex, leaf.serial_hex);
    assert_eq!(info.subject, "CN=payments");
    assert_eq!(info.issuer, "CN=Tribune CA 1");
    assert_eq!(info.uri_sans, [id]);
    assert!(info.dns_sans.is_empty());
    assert!(!info.is_ca);
    assert_eq!(info.not_before_unix, leaf.not_before_unix);
    assert_eq!(info.not_after_unix, leaf.not_after_unix);
    assert_eq!(info.fingerprint_sha256.len(), 64);
    assert_ne!(info.fingerprint_sha256, root.id);

    let rinfo = inspect(&root.cert_pem).expect("inspect root");
    assert_eq!(
        (
            rinfo.serial_hex.as_str(),
            rinfo.subject.as_str(),
            rinfo.issuer.as_str()
        ),
        (root.serial_hex.as_str(), "CN=Tribune CA 1", "CN=Tribune CA 1")
    );
    assert_eq!(
        (rinfo.not_before_unix, rinfo.not_after_unix),
        (root.not_before_unix, root.not_after_unix)
    );
    assert_eq!(rinfo.fingerprint_sha256, root.id);
}

#[test]
fn serial_hex_has_no_leading_zero_byte_and_matches_inspect_and_der() {
    let root = root1();
    let mut all = vec![root.serial_hex.clone()];
    for i in 0..200 {
        let leaf =
            sign_leaf(&root, &service_spiffe_id(TD, "dc1", &format!("svc{i}")), 600, NOW).expect("leaf");
        let info = inspect(&leaf.cert_pem).expect("inspect");
        assert_eq!(leaf.serial_hex, info.serial_hex);
        // Same as x509-parser's rendering of the raw DER INTEGER bytes without colons (which is
        // also what Envoy prints), and as a nibble-stripping big-integer rendering.
        let der = der_of(&leaf.cert_pem);
        let cert = parse(&der);
        assert_eq!(leaf.serial_hex, cert.raw_serial_as_string().replace(':', ""));
        assert_eq!(leaf.serial_hex, format!("{:x}", cert.serial));
        assert_eq!(leaf.serial_hex.len(), 32);
        assert!(!leaf.serial_hex.starts_with("00") && !leaf.serial_hex.starts_with('0'));
        assert!(
            leaf.serial_hex
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        all.push(leaf.serial_hex);
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "serials are unique");
}

#[test]
fn sign_leaf_rejects_bad_requests() {
    let root = root1();
    for bad in [
        "web",
        "spiffe://abc.tribune",
        "spiffe://abc.tribune/",
        "spiffe://abc.tribune/a//b",
        "spiffe://ABC/x",
    ] {
        assert!(
            matches!(
                sign_leaf(&root, bad, 3600, NOW),
                Err(CertError::InvalidSpiffeId { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        sign_leaf(
            &root,
            &service_spiffe_id("other.tribune", "dc1", "web"),
            3600,
            NOW
        ),
        Err(CertError::TrustDomainMismatch { .. })
    ));
    assert!(matches!(
        sign_leaf(&root, &web_id(), 0, NOW),
        Err(CertError::InvalidValidity { .. })
    ));
    let mut broken = root.clone();
    broken.key_pem = root1().key_pem;
    assert!(matches!(
        sign_leaf(&broken, &web_id(), 3600, NOW),
        Err(CertError::KeyMismatch { .. })
    ));
    broken.key_pem = "not a key".to_owned();
    assert!(matches!(
        sign_leaf(&broken, &web_id(), 3600, NOW),
        Err(CertError::Key { .. })
    ));
    // A leaf is not a CA: it cannot be used as a root to sign.
    let leaf = sign_leaf(&root, &web_id(), 3600, NOW).expect("leaf");
    let fake_root = RootCa {
        cert_pem: leaf.cert_pem.clone(),
        key_pem: leaf.key_pem.clone(),
        ..root.clone()
    };
    assert!(matches!(
        sign_leaf(&fake_root, &web_id(), 3600, NOW),
        Err(CertError::Parse { .. })
    ));
}

#[test]
fn new_root_rejects_bad_requests() {
    assert!(matches!(
        new_root("", "CA", DAY, NOW),
        Err(CertError::InvalidTrustDomain { .. })
    ));
    assert!(matches!(
        new_root("Abc.tribune", "CA", DAY, NOW),
        Err(CertError::InvalidTrustDomain { .. })
    ));
    assert!(matches!(
        new_root(TD, " ", DAY, NOW),
        Err(CertError::InvalidArgument { .. })
    ));
    assert!(matches!(
        new_root(TD, "CA", 0, NOW),
        Err(CertError::InvalidValidity { .. })
    ));
    assert!(matches!(
        new_root(TD, "CA", i64::MAX, NOW),
        Err(CertError::InvalidValidity { .. })
    ));
}

#[test]
fn inspect_and_verify_reject_garbage() {
    let root = root1();
    assert!(matches!(inspect("hello"), Err(CertError::Pem { .. })));
    assert!(
        matches!(inspect(&root.key_pem), Err(CertError::Pem { .. })),
        "a key is not a certificate"
    );
    let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(inspect(bogus), Err(CertError::Parse { .. })));
    let leaf = sign_leaf(&root, &web_id(), 3600, NOW).expect("leaf");
    assert!(matches!(
        verify_chain(&leaf.cert_pem, &[], &[], NOW),
        Err(CertError::InvalidArgument { .. })
    ));
    assert!(matches!(
        verify_chain(&leaf.cert_pem, &[], &[&root.cert_pem], -1),
        Err(CertError::InvalidArgument { .. })
    ));
    // A root certificate is not acceptable as an end-entity certificate.
    assert!(verify_chain(&root.cert_pem, &[], &[&root.cert_pem], NOW).is_err());
    // Error messages carry context.
    let stranger = new_root("xyz.tribune", "Other CA", DAY, NOW).expect("stranger");
    let msg = verify_chain(&leaf.cert_pem, &[], &[&stranger.cert_pem], NOW)
        .expect_err("unknown issuer")
        .to_string();
    assert!(
        msg.contains("server auth") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
}

#[test]
fn debug_output_redacts_private_keys() {
    let root = root1();
    let leaf = sign_leaf(&root, &web_id(), 3600, NOW).expect("leaf");
    for dbg in [format!("{root:?}"), format!("{leaf:?}")] {
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
    }
}

#[test]
fn pem_outputs_are_single_blocks() {
    let root = root1();
    let leaf = sign_leaf(&root, &web_id(), 3600, NOW).expect("leaf");
    for (pem, label) in [
        (&root.cert_pem, "CERTIFICATE"),
        (&leaf.cert_pem, "CERTIFICATE"),
        (&leaf.key_pem, "PRIVATE KEY"),
    ] {
        let blocks: Vec<_> = Pem::iter_from_buffer(pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("PEM");
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, label);
    }
}

/// Signing throughput on one thread: `cargo test -p tribune-certs --release -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn bench_sign_leaf_rate() {
    const N: u32 = 2000;
    let root = root1();
    let ids: Vec<String> = (0..N)
        .map(|i| service_spiffe_id(TD, "dc1", &format!("svc{i}")))
        .collect();
    let start = Instant::now();
    for id in &ids {
        let leaf = sign_leaf(&root, id, 3600, NOW).expect("leaf");
        std::hint::black_box(leaf);
    }
    let elapsed = start.elapsed();
    println!(
        "sign_leaf: {N} leaves in {:.3} s = {:.0} leaves/s on one thread ({:.1} µs each)",
        elapsed.as_secs_f64(),
        f64::from(N) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / f64::from(N)
    );
}
