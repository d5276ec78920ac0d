//! PEM → DER decoding of certificates and X.509 parsing, with error context.

use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;

use crate::CertError;

/// All `CERTIFICATE` blocks of `pem`, as DER, in order. Other block types (keys…) are skipped;
/// an input with no certificate at all is an error.
pub(crate) fn cert_ders(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| CertError::Pem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(CertError::Pem {
            what: what.to_owned(),
            reason: "no \"-----BEGIN CERTIFICATE-----\" block found".to_owned(),
        });
    }
    Ok(out)
}

/// The first `CERTIFICATE` block of `pem`, as DER.
pub(crate) fn first_cert_der(pem: &str, what: &str) -> Result<Vec<u8>, CertError> {
    let mut ders = cert_ders(pem, what)?;
    // `cert_ders` never returns an empty vector.
    Ok(ders.swap_remove(0))
}

/// Parses one DER certificate; trailing bytes after it are an error.
pub(crate) fn parse_x509<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, CertError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Parse {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CertError::Parse {
            what: what.to_owned(),
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}
