//! The gRPC port of a client agent. It answers registration,
//! deregistration and TTL updates itself (they change what this agent
//! owns), and `grpc.health.v1` and reflection; every other path goes to
//! `forward`. The three local methods are routed one by one to handlers
//! (`unary` decodes and encodes as tonic's generated services do), so no
//! service is half implemented.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::post;
use tonic::Status;
use tonic::server::{Grpc, UnaryService};
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tribune_client::agent::LocalAgent;
use tribune_proto::v1 as pb;

use super::forward::forward;
use crate::api::MAX_REQUEST_BYTES;

/// The client agent's gRPC routes.
pub(super) fn routes(
    agent: Arc<LocalAgent>,
    gossip: tribune_client::gossip::Gossip,
    datacenter: String,
) -> anyhow::Result<Routes> {
    let keyring = tribune_proto::v1::keyring_server::KeyringServer::new(
        crate::api::keyring::KeyringApi::new(gossip, None),
    );
    let (reflection_v1, reflection_v1alpha) = crate::api::reflection()?;
    let (reporter, grpc_health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        for service in ["tribune.v1.Catalog", "tribune.v1.Health"] {
            reporter.set_service_status(service, ServingStatus::Serving).await;
        }
    });
    let router = axum::Router::new()
        .route("/tribune.v1.Catalog/Register", post(register))
        .route("/tribune.v1.Catalog/Deregister", post(deregister))
        .route("/tribune.v1.Health/UpdateTtl", post(update_ttl))
        .route_service("/grpc.health.v1.Health/{*method}", grpc_health)
        .route_service("/tribune.v1.Keyring/{*method}", keyring)
        .route_service("/grpc.reflection.v1.ServerReflection/{*method}", reflection_v1)
        .route_service(
            "/grpc.reflection.v1alpha.ServerReflection/{*method}",
            reflection_v1alpha,
        )
        .fallback(forward)
        .layer(axum::middleware::from_fn_with_state(
            (agent.clone(), Arc::new(datacenter)),
            other_datacenter,
        ))
        .with_state(agent);
    Ok(Routes::from(router))
}

/// A call for another datacenter is not this agent's to answer, even a
/// registration: it goes to a server, which forwards it there.
async fn other_datacenter(
    State((agent, local)): State<(Arc<LocalAgent>, Arc<String>)>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let dc = req
        .headers()
        .get(tribune_client::DATACENTER_HEADER)
        .and_then(|v| v.to_str().ok());
    match dc {
        Some(dc) if !dc.is_empty() && dc != local.as_str() => forward(State(agent), req).await,
        _ => next.run(req).await,
    }
}

fn status(e: tribune_client::Error) -> Status {
    match e {
        tribune_client::Error::Status(s) => s,
        other => Status::unavailable(other.to_string()),
    }
}

/// One unary method answered by `f`.
struct Method<F>(Option<F>);

impl<Req, Resp, F, Fut> UnaryService<Req> for Method<F>
where
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    type Response = Resp;
    type Future = futures::future::BoxFuture<'static, Result<tonic::Response<Resp>, Status>>;

    fn call(&mut self, req: tonic::Request<Req>) -> Self::Future {
        let Some(f) = self.0.take() else {
            return Box::pin(async { Err(Status::internal("a method was called twice for one request")) });
        };
        let fut = f(req.into_inner());
        Box::pin(async move { fut.await.map(tonic::Response::new) })
    }
}

/// Decodes the request, runs `f`, encodes its answer: what a generated
/// tonic service does for one unary method.
async fn unary<Req, Resp, F, Fut>(req: Request, f: F) -> Response
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default())
        .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
    grpc.unary(Method(Some(f)), req).await.map(axum::body::Body::new)
}

/// The app's token, which the agent's call to the servers carries instead
/// of the agent token.
fn token(req: &Request) -> Option<String> {
    req.headers()
        .get(tribune_client::TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

async fn register(State(agent): State<Arc<LocalAgent>>, req: Request) -> Response {
    let token = token(&req);
    unary(req, move |req: pb::RegisterRequest| async move {
        let id = req.service.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        tracing::debug!(service = %id, "register on this agent's node");
        agent.register(req, token.as_deref()).await.map_err(status)
    })
    .await
}

async fn deregister(State(agent): State<Arc<LocalAgent>>, req: Request) -> Response {
    let token = token(&req);
    unary(req, move |req: pb::DeregisterRequest| async move {
        agent
            .deregister(&req.service_id, token.as_deref())
            .await
            .map_err(status)
    })
    .await
}

async fn update_ttl(State(agent): State<Arc<LocalAgent>>, req: Request) -> Response {
    let token = token(&req);
    unary(req, move |req: pb::UpdateTtlRequest| async move {
        let s = pb::HealthStatus::try_from(req.status)
            .ok()
            .filter(|s| *s != pb::HealthStatus::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "status: {} is not a status: use PASSING, WARNING or CRITICAL",
                    req.status
                ))
            })?;
        agent
            .update_ttl(&req.check_id, s, &req.note, token.as_deref())
            .await
            .map_err(status)
    })
    .await
}
