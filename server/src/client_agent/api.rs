//! The gRPC port of a client agent. It answers registration,
//! deregistration and TTL updates itself (they change what this agent
//! owns), and `grpc.health.v1` and reflection; every other path goes to
//! `forward`.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tribune_client::agent::LocalAgent;
use tribune_proto::v1 as pb;
use tribune_proto::v1::catalog_server::{Catalog, CatalogServer};
use tribune_proto::v1::health_server::{Health, HealthServer};

use super::forward::forward;
use crate::api::MAX_REQUEST_BYTES;

/// The client agent's gRPC routes.
pub(super) fn routes(
    agent: Arc<LocalAgent>,
    gossip: tribune_client::gossip::Gossip,
) -> anyhow::Result<Routes> {
    let keyring =
        tribune_proto::v1::keyring_server::KeyringServer::new(crate::api::keyring::KeyringApi::new(gossip));
    let catalog = CatalogServer::new(LocalCatalog { agent: agent.clone() })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let health =
        HealthServer::new(LocalHealth { agent: agent.clone() }).max_decoding_message_size(MAX_REQUEST_BYTES);
    let (reflection_v1, reflection_v1alpha) = crate::api::reflection()?;
    let (reporter, grpc_health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        reporter.set_serving::<CatalogServer<LocalCatalog>>().await;
        reporter.set_serving::<HealthServer<LocalHealth>>().await;
    });
    let router = axum::Router::new()
        .route_service("/tribune.v1.Catalog/Register", catalog.clone())
        .route_service("/tribune.v1.Catalog/Deregister", catalog)
        .route_service("/tribune.v1.Health/UpdateTtl", health)
        .route_service("/grpc.health.v1.Health/{*method}", grpc_health)
        .route_service("/tribune.v1.Keyring/{*method}", keyring)
        .route_service("/grpc.reflection.v1.ServerReflection/{*method}", reflection_v1)
        .route_service(
            "/grpc.reflection.v1alpha.ServerReflection/{*method}",
            reflection_v1alpha,
        )
        .fallback(forward)
        .with_state(agent);
    Ok(Routes::from(router))
}

fn status(e: tribune_client::Error) -> Status {
    match e {
        tribune_client::Error::Status(s) => s,
        other => Status::unavailable(other.to_string()),
    }
}

fn forwarded() -> Status {
    Status::internal("this call is forwarded to a server and never reaches this handler")
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

pub(super) struct LocalCatalog {
    agent: Arc<LocalAgent>,
}

#[tonic::async_trait]
impl Catalog for LocalCatalog {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = req.into_inner();
        let id = req.service.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        tracing::debug!(service = %id, "register on this agent's node");
        self.agent.register(req).await.map(Response::new).map_err(status)
    }

    async fn deregister(
        &self,
        req: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let id = req.into_inner().service_id;
        self.agent
            .deregister(&id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        Err(forwarded())
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Err(forwarded())
    }

    async fn get_service(
        &self,
        _: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        Err(forwarded())
    }

    async fn get_instance(
        &self,
        _: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::GetInstanceResponse>, Status> {
        Err(forwarded())
    }

    async fn get_node(
        &self,
        _: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeResponse>, Status> {
        Err(forwarded())
    }

    async fn deregister_node(
        &self,
        _: Request<pb::DeregisterNodeRequest>,
    ) -> Result<Response<pb::DeregisterNodeResponse>, Status> {
        Err(forwarded())
    }

    type WatchServiceStream = EventStream;

    async fn watch_service(
        &self,
        _: Request<pb::WatchServiceRequest>,
    ) -> Result<Response<Self::WatchServiceStream>, Status> {
        Err(forwarded())
    }

    type WatchCatalogStream = EventStream;

    async fn watch_catalog(
        &self,
        _: Request<pb::WatchCatalogRequest>,
    ) -> Result<Response<Self::WatchCatalogStream>, Status> {
        Err(forwarded())
    }
}

pub(super) struct LocalHealth {
    agent: Arc<LocalAgent>,
}

#[tonic::async_trait]
impl Health for LocalHealth {
    async fn update_ttl(
        &self,
        req: Request<pb::UpdateTtlRequest>,
    ) -> Result<Response<pb::UpdateTtlResponse>, Status> {
        let req = req.into_inner();
        let s = pb::HealthStatus::try_from(req.status)
            .ok()
            .filter(|s| *s != pb::HealthStatus::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "status: {} is not a status: use PASSING, WARNING or CRITICAL",
                    req.status
                ))
            })?;
        self.agent
            .update_ttl(&req.check_id, s, &req.note)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_checks(
        &self,
        _: Request<pb::ListChecksRequest>,
    ) -> Result<Response<pb::ListChecksResponse>, Status> {
        Err(forwarded())
    }

    async fn report_check(
        &self,
        _: Request<pb::ReportCheckRequest>,
    ) -> Result<Response<pb::ReportCheckResponse>, Status> {
        Err(forwarded())
    }
}
