//! [`inspect`]: the facts about a PEM certificate that tests, the CLI and status pages want.

use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::serial::{serial_hex, sha256_hex};
use crate::{CertError, pem};

/// What [`inspect`] reports about a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Serial number, in the canonical format of [`crate::RootCa::serial_hex`]: lower-case hex of
    /// the magnitude bytes, no `:`, no leading `00` bytes (as Envoy's admin `/certs` prints it).
    pub serial_hex: String,
    /// Subject DN in RFC 4514-ish form as x509-parser prints it, e.g. `CN=Tribune CA 1`.
    pub subject: String,
    /// Issuer DN, same format as `subject`.
    pub issuer: String,
    /// URI subject alternative names, in certificate order.
    pub uri_sans: Vec<String>,
    /// DNS subject alternative names, in certificate order.
    pub dns_sans: Vec<String>,
    /// Whether basicConstraints says `CA:TRUE`.
    pub is_ca: bool,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of validity (inclusive), Unix seconds.
    pub not_after_unix: i64,
    /// Lower-case hex SHA-256 of the certificate DER, no `:` (equals [`crate::RootCa::id`] for roots).
    pub fingerprint_sha256: String,
}

/// Inspects the first certificate in `cert_pem` (further PEM blocks are ignored).
///
/// ```
/// let root = tribune_certs::new_root("abc.tribune", "Tribune CA 1", 3600, 1_700_000_000)?;
/// let info = tribune_certs::inspect(&root.cert_pem)?;
/// assert_eq!(info.subject, "CN=Tribune CA 1");
/// assert_eq!(info.uri_sans, ["spiffe://abc.tribune"]);
/// assert_eq!(info.fingerprint_sha256, root.id);
/// # Ok::<(), tribune_certs::CertError>(())
/// ```
pub fn inspect(cert_pem: &str) -> Result<CertInfo, CertError> {
    let der = pem::first_cert_der(cert_pem, "certificate")?;
    let cert = pem::parse_x509(&der, "certificate")?;
    cert_info(&cert, &der, "certificate")
}

/// [`CertInfo`] of an already parsed certificate whose DER is `der`.
pub(crate) fn cert_info(cert: &X509Certificate<'_>, der: &[u8], what: &str) -> Result<CertInfo, CertError> {
    let parse_err = |e: x509_parser::error::X509Error| CertError::Parse {
        what: what.to_owned(),
        reason: e.to_string(),
    };
    let mut uri_sans = Vec::new();
    let mut dns_sans = Vec::new();
    if let Some(san) = cert.subject_alternative_name().map_err(parse_err)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uri_sans.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => dns_sans.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    let is_ca = cert
        .basic_constraints()
        .map_err(parse_err)?
        .is_some_and(|bc| bc.value.ca);
    let validity = cert.validity();
    Ok(CertInfo {
        serial_hex: serial_hex(cert.raw_serial()),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        uri_sans,
        dns_sans,
        is_ca,
        not_before_unix: validity.not_before.timestamp(),
        not_after_unix: validity.not_after.timestamp(),
        fingerprint_sha256: sha256_hex(der),
    })
}
