//! Intermediate CAs, for datacenters that do not own the root: the secondary makes a key and a
//! CSR ([`intermediate_request`]), the owner of the root signs it ([`sign_intermediate`]), and
//! the secondary pairs the certificate with its key ([`signing_ca`]) to sign leaves with
//! [`crate::sign_leaf`]. The root's key never leaves its owner.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, IsCa,
    SanType, SerialNumber,
};

use crate::inspect::cert_info;
use crate::root::{CA_KEY_USAGES, load_ca, load_key, require_ca, uri_san};
use crate::serial::{random_serial, serial_hex, sha256_hex};
use crate::spiffe::validate_trust_domain;
use crate::validity::Window;
use crate::{CertError, RootCa, pem};

/// A CSR for an intermediate CA and the key it was made with (kept by the requester).
///
/// `Debug` prints everything except the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct IntermediateRequest {
    /// The PKCS#10 request, PEM.
    pub csr_pem: String,
    /// Its private key: PKCS#8 PEM, ECDSA P-256.
    pub key_pem: String,
}

impl fmt::Debug for IntermediateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntermediateRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// A fresh ECDSA P-256 key and a CSR for it: subject `CN=<common_name>`, URI SAN
/// `spiffe://<trust_domain>`.
///
/// Errors: invalid trust domain or common name, or key generation failed.
pub fn intermediate_request(trust_domain: &str, common_name: &str) -> Result<IntermediateRequest, CertError> {
    validate_trust_domain(trust_domain)?;
    if common_name.trim().is_empty() || common_name.len() > 64 {
        return Err(CertError::InvalidArgument {
            what: "common name",
            reason: format!("{common_name:?} must be non-blank and at most 64 bytes"),
        });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
    let key = crate::root::new_key("intermediate CA key")?;
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|source| CertError::Generate {
            what: "intermediate CSR",
            source,
        })?;
    Ok(IntermediateRequest {
        csr_pem: csr,
        key_pem: key.serialize_pem(),
    })
}

/// Signs the intermediate CA that `csr_pem` asks for, under `root`: the CSR's subject and public
/// key, `CA:TRUE` with path length 0 (it signs leaves only), CA key usages, the root's trust
/// domain as its only URI SAN, valid from `now_unix - 60` for `ttl_secs` but never past the
/// root. Returns the certificate, PEM.
///
/// Only the CSR's subject and key are taken from it: everything a CA decides (constraints,
/// usages, names, validity) is set here. Errors: a CSR that does not parse or whose signature
/// does not verify, one that asks for another trust domain than the root's, an expired root.
pub fn sign_intermediate(
    root: &RootCa,
    csr_pem: &str,
    ttl_secs: i64,
    now_unix: i64,
) -> Result<String, CertError> {
    const WHAT: &str = "intermediate CA";
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CertError::Parse {
        what: "intermediate CSR".to_owned(),
        reason: e.to_string(),
    })?;
    let ca = load_ca(root, "root CA")?;
    let asked: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            SanType::URI(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        })
        .collect();
    let Some(td) = ca.trust_domains.first() else {
        return Err(CertError::InvalidArgument {
            what: "root CA",
            reason: "names no trust domain".to_owned(),
        });
    };
    let wanted = format!("spiffe://{td}");
    if asked != [wanted.clone()] {
        return Err(CertError::TrustDomainMismatch {
            spiffe_id: asked.join(","),
            root_trust_domain: td.clone(),
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

    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = window.to_datetimes(WHAT)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.distinguished_name = csr.params.distinguished_name.clone();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = CA_KEY_USAGES.to_vec();
    params.subject_alt_names = vec![uri_san(&wanted)?];
    params.use_authority_key_identifier_extension = true;
    let signed = CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    };
    let cert = signed
        .signed_by(&ca.issuer)
        .map_err(|source| CertError::Generate { what: WHAT, source })?;
    Ok(cert.pem())
}

/// A CA certificate and its key, ready to sign leaves: what a secondary keeps once its
/// intermediate is signed. Checks that the certificate is a CA and that the key is its own.
pub fn signing_ca(cert_pem: &str, key_pem: &str) -> Result<RootCa, CertError> {
    const WHAT: &str = "intermediate CA";
    let der = pem::first_cert_der(cert_pem, WHAT)?;
    let cert = pem::parse_x509(&der, WHAT)?;
    require_ca(&cert, WHAT)?;
    load_key(key_pem, &cert, WHAT)?;
    let info = cert_info(&cert, &der, WHAT)?;
    Ok(RootCa {
        id: sha256_hex(&der),
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
        serial_hex: serial_hex(cert.raw_serial()),
        not_before_unix: info.not_before_unix,
        not_after_unix: info.not_after_unix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{inspect, new_root, service_spiffe_id, sign_leaf, trust_domain, verify_chain};

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_secondary_signs_leaves_that_chain_to_the_primary_root() {
        let td = trust_domain("8f14e45f-ceea-467f-a0e6-7d2a1e8d2c11");
        let root = new_root(&td, "Tribune CA 1", 10 * 365 * 86_400, NOW).unwrap();
        let req = intermediate_request(&td, "Tribune dc2 CA").unwrap();
        let cert = sign_intermediate(&root, &req.csr_pem, 365 * 86_400, NOW).unwrap();
        let ca = signing_ca(&cert, &req.key_pem).unwrap();
        assert_eq!(inspect(&cert).unwrap().uri_sans, [format!("spiffe://{td}")]);

        let id = service_spiffe_id(&td, "dc2", "api");
        let leaf = sign_leaf(&ca, &id, 3_600, NOW).unwrap();
        verify_chain(&leaf.cert_pem, &[&ca.cert_pem], &[&root.cert_pem], NOW).unwrap();
        assert!(
            verify_chain(&leaf.cert_pem, &[], &[&root.cert_pem], NOW).is_err(),
            "without the intermediate the leaf does not verify"
        );
        // Path length 0: the intermediate cannot make more CAs.
        let other = intermediate_request(&td, "Tribune dc3 CA").unwrap();
        let sub = sign_intermediate(&ca, &other.csr_pem, 86_400, NOW).unwrap();
        let sub = signing_ca(&sub, &other.key_pem).unwrap();
        let leaf = sign_leaf(&sub, &id, 3_600, NOW).unwrap();
        assert!(
            verify_chain(
                &leaf.cert_pem,
                &[&sub.cert_pem, &ca.cert_pem],
                &[&root.cert_pem],
                NOW
            )
            .is_err()
        );
    }

    #[test]
    fn the_root_decides_the_trust_domain_and_the_key_stays_with_its_owner() {
        let td = trust_domain("8f14e45f-ceea-467f-a0e6-7d2a1e8d2c11");
        let root = new_root(&td, "Tribune CA 1", 86_400, NOW).unwrap();
        let foreign = intermediate_request(&trust_domain("other"), "x").unwrap();
        assert!(matches!(
            sign_intermediate(&root, &foreign.csr_pem, 3_600, NOW),
            Err(CertError::TrustDomainMismatch { .. })
        ));
        assert!(matches!(
            sign_intermediate(&root, "not a csr", 3_600, NOW),
            Err(CertError::Parse { .. })
        ));
        let req = intermediate_request(&td, "Tribune dc2 CA").unwrap();
        let cert = sign_intermediate(&root, &req.csr_pem, 10 * 86_400, NOW).unwrap();
        let other = intermediate_request(&td, "y").unwrap();
        assert!(matches!(
            signing_ca(&cert, &other.key_pem),
            Err(CertError::KeyMismatch { .. })
        ));
        let ca = signing_ca(&cert, &req.key_pem).unwrap();
        assert_eq!(ca.not_after_unix, root.not_after_unix, "never outlives the root");
    }
}
