//! Tribune's built-in certificate authority: X.509 roots and SPIFFE leaf certificates.
//!
//! Mesh identities are SPIFFE IDs (`spiffe://<cluster-id>.tribune/ns/default/dc/<dc>/svc/<service>`),
//! carried as the single URI SAN of short-lived ECDSA P-256 leaf certificates signed by a
//! self-signed ECDSA P-256 root.
//!
//! # What it does
//!
//! * [`new_root`] makes a self-signed root CA ([`RootCa`]: certificate + PKCS#8 key, PEM).
//! * [`sign_leaf`] issues a workload certificate ([`Leaf`]) for a SPIFFE ID under a root.
//! * [`intermediate_request`], [`sign_intermediate`] and [`signing_ca`] give a datacenter that
//!   does not own the root its own intermediate CA, signed by the root's owner from a CSR.
//! * [`sign_agent`], [`agent_request`] and [`sign_agent_csr`] issue agents' own certificates
//!   (servers and client agents, for TLS between them); [`agent_identity`] reads one back.
//! * [`cross_sign`] signs a new root's key and subject with an old root, for rotation: peers
//!   that still trust only the old root accept `leaf → cross-signed → old root`.
//! * [`verify_chain`] checks a leaf against trusted roots (rustls-webpki, ring backend), and
//!   [`inspect`] reports serial, names, SANs and validity of a PEM certificate ([`CertInfo`]).
//! * [`service_spiffe_id`] and [`trust_domain`] implement Tribune's naming scheme.
//!
//! # What it does not do
//!
//! It knows X.509 and nothing else: no Raft, storage, gRPC, networking or async runtime. Callers
//! pass the current time (`now_unix`, Unix seconds) explicitly, persist and replicate
//! [`RootCa`]s themselves, and decide when to rotate. It does not check a peer's SPIFFE ID
//! against a policy (read it from [`inspect`]'s `uri_sans`), publish CRLs, or sign CSRs for
//! service leaves: leaf keys are generated here and returned with the certificate (CSRs are for
//! intermediate CAs and client agents).
//!
//! # Serial numbers
//!
//! Issued serials are 16 random bytes with the first byte in `0x10..=0x7f`: positive, never
//! sign-padded in DER, never starting with a zero nibble. `serial_hex` ([`RootCa::serial_hex`],
//! [`Leaf::serial_hex`], [`CertInfo::serial_hex`]) is the lower-case hex of the serial's
//! magnitude bytes, without `:` and without leading `00` bytes: the same string Envoy's admin
//! `/certs` endpoint prints as `serial_number` (BoringSSL `BN_bn2hex`, lower-cased). For this
//! crate's certificates that is always exactly 32 hex digits, equal to every other common
//! rendering (x509-parser without colons, OpenSSL, Go `%x`).
//!
//! # Validity
//!
//! Certificates start 60 s before `now_unix` (clock skew) and `not_after` is inclusive (as in
//! X.509 and webpki). Leaves never outlive their root; a cross-signed root never outlives the
//! root that signed it.
//!
//! # Example
//!
//! ```
//! use tribune_certs::{new_root, service_spiffe_id, sign_leaf, trust_domain, verify_chain};
//!
//! let now = 1_700_000_000;
//! let td = trust_domain("8f14e45f-ceea-467f-a0e6-7d2a1e8d2c11");
//! let root = new_root(&td, "Tribune CA 1", 10 * 365 * 86_400, now)?;
//! let id = service_spiffe_id(&td, "dc1", "web");
//! let leaf = sign_leaf(&root, &id, 3_600, now)?;
//! assert_eq!(tribune_certs::inspect(&leaf.cert_pem)?.uri_sans, [id]);
//! verify_chain(&leaf.cert_pem, &[], &[&root.cert_pem], now)?;
//!
//! // Rotation: a peer that trusts only root 1 accepts root 2's leaves via the cross-signed cert.
//! let root2 = new_root(&td, "Tribune CA 2", 10 * 365 * 86_400, now)?;
//! let cross = tribune_certs::cross_sign(&root2, &root, now)?;
//! let leaf2 = sign_leaf(&root2, &service_spiffe_id(&td, "dc1", "api"), 3_600, now)?;
//! verify_chain(&leaf2.cert_pem, &[&cross], &[&root.cert_pem], now)?;
//! # Ok::<(), tribune_certs::CertError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod error;
mod inspect;
mod intermediate;
mod leaf;
mod pem;
mod root;
mod serial;
mod spiffe;
mod validity;
mod verify;

pub use agent::{
    AgentCert, AgentCertRequest, AgentIdentity, AgentKeyRequest, agent_identity, agent_request, sign_agent,
    sign_agent_csr,
};
pub use error::CertError;
pub use inspect::{CertInfo, inspect};
pub use intermediate::{IntermediateRequest, intermediate_request, sign_intermediate, signing_ca};
pub use leaf::{Leaf, sign_leaf};
pub use root::{RootCa, cross_sign, new_root};
pub use spiffe::{AgentRole, server_tls_name, service_spiffe_id, trust_domain};
pub use verify::verify_chain;
