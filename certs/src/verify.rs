//! Chain verification with rustls-webpki (ring backend): [`verify_chain`].

use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::{CertError, pem};

/// Verifies that `leaf_pem` chains to one of `roots_pem` at `now_unix`, for both server-auth and
/// client-auth usage, using `intermediates_pem` (possibly empty) for path building.
///
/// * `leaf_pem`: the first certificate is the leaf; any further certificates in it (a chain as a
///   peer would present it) are used as intermediates too.
/// * `intermediates_pem`, `roots_pem`: each string may hold one or several certificates.
///   Roots are trust anchors: only their subject, key and name constraints matter (webpki does
///   not check an anchor's own validity period).
///
/// EKU semantics are webpki's: a certificate with an EKU extension must list the usage; one
/// without EKU is acceptable. No name check is done: SPIFFE identities are checked by the caller
/// through the URI SAN (see [`crate::inspect`]).
pub fn verify_chain(
    leaf_pem: &str,
    intermediates_pem: &[&str],
    roots_pem: &[&str],
    now_unix: i64,
) -> Result<(), CertError> {
    let mut leaf_chain = pem::cert_ders(leaf_pem, "leaf")?
        .into_iter()
        .map(CertificateDer::from);
    let leaf = leaf_chain.next().ok_or_else(|| CertError::Pem {
        what: "leaf".to_owned(),
        reason: "no certificate".to_owned(),
    })?;
    let mut intermediates: Vec<CertificateDer<'static>> = leaf_chain.collect();
    for (i, p) in intermediates_pem.iter().enumerate() {
        intermediates.extend(
            pem::cert_ders(p, &format!("intermediate #{i}"))?
                .into_iter()
                .map(CertificateDer::from),
        );
    }

    let mut root_ders = Vec::new();
    for (i, p) in roots_pem.iter().enumerate() {
        for der in pem::cert_ders(p, &format!("root #{i}"))? {
            root_ders.push((i, CertificateDer::from(der)));
        }
    }
    if root_ders.is_empty() {
        return Err(CertError::InvalidArgument {
            what: "roots_pem",
            reason: "no trusted roots given".to_owned(),
        });
    }
    let anchors = root_ders
        .iter()
        .map(|(i, der)| {
            webpki::anchor_from_trusted_cert(der).map_err(|source| CertError::BadCertificate {
                what: format!("root #{i}"),
                source,
            })
        })
        .collect::<Result<Vec<TrustAnchor<'_>>, _>>()?;

    let now = u64::try_from(now_unix).map_err(|_| CertError::InvalidArgument {
        what: "now_unix",
        reason: format!("{now_unix} is before the Unix epoch"),
    })?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now));

    let ee = EndEntityCert::try_from(&leaf).map_err(|source| CertError::BadCertificate {
        what: "leaf".to_owned(),
        source,
    })?;
    for (usage_name, usage) in [
        ("server auth", KeyUsage::server_auth()),
        ("client auth", KeyUsage::client_auth()),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            usage,
            None,
            None,
        )
        .map_err(|source| CertError::ChainInvalid {
            usage: usage_name,
            source,
        })?;
    }
    Ok(())
}
