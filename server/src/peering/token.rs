//! A peering token: base64 of JSON, as Consul's, carrying what the dialer
//! needs to reach and trust the acceptor's servers and to prove itself
//! once.

use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeeringToken {
    pub peer_id: String,
    /// One-time: traded for the stream secret.
    pub establishment_secret: String,
    /// The acceptor's CA roots: its servers' certificates chain to them.
    pub ca_pem: Vec<String>,
    /// The acceptor's servers' gRPC TLS addresses (`IP:PORT`).
    pub server_addresses: Vec<String>,
    /// The name their certificates carry.
    pub server_name: String,
    pub trust_domain: String,
    pub datacenter: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("token: not base64 ({0})")]
    Base64(String),
    #[error("token: not a Tribune peering token ({0})")]
    Json(String),
    #[error("token: {0} is empty")]
    Missing(&'static str),
}

impl PeeringToken {
    pub(crate) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    pub(crate) fn decode(text: &str) -> Result<PeeringToken, TokenError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| TokenError::Base64(e.to_string()))?;
        let t: PeeringToken = serde_json::from_slice(&bytes).map_err(|e| TokenError::Json(e.to_string()))?;
        for (what, v) in [
            ("peer_id", t.peer_id.is_empty()),
            ("establishment_secret", t.establishment_secret.is_empty()),
            ("ca_pem", t.ca_pem.is_empty()),
            ("server_addresses", t.server_addresses.is_empty()),
            ("server_name", t.server_name.is_empty()),
        ] {
            if v {
                return Err(TokenError::Missing(what));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_garbage_says_what_is_wrong() {
        let t = PeeringToken {
            peer_id: "id".into(),
            establishment_secret: "s".into(),
            ca_pem: vec!["pem".into()],
            server_addresses: vec!["127.0.0.1:8503".into()],
            server_name: "server.dc1.tribune".into(),
            trust_domain: "x.tribune".into(),
            datacenter: "dc1".into(),
        };
        assert_eq!(PeeringToken::decode(&t.encode()).unwrap(), t);
        assert!(matches!(PeeringToken::decode("%%%"), Err(TokenError::Base64(_))));
        assert!(matches!(
            PeeringToken::decode("aGVsbG8="),
            Err(TokenError::Json(_))
        ));
        let mut empty = t.clone();
        empty.server_addresses.clear();
        assert!(matches!(
            PeeringToken::decode(&empty.encode()),
            Err(TokenError::Missing("server_addresses"))
        ));
    }
}
