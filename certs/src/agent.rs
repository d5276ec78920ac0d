//! Agent certificates, for TLS between agents rather than between services: a server's
//! ([`sign_agent`]: the server makes its own key) and a client agent's ([`agent_request`] on the
//! client, [`sign_agent_csr`] on the server, so the client's key never leaves it). The role is
//! the certificate's SPIFFE ID, [`agent_identity`] reads it back; a service's leaf has none, so
//! it never passes for an agent.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use tribune_ids::{AgentRole, agent_spiffe_id, server_tls_name};

use crate::root::{load_ca, uri_san};
use crate::validity::Window;
use crate::{CertError, RootCa, pem};

/// What an agent certificate says about its holder.
#[derive(Clone, Copy, Debug)]
pub struct AgentCertRequest<'a> {
    /// Server or client agent.
    pub role: AgentRole,
    /// The agent's datacenter.
    pub datacenter: &'a str,
    /// The agent's node name (also a DNS SAN when it is a valid host name).
    pub node: &'a str,
    /// IP SANs: the addresses clients dial.
    pub ips: &'a [IpAddr],
    /// Lifetime, clipped to the signer's.
    pub ttl_secs: i64,
    /// Now, Unix seconds.
    pub now_unix: i64,
}

/// An issued agent certificate.
///
/// `Debug` prints everything except the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentCert {
    /// The certificate only, PEM.
    pub cert_pem: String,
    /// Its key (PKCS#8 PEM), or empty when it was signed from a CSR.
    pub key_pem: String,
    /// [`RootCa::id`] of the CA that signed it.
    pub signer_id: String,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of validity (inclusive), Unix seconds.
    pub not_after_unix: i64,
}

impl fmt::Debug for AgentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .field("signer_id", &self.signer_id)
            .field("not_before_unix", &self.not_before_unix)
            .field("not_after_unix", &self.not_after_unix)
            .finish()
    }
}

/// An agent's identity, read from its certificate's SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Server or client agent.
    pub role: AgentRole,
    /// The trust domain that issued it.
    pub trust_domain: String,
    /// The agent's datacenter.
    pub datacenter: String,
    /// The agent's node name.
    pub node: String,
}

/// A CSR made by a client agent, and the key it keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKeyRequest {
    /// The PKCS#10 request, PEM.
    pub csr_pem: String,
    /// Its private key: PKCS#8 PEM, ECDSA P-256.
    pub key_pem: String,
}

impl fmt::Debug for AgentKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKeyRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// A server's certificate with a fresh ECDSA P-256 key, signed by `signer` (a root, or a
/// datacenter's intermediate): URI SAN the agent's SPIFFE ID; DNS SANs
/// `<role>.<dc>.tribune`, the node name and `localhost`; the given IP SANs; server and client
/// authentication, so the same certificate serves a TLS port and dials other servers.
pub fn sign_agent(signer: &RootCa, req: &AgentCertRequest<'_>) -> Result<AgentCert, CertError> {
    let key = crate::root::new_key("agent key")?;
    let (params, window, signer_id) = agent_params(signer, req)?;
    let ca = load_ca(signer, "agent signer")?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| CertError::Generate {
            what: "agent certificate",
            source,
        })?;
    Ok(AgentCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        signer_id,
        not_before_unix: window.not_before,
        not_after_unix: window.not_after,
    })
}

/// A key and a CSR for a client agent's certificate (the signer decides every name).
pub fn agent_request(node: &str) -> Result<AgentKeyRequest, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name(node));
    let key = crate::root::new_key("agent key")?;
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|source| CertError::Generate {
            what: "agent CSR",
            source,
        })?;
    Ok(AgentKeyRequest {
        csr_pem: csr,
        key_pem: key.serialize_pem(),
    })
}

/// Signs the public key of `csr_pem` (whose signature must verify) as `req` says; nothing else
/// is taken from the CSR. The returned [`AgentCert::key_pem`] is empty.
pub fn sign_agent_csr(
    signer: &RootCa,
    req: &AgentCertRequest<'_>,
    csr_pem: &str,
) -> Result<AgentCert, CertError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CertError::Parse {
        what: "agent CSR".to_owned(),
        reason: e.to_string(),
    })?;
    let (params, window, signer_id) = agent_params(signer, req)?;
    let ca = load_ca(signer, "agent signer")?;
    let signed = CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    };
    let cert = signed
        .signed_by(&ca.issuer)
        .map_err(|source| CertError::Generate {
            what: "agent certificate",
            source,
        })?;
    Ok(AgentCert {
        cert_pem: cert.pem(),
        key_pem: String::new(),
        signer_id,
        not_before_unix: window.not_before,
        not_after_unix: window.not_after,
    })
}

/// The agent a DER certificate was issued to, when its only URI SAN is an agent SPIFFE ID.
/// Says nothing about who signed it: verify the chain first.
pub fn agent_identity(cert_der: &[u8]) -> Option<AgentIdentity> {
    let cert = pem::parse_x509(cert_der, "peer certificate").ok()?;
    let info = crate::inspect::cert_info(&cert, cert_der, "peer certificate").ok()?;
    let [uri] = info.uri_sans.as_slice() else {
        return None;
    };
    parse_agent_id(uri)
}

fn parse_agent_id(uri: &str) -> Option<AgentIdentity> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    let parts: Vec<&str> = path.split('/').collect();
    let ["agent", role, "dc", dc, "id", node] = parts.as_slice() else {
        return None;
    };
    let role = match *role {
        "server" => AgentRole::Server,
        "client" => AgentRole::Client,
        _ => return None,
    };
    if td.is_empty() || dc.is_empty() || node.is_empty() {
        return None;
    }
    Some(AgentIdentity {
        role,
        trust_domain: td.to_owned(),
        datacenter: (*dc).to_owned(),
        node: (*node).to_owned(),
    })
}

fn common_name(node: &str) -> String {
    node.chars().take(64).collect()
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

fn agent_params(
    signer: &RootCa,
    req: &AgentCertRequest<'_>,
) -> Result<(CertificateParams, Window, String), CertError> {
    const WHAT: &str = "agent certificate";
    for (what, v) in [("datacenter", req.datacenter), ("node name", req.node)] {
        if !valid_segment(v) {
            return Err(CertError::InvalidArgument {
                what,
                reason: format!("{v:?} must be 1 to 63 letters, digits, '-', '_' or '.'"),
            });
        }
    }
    let ca = load_ca(signer, "agent signer")?;
    let Some(td) = ca.trust_domains.first() else {
        return Err(CertError::InvalidArgument {
            what: "agent signer",
            reason: "names no trust domain".to_owned(),
        });
    };
    if ca.not_after_unix <= req.now_unix {
        return Err(CertError::InvalidValidity {
            what: WHAT,
            reason: format!("signer expired at {} (now {})", ca.not_after_unix, req.now_unix),
        });
    }
    let (not_before, not_after) = Window::from_now(req.now_unix, req.ttl_secs, WHAT)?;
    let window = Window::new(not_before, not_after.min(ca.not_after_unix), WHAT)?;

    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = window.to_datetimes(WHAT)?;
    params.serial_number = Some(SerialNumber::from_slice(&crate::serial::random_serial()?));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name(req.node));
    let role_name = match req.role {
        AgentRole::Server => server_tls_name(req.datacenter),
        AgentRole::Client => format!("client.{}.tribune", req.datacenter),
    };
    let mut sans = vec![uri_san(&agent_spiffe_id(td, req.role, req.datacenter, req.node))?];
    for dns in [role_name.as_str(), req.node, "localhost"] {
        if dns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        {
            let name = dns
                .to_owned()
                .try_into()
                .map_err(|_| CertError::InvalidArgument {
                    what: "DNS name",
                    reason: format!("{dns:?} is not a valid DNS name"),
                })?;
            sans.push(SanType::DnsName(name));
        }
    }
    sans.extend(req.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
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
    Ok((params, window, signer.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{inspect, new_root, service_spiffe_id, sign_leaf, verify_chain};

    const NOW: i64 = 1_700_000_000;

    fn req(role: AgentRole) -> AgentCertRequest<'static> {
        AgentCertRequest {
            role,
            datacenter: "dc1",
            node: "s1",
            ips: &[IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
            ttl_secs: 3600,
            now_unix: NOW,
        }
    }

    #[test]
    fn a_server_certificate_names_its_role_and_verifies() {
        let root = new_root("abc.tribune", "Tribune CA 1", 86_400, NOW).unwrap();
        let cert = sign_agent(&root, &req(AgentRole::Server)).unwrap();
        let info = inspect(&cert.cert_pem).unwrap();
        assert_eq!(info.uri_sans, ["spiffe://abc.tribune/agent/server/dc/dc1/id/s1"]);
        assert_eq!(info.dns_sans, ["server.dc1.tribune", "s1", "localhost"]);
        verify_chain(&cert.cert_pem, &[], &[&root.cert_pem], NOW).unwrap();
        let der = crate::pem::first_cert_der(&cert.cert_pem, "x").unwrap();
        let id = agent_identity(&der).unwrap();
        assert_eq!(id.role, AgentRole::Server);
        assert_eq!((id.datacenter.as_str(), id.node.as_str()), ("dc1", "s1"));
    }

    #[test]
    fn a_client_agent_keeps_its_key_and_gets_the_client_role() {
        let root = new_root("abc.tribune", "Tribune CA 1", 86_400, NOW).unwrap();
        let r = agent_request("c1").unwrap();
        let mut q = req(AgentRole::Client);
        q.node = "c1";
        let cert = sign_agent_csr(&root, &q, &r.csr_pem).unwrap();
        assert!(cert.key_pem.is_empty());
        let der = crate::pem::first_cert_der(&cert.cert_pem, "x").unwrap();
        assert_eq!(agent_identity(&der).unwrap().role, AgentRole::Client);
        assert!(sign_agent_csr(&root, &q, "garbage").is_err());
    }

    #[test]
    fn a_service_leaf_is_no_agent() {
        let root = new_root("abc.tribune", "Tribune CA 1", 86_400, NOW).unwrap();
        let leaf = sign_leaf(&root, &service_spiffe_id("abc.tribune", "dc1", "web"), 3600, NOW).unwrap();
        let der = crate::pem::first_cert_der(&leaf.cert_pem, "x").unwrap();
        assert_eq!(agent_identity(&der), None);
        assert_eq!(
            parse_agent_id("spiffe://abc.tribune/agent/admin/dc/dc1/id/x"),
            None
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let root = new_root("abc.tribune", "Tribune CA 1", 86_400, NOW).unwrap();
        let mut q = req(AgentRole::Server);
        q.node = "a/b";
        assert!(matches!(
            sign_agent(&root, &q),
            Err(CertError::InvalidArgument {
                what: "node name",
                ..
            })
        ));
    }
}
