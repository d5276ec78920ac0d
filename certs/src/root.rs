//! Root CAs: creation ([`new_root`]), cross-signing for rotation ([`cross_sign`]), and loading a
//! stored [`RootCa`] back into an rcgen issuer.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

use crate::inspect::cert_info;
use crate::serial::{random_serial, serial_hex, sha256_hex};
use crate::spiffe::{trust_domain_of_uri, validate_trust_domain};
use crate::validity::Window;
use crate::{CertError, pem};

/// Key usages of every CA certificate this crate makes (roots and cross-signed roots).
pub(crate) const CA_KEY_USAGES: [KeyUsagePurpose; 3] = [
    KeyUsagePurpose::KeyCertSign,
    KeyUsagePurpose::CrlSign,
    KeyUsagePurpose::DigitalSignature,
];

/// Upper bound on a common name (X.509 `ub-common-name`).
const MAX_COMMON_NAME_LEN: usize = 64;

/// A root CA: certificate and private key (PEM), as kept in replicated state.
///
/// `Debug` prints everything except the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCa {
    /// Lower-case hex SHA-256 fingerprint of the certificate DER, without `:`.
    pub id: String,
    /// The self-signed root certificate, PEM.
    pub cert_pem: String,
    /// The root's private key: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), ECDSA P-256.
    pub key_pem: String,
    /// Serial number: lower-case hex of the magnitude bytes, no `:`, no leading `00` bytes
    /// (see the [crate docs](crate#serial-numbers)); equals [`crate::inspect`]'s `serial_hex`.
    pub serial_hex: String,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of validity (inclusive), Unix seconds.
    pub not_after_unix: i64,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("id", &self.id)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .field("serial_hex", &self.serial_hex)
            .field("not_before_unix", &self.not_before_unix)
            .field("not_after_unix", &self.not_after_unix)
            .finish()
    }
}

/// A new self-signed root CA.
///
/// ECDSA P-256; basicConstraints `CA:TRUE` without path length constraint; key usage
/// keyCertSign + cRLSign + digitalSignature; subject `CN=<common_name>` (nothing else); a single
/// URI SAN `spiffe://<trust_domain>`; a random positive 128-bit serial; valid from
/// `now_unix - 60` (clock skew) to `now_unix + ttl_secs`.
///
/// Errors: invalid trust domain, empty or over-long (> 64 bytes) common name, `ttl_secs <= 0`,
/// a window outside 1970..=9999, or a failure of the RNG.
pub fn new_root(
    trust_domain: &str,
    common_name: &str,
    ttl_secs: i64,
    now_unix: i64,
) -> Result<RootCa, CertError> {
    const WHAT: &str = "root CA";
    validate_trust_domain(trust_domain)?;
    if common_name.trim().is_empty() || common_name.len() > MAX_COMMON_NAME_LEN {
        return Err(CertError::InvalidArgument {
            what: "common name",
            reason: format!("{common_name:?} must be non-blank and at most {MAX_COMMON_NAME_LEN} bytes"),
        });
    }
    let (not_before, not_after) = Window::from_now(now_unix, ttl_secs, WHAT)?;
    let window = Window::new(not_before, not_after, WHAT)?;
    let serial = random_serial()?;

    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = window.to_datetimes(WHAT)?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = CA_KEY_USAGES.to_vec();
    params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];

    let key = new_key("root CA key")?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertError::Generate { what: WHAT, source })?;

    Ok(RootCa {
        id: sha256_hex(cert.der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        serial_hex: serial_hex(&serial),
        not_before_unix: window.not_before,
        not_after_unix: window.not_after,
    })
}

/// The cross-signed certificate for root rotation, PEM.
///
/// Same subject, public key, subject key identifier and URI SANs as `new_root`'s certificate, but
/// issued and signed by `old_root`, so a peer that trusts only the old root can verify
/// `leaf → cross-signed → old root`. `CA:TRUE` (unconstrained), CA key usages, a fresh random
/// serial. Validity: `new_root`'s window with `not_after` clipped to `old_root`'s `not_after`.
///
/// Errors: `old_root` has expired at `now_unix`, the clipped window is empty, both roots have
/// the same subject (the cross-signed certificate would look self-issued), a key does not match
/// its certificate, or unparsable input.
pub fn cross_sign(new_root: &RootCa, old_root: &RootCa, now_unix: i64) -> Result<String, CertError> {
    const WHAT: &str = "cross-signed certificate";
    let new_der = pem::first_cert_der(&new_root.cert_pem, "new root CA")?;
    let new_cert = pem::parse_x509(&new_der, "new root CA")?;
    let new_key = load_key(&new_root.key_pem, &new_cert, "new root CA")?;
    require_ca(&new_cert, "new root CA")?;
    let old = load_ca(old_root, "old root CA")?;

    if old.not_after_unix <= now_unix {
        return Err(CertError::InvalidValidity {
            what: WHAT,
            reason: format!("old root CA expired at {} (now {now_unix})", old.not_after_unix),
        });
    }
    if new_cert.subject().as_raw() == old.subject_der.as_slice() {
        return Err(CertError::InvalidArgument {
            what: "new root CA",
            reason: format!("has the same subject as the old root ({})", new_cert.subject()),
        });
    }
    let validity = new_cert.validity();
    let window = Window::new(
        validity.not_before.timestamp(),
        validity.not_after.timestamp().min(old.not_after_unix),
        WHAT,
    )?;

    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = window.to_datetimes(WHAT)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.distinguished_name = dn_from_x509(new_cert.subject(), "new root CA")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = CA_KEY_USAGES.to_vec();
    params.subject_alt_names = cert_info(&new_cert, &new_der, "new root CA")?
        .uri_sans
        .iter()
        .map(|uri| uri_san(uri))
        .collect::<Result<_, _>>()?;
    if let Some(ski) = subject_key_id(&new_cert) {
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski.to_vec());
    }
    params.use_authority_key_identifier_extension = true;

    let cert = params
        .signed_by(&new_key, &old.issuer)
        .map_err(|source| CertError::Generate { what: WHAT, source })?;
    Ok(cert.pem())
}

/// A stored root, ready to issue certificates.
pub(crate) struct LoadedCa {
    /// rcgen issuer: the root's subject DN (byte-identical), key identifier and key.
    pub issuer: Issuer<'static, KeyPair>,
    /// Trust domains named by the root's `spiffe://<td>` URI SANs.
    pub trust_domains: Vec<String>,
    /// The root certificate's `notAfter`, Unix seconds.
    pub not_after_unix: i64,
    /// DER of the root's subject name.
    pub subject_der: Vec<u8>,
}

/// Loads a [`RootCa`]: parses the certificate, checks it is a CA and that the key matches it.
pub(crate) fn load_ca(root: &RootCa, what: &'static str) -> Result<LoadedCa, CertError> {
    let der = pem::first_cert_der(&root.cert_pem, what)?;
    let cert = pem::parse_x509(&der, what)?;
    require_ca(&cert, what)?;
    let key = load_key(&root.key_pem, &cert, what)?;
    let info = cert_info(&cert, &der, what)?;
    let trust_domains = info
        .uri_sans
        .iter()
        .filter_map(|uri| trust_domain_of_uri(uri))
        .map(str::to_owned)
        .collect();
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(der.as_slice()), key).map_err(|e| {
        CertError::Parse {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    })?;
    Ok(LoadedCa {
        issuer,
        trust_domains,
        not_after_unix: info.not_after_unix,
        subject_der: cert.subject().as_raw().to_vec(),
    })
}

/// Loads a PKCS#8 P-256 key and checks it belongs to `cert`.
pub(crate) fn load_key(
    key_pem: &str,
    cert: &X509Certificate<'_>,
    what: &'static str,
) -> Result<KeyPair, CertError> {
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &PKCS_ECDSA_P256_SHA256)
        .map_err(|source| CertError::Key { what, source })?;
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(CertError::KeyMismatch { what });
    }
    Ok(key)
}

pub(crate) fn require_ca(cert: &X509Certificate<'_>, what: &str) -> Result<(), CertError> {
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| CertError::Parse {
            what: what.to_owned(),
            reason: e.to_string(),
        })?
        .is_some_and(|bc| bc.value.ca);
    if is_ca {
        Ok(())
    } else {
        Err(CertError::Parse {
            what: what.to_owned(),
            reason: "not a CA certificate (no CA:TRUE)".to_owned(),
        })
    }
}

fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
}

/// A fresh ECDSA P-256 key: every key this crate makes.
pub(crate) fn new_key(what: &'static str) -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CertError::Generate { what, source })
}

pub(crate) fn uri_san(uri: &str) -> Result<SanType, CertError> {
    let ia5 = uri
        .to_owned()
        .try_into()
        .map_err(|_| CertError::InvalidArgument {
            what: "URI SAN",
            reason: format!("{uri:?} is not an IA5 (ASCII) string"),
        })?;
    Ok(SanType::URI(ia5))
}

/// Rebuilds an rcgen DN from a parsed name, keeping each attribute's string type so the DER
/// re-encodes byte-for-byte (single-attribute RDNs only, like every name this crate creates).
fn dn_from_x509(name: &X509Name<'_>, what: &str) -> Result<DistinguishedName, CertError> {
    let err = |reason: &str| CertError::Parse {
        what: what.to_owned(),
        reason: format!("subject DN: {reason}"),
    };
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(err("multi-valued or empty RDN"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| err("attribute OID too large"))?
            .collect();
        let value = attr.attr_value();
        let text = || std::str::from_utf8(value.data).map_err(|_| err("attribute is not UTF-8"));
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text()?.try_into().map_err(|_| err("bad PrintableString"))?)
            }
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|_| err("bad IA5String"))?),
            _ => return Err(err("unsupported attribute string type")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}
