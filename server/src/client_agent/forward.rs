//! Calls a client agent does not answer itself go to a server unchanged:
//! unary, server-streaming and bidirectional (Envoy's ADS) alike. The
//! request's metadata (request IDs, tokens, consistency) travels with it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use tonic::Status;
use tonic::client::GrpcService;
use tribune_client::agent::LocalAgent;

fn error(s: Status) -> Response {
    s.into_http()
}

/// Forwards one call to the server in use; a server that cannot be reached
/// makes the next call go to another one.
pub(super) async fn forward(State(agent): State<Arc<LocalAgent>>, req: Request) -> Response {
    let Some((addr, mut channel)) = agent.servers().channel() else {
        return error(Status::unavailable(
            "this client agent knows no server yet (is --retry-join right?)",
        ));
    };
    let (parts, body) = req.into_parts();
    let req = axum::http::Request::from_parts(parts, tonic::body::Body::new(body));
    if let Err(e) = std::future::poll_fn(|cx| GrpcService::poll_ready(&mut channel, cx)).await {
        agent.servers().failed(&addr);
        return error(Status::unavailable(format!(
            "server {addr} is not reachable: {e}"
        )));
    }
    match GrpcService::call(&mut channel, req).await {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => {
            agent.servers().failed(&addr);
            error(Status::unavailable(format!("forwarding to server {addr}: {e}")))
        }
    }
}
