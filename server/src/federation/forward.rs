//! Requests for another datacenter. A request names its datacenter in the
//! `x-tribune-datacenter` metadata; one for another datacenter is sent,
//! unchanged (metadata included), to the server port of an alive server
//! there, moving to the next one when a server cannot be reached. Unary
//! calls and watch streams alike: the answer streams back as it comes. The
//! server there serves it as its own, so no request is forwarded twice.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tonic::Status;
use tonic::client::GrpcService;
use tracing::Instrument;

use super::wan::Wan;
use crate::rpc::peers::PeerClients;

use tribune_client::{DATACENTER_HEADER, UNREACHABLE_DATACENTER_HEADER};

/// A forwarded request is read whole before it is sent, so that it can be
/// sent again to another server; a larger one (a restore) is refused with
/// a message that says where to send it instead.
const MAX_FORWARDED_BYTES: usize = 4 * 1024 * 1024;

pub(crate) struct Forwarder {
    pub(crate) wan: Arc<Wan>,
    pub(crate) peers: Arc<PeerClients>,
}

/// The layer in front of every public service: serves a request for this
/// datacenter (or naming none) here and forwards any other.
pub(crate) async fn route(State(f): State<Arc<Forwarder>>, req: Request, next: Next) -> Response {
    let dc = match req.headers().get(DATACENTER_HEADER).map(|v| v.to_str()) {
        None => return next.run(req).await,
        Some(Ok(dc)) if dc.is_empty() || dc == f.wan.local() => return next.run(req).await,
        Some(Ok(dc)) => dc.to_string(),
        Some(Err(_)) => {
            return Status::invalid_argument(format!("{DATACENTER_HEADER}: not a datacenter name"))
                .into_http();
        }
    };
    let span = tracing::info_span!("forward", datacenter = %dc, path = %req.uri().path());
    f.forward(&dc, req).instrument(span).await
}

impl Forwarder {
    async fn forward(&self, dc: &str, req: Request) -> Response {
        if !self.wan.knows(dc) {
            return Status::not_found(format!("no path to datacenter {dc}")).into_http();
        }
        let servers = self.wan.servers(dc);
        if servers.is_empty() {
            return unreachable(dc, format!("datacenter {dc} has no server alive in the WAN pool"))
                .into_http();
        }
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, MAX_FORWARDED_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                return Status::resource_exhausted(format!(
                    "a request forwarded to datacenter {dc} is read whole first and may be at most \
                     {MAX_FORWARDED_BYTES} bytes ({e}); send it to a server of {dc} instead"
                ))
                .into_http();
            }
        };
        let mut last_error = String::new();
        for addr in servers {
            let mut channel = match self.peers.channel(&addr) {
                Ok(c) => c,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let mut out =
                axum::http::Request::new(tonic::body::Body::new(axum::body::Body::from(body.clone())));
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = parts.uri.clone();
            *out.version_mut() = parts.version;
            *out.headers_mut() = parts.headers.clone();
            if let Err(e) = std::future::poll_fn(|cx| GrpcService::poll_ready(&mut channel, cx)).await {
                last_error = format!("{addr}: {e}");
                continue;
            }
            match GrpcService::call(&mut channel, out).await {
                Ok(resp) => return resp.map(axum::body::Body::new),
                Err(e) => {
                    tracing::debug!(server = %addr, error = %e, "a server of another datacenter is unreachable");
                    last_error = format!("{addr}: {e}");
                }
            }
        }
        unreachable(
            dc,
            format!("no server of datacenter {dc} could be reached (last: {last_error})"),
        )
        .into_http()
    }
}

/// UNAVAILABLE for datacenter `dc`, marked so that clients do not retry it
/// on another server of this datacenter.
pub(crate) fn unreachable(dc: &str, message: String) -> Status {
    let mut s = Status::unavailable(message);
    if let Ok(v) = dc.parse() {
        s.metadata_mut().insert(UNREACHABLE_DATACENTER_HEADER, v);
    }
    s
}
