//! SPIFFE IDs and trust domains: Tribune's naming scheme and syntax checks.
//!
//! Naming: the trust domain of a cluster is `<cluster-id>.tribune`; a service's identity is
//! `spiffe://<trust_domain>/ns/default/dc/<dc>/svc/<service>`. Syntax checks follow the SPIFFE-ID
//! standard: lower-case trust domain `[a-z0-9._-]`, path segments `[A-Za-z0-9._-]`, no empty,
//! `.` or `..` segments, no query, fragment, port, user info or percent-encoding.

use crate::CertError;

const SCHEME: &str = "spiffe://";
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

pub use tribune_ids::{AgentRole, server_tls_name, service_spiffe_id, trust_domain};

/// Checks a trust domain's syntax.
pub(crate) fn validate_trust_domain(trust_domain: &str) -> Result<(), CertError> {
    let err = |reason| CertError::InvalidTrustDomain {
        trust_domain: trust_domain.to_owned(),
        reason,
    };
    if trust_domain.is_empty() {
        return Err(err("empty"));
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(err("longer than 255 bytes"));
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(err(
            "only lower-case letters, digits, '.', '-' and '_' are allowed",
        ));
    }
    Ok(())
}

/// A syntactically valid SPIFFE ID with a non-empty path (a workload identity), split into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkloadId<'a> {
    /// The trust domain (authority).
    pub trust_domain: &'a str,
    /// The last path segment, e.g. the service name.
    pub last_segment: &'a str,
}

/// Parses and validates a workload SPIFFE ID (`spiffe://<td>/<seg>(/<seg>)*`).
pub(crate) fn parse_workload_id(id: &str) -> Result<WorkloadId<'_>, CertError> {
    let err = |reason| CertError::InvalidSpiffeId {
        id: id.to_owned(),
        reason,
    };
    if id.len() > MAX_ID_LEN {
        return Err(err("longer than 2048 bytes"));
    }
    let rest = id
        .strip_prefix(SCHEME)
        .ok_or_else(|| err("must start with \"spiffe://\""))?;
    let (td, path) = rest
        .split_once('/')
        .ok_or_else(|| err("a workload ID needs a path after the trust domain"))?;
    validate_trust_domain(td).map_err(|_| err("bad trust domain: must be non-empty [a-z0-9._-]"))?;
    let mut last_segment = "";
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(err("empty path segment (\"//\" or trailing '/')"));
        }
        if segment == "." || segment == ".." {
            return Err(err("'.' and '..' path segments are not allowed"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(err(
                "path segments may only contain letters, digits, '.', '-' and '_'",
            ));
        }
        last_segment = segment;
    }
    Ok(WorkloadId {
        trust_domain: td,
        last_segment,
    })
}

/// The trust domain named by a bare `spiffe://<td>` URI (as in a root's URI SAN), if it is one.
pub(crate) fn trust_domain_of_uri(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix(SCHEME)?;
    Some(rest.split_once('/').map_or(rest, |(td, _)| td))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_scheme() {
        assert_eq!(
            service_spiffe_id("abc.tribune", "dc1", "web"),
            "spiffe://abc.tribune/ns/default/dc/dc1/svc/web"
        );
        assert_eq!(trust_domain("abc"), "abc.tribune");
        assert_eq!(trust_domain("ABC"), "abc.tribune");
    }

    #[test]
    fn workload_ids() {
        let id = parse_workload_id("spiffe://abc.tribune/ns/default/dc/dc1/svc/web").expect("valid");
        assert_eq!(
            id,
            WorkloadId {
                trust_domain: "abc.tribune",
                last_segment: "web"
            }
        );
        for bad in [
            "",
            "http://abc.tribune/svc/web",
            "spiffe://abc.tribune",
            "spiffe://abc.tribune/",
            "spiffe://abc.tribune/svc//web",
            "spiffe://abc.tribune/svc/web/",
            "spiffe://abc.tribune/svc/../web",
            "spiffe://ABC.tribune/svc/web",
            "spiffe:///svc/web",
            "spiffe://abc.tribune:443/svc/web",
            "spiffe://abc.tribune/svc/web?x=1",
            "spiffe://abc.tribune/svc/w%20eb",
        ] {
            assert!(
                matches!(parse_workload_id(bad), Err(CertError::InvalidSpiffeId { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn trust_domains() {
        assert!(validate_trust_domain("abc-1.tribune").is_ok());
        assert!(validate_trust_domain("").is_err());
        assert!(validate_trust_domain("Abc.tribune").is_err());
        assert!(validate_trust_domain("abc.tribune/x").is_err());
        assert!(validate_trust_domain(&"a".repeat(256)).is_err());
        assert_eq!(trust_domain_of_uri("spiffe://abc.tribune"), Some("abc.tribune"));
        assert_eq!(trust_domain_of_uri("spiffe://abc.tribune/x"), Some("abc.tribune"));
        assert_eq!(trust_domain_of_uri("https://abc"), None);
    }
}
