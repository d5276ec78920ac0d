//! Leaf (workload) certificates for SPIFFE IDs: [`sign_leaf`].

use std::fmt;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SerialNumber,
};
use serde::{Deserialize, Serialize};

use crate::root::{load_ca, uri_san};
use crate::serial::{random_serial, serial_hex};
use crate::spiffe::parse_workload_id;
use crate::validity::Window;
use crate::{CertError, RootCa};

/// A workload certificate and its key.
///
/// `Debug` prints everything except the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    /// The leaf certificate only (no chain), PEM.
    pub cert_pem: String,
    /// The leaf's private key: PKCS#8 PEM, ECDSA P-256.
    pub key_pem: String,
    /// Serial number, canonical format (see [`RootCa::serial_hex`]).
    pub serial_hex: String,
    /// The SPIFFE ID, the certificate's only SAN.
    pub spiffe_id: String,
    /// [`RootCa::id`] of the root that signed it.
    pub root_id: String,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of validity (inclusive), Unix seconds.
    pub not_after_unix: i64,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .field("serial_hex", &self.serial_hex)
            .field("spiffe_id", &self.spiffe_id)
            .field("root_id", &self.root_id)
            .field("not_before_unix", &self.not_before_unix)
            .field("not_after_unix", &self.not_after_unix)
            .finish()
    }
}

/// A leaf certificate for `spiffe_id`, signed by `root`, with a fresh ECDSA P-256 key.
///
/// The SPIFFE ID is the only SAN (a URI SAN; no DNS SAN); subject `CN=<last path segment>`;
/// basicConstraints present with `CA:FALSE`; key usage digitalSignature + keyEncipherment;
/// extended key usage serverAuth + clientAuth; authority key identifier = the root's subject key
/// identifier; random positive serial; valid from `now_unix - 60` to `now_unix + ttl_secs`, but
/// never after the root's `notAfter`. The issuer DN is byte-identical to the root's subject DN.
///
/// Errors: malformed SPIFFE ID (it must have a non-empty path), SPIFFE ID outside the root's
/// trust domain (the root's `spiffe://<td>` URI SAN), root expired at `now_unix`, `ttl_secs <= 0`,
/// root key not matching the root certificate, unparsable root.
pub fn sign_leaf(root: &RootCa, spiffe_id: &str, ttl_secs: i64, now_unix: i64) -> Result<Leaf, CertError> {
    const WHAT: &str = "leaf certificate";
    let id = parse_workload_id(spiffe_id)?;
    let ca = load_ca(root, "root CA")?;
    if !ca.trust_domains.is_empty() && !ca.trust_domains.iter().any(|td| td == id.trust_domain) {
        return Err(CertError::TrustDomainMismatch {
            spiffe_id: spiffe_id.to_owned(),
            root_trust_domain: ca.trust_domains.join(","),
        });
    }
    if ca.not_after_unix <= now_unix {
        return Err(CertError::InvalidValidity {
            what: WHAT,
            reason: format!("root CA expired at {} (now {now_unix})", ca.not_after_unix),
        });
    }
    let (not_before, not_after) = Window::from_now(now_unix, ttl_secs, WHAT)?;
    let window = Window::new(not_before, not_after.min(ca.not_after_unix), WHAT)?;
    let serial = random_serial()?;

    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = window.to_datetimes(WHAT)?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, id.last_segment);
    params.subject_alt_names = vec![uri_san(spiffe_id)?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;

    let key = crate::root::new_key("leaf key")?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| CertError::Generate { what: WHAT, source })?;

    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        serial_hex: serial_hex(&serial),
        spiffe_id: spiffe_id.to_owned(),
        root_id: root.id.clone(),
        not_before_unix: window.not_before,
        not_after_unix: window.not_after,
    })
}
