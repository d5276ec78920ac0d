//! [`CertError`]: everything that can go wrong in this crate, with enough context to say what failed.

/// An error from the certificate authority.
///
/// Every variant names the object it was working on (`what`), e.g. `"root certificate"`,
/// `"leaf key"` or `"intermediate #1"`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A SPIFFE ID is malformed (see <https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>).
    #[error("invalid SPIFFE ID {id:?}: {reason}")]
    InvalidSpiffeId {
        /// The offending ID.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A trust domain is malformed (must be non-empty `[a-z0-9._-]`, at most 255 bytes).
    #[error("invalid trust domain {trust_domain:?}: {reason}")]
    InvalidTrustDomain {
        /// The offending trust domain.
        trust_domain: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A leaf was requested for a SPIFFE ID outside the root's trust domain.
    #[error("SPIFFE ID {spiffe_id:?} is not in the root's trust domain {root_trust_domain:?}")]
    TrustDomainMismatch {
        /// The requested SPIFFE ID.
        spiffe_id: String,
        /// The trust domain of the root (from its `spiffe://` URI SAN).
        root_trust_domain: String,
    },
    /// An argument other than a name or a time is invalid (e.g. an empty common name).
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The requested validity window is empty, out of range, or the issuer has expired.
    #[error("invalid validity for {what}: {reason}")]
    InvalidValidity {
        /// The certificate being created.
        what: &'static str,
        /// What is wrong with the window.
        reason: String,
    },
    /// A PEM input could not be decoded, or holds no `CERTIFICATE` block.
    #[error("{what}: bad PEM: {reason}")]
    Pem {
        /// Which input.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A DER certificate could not be parsed as X.509, or lacks something this crate relies on.
    #[error("{what}: cannot parse X.509 certificate: {reason}")]
    Parse {
        /// Which certificate.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A private key could not be loaded (it must be a PKCS#8 PEM ECDSA P-256 key).
    #[error("{what}: cannot load private key (PKCS#8 PEM, ECDSA P-256 expected): {source}")]
    Key {
        /// Which key.
        what: &'static str,
        /// The underlying rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// A private key does not belong to the certificate it is stored with.
    #[error("{what}: private key does not match the certificate's public key")]
    KeyMismatch {
        /// Which certificate/key pair.
        what: &'static str,
    },
    /// Key generation or certificate signing failed.
    #[error("{what}: generation failed: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// The system random number generator failed.
    #[error("system random number generator failed while generating {what}")]
    Random {
        /// What the randomness was for.
        what: &'static str,
    },
    /// A certificate was rejected by rustls-webpki before path building (e.g. a root that
    /// cannot be a trust anchor, or a leaf that cannot be an end-entity certificate).
    #[error("{what}: rejected by webpki: {source}")]
    BadCertificate {
        /// Which certificate.
        what: String,
        /// The webpki error.
        #[source]
        source: webpki::Error,
    },
    /// The chain does not verify: unknown issuer, expired, not yet valid, bad signature, wrong EKU…
    #[error("certificate chain does not verify for {usage}: {source}")]
    ChainInvalid {
        /// `"server auth"` or `"client auth"`: the usage that was being checked.
        usage: &'static str,
        /// The webpki error (e.g. `UnknownIssuer`, `CertExpired`).
        #[source]
        source: webpki::Error,
    },
}
