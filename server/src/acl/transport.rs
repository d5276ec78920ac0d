//! Who may call what on the server port when it requires mutual TLS: the
//! certificate a peer presented, not a token, decides. Raft, federation
//! and replication (`tribune.server.v1`) take a server's certificate; the
//! public API (forwarded requests, client agents) a server's or a client
//! agent's, and then its token as everywhere; a client agent without a
//! certificate may only ask for one (auto-encrypt). The chain was verified
//! in the handshake; this reads the role it names.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tribune_certs::{AgentRole, agent_identity};

/// What a path on the server port takes.
#[derive(Debug, PartialEq, Eq)]
enum Takes {
    Server,
    Agent,
    Anyone,
}

fn takes(path: &str) -> Takes {
    if path.starts_with("/tribune.server.v1.") {
        Takes::Server
    } else if path == "/tribune.v1.ConnectCA/SignAgent" || path.starts_with("/grpc.health.v1.Health/") {
        Takes::Anyone
    } else {
        Takes::Agent
    }
}

pub(crate) async fn layer(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let need = takes(path);
    if need != Takes::Anyone {
        let role = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs())
            .and_then(|certs| certs.first().and_then(|c| agent_identity(c)))
            .map(|id| id.role);
        let refused = match (need, role) {
            (_, None) => Some(Status::unauthenticated(format!(
                "{path}: the server port takes an agent's certificate from this cluster's CA \
                 (a server's, or a client agent's from auto-encrypt); none was presented, or it is not an agent's"
            ))),
            (Takes::Server, Some(AgentRole::Client)) => Some(Status::permission_denied(format!(
                "{path}: needs a server certificate; this one is a client agent's"
            ))),
            _ => None,
        };
        if let Some(s) = refused {
            tracing::warn!(%path, reason = %s.message(), "server port call refused");
            return s.into_http();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_services_take_a_server_and_the_api_an_agent() {
        assert_eq!(takes("/tribune.server.v1.ServerRpc/AppendEntries"), Takes::Server);
        assert_eq!(takes("/tribune.server.v1.Replication/AclState"), Takes::Server);
        assert_eq!(takes("/tribune.v1.Catalog/Register"), Takes::Agent);
        assert_eq!(takes("/tribune.v1.ConnectCA/SignAgent"), Takes::Anyone);
    }
}
