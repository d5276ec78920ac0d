//! The public gRPC API on the agent's gRPC port: `tribune.v1` (Catalog,
//! Health, Operator), `grpc.health.v1` and server reflection (v1 and v1alpha).

pub(crate) mod acl;
pub(crate) mod catalog;
pub(crate) mod connect;
pub(crate) mod convert;
pub(crate) mod health;
pub(crate) mod keyring;
pub(crate) mod operator;
pub(crate) mod watch;

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tonic::Status;
use tonic::service::Routes;
use tribune_proto::v1::{
    acl_server::AclServer, catalog_server::CatalogServer, connect_ca_server::ConnectCaServer,
    health_server::HealthServer, intentions_server::IntentionsServer, operator_server::OperatorServer,
};

use crate::catalog::command::Outcome;
use crate::catalog::validate::FieldError;
use crate::consensus::{Reads, Writer};
use crate::metrics::Metrics;
use crate::raft::proposer::ProposeError;
use crate::raft::state_machine::Shared;

/// What every API service takes: the state, linearizable reads of it,
/// where writes go, and the request metrics.
#[derive(Clone)]
pub(crate) struct ApiCore {
    pub(crate) state: Arc<Shared>,
    pub(crate) reads: Reads,
    pub(crate) writer: Writer,
    pub(crate) metrics: Arc<Metrics>,
}

/// The services' handles, as the composition root made them.
pub(crate) struct Services {
    pub(crate) catalog: catalog::CatalogCtx,
    pub(crate) core: ApiCore,
    pub(crate) connect: Arc<connect::ConnectCtx>,
    pub(crate) operator: Arc<operator::OperatorCtx>,
    pub(crate) acl: Arc<acl::AclCtx>,
    pub(crate) hub: Arc<crate::mesh::hub::XdsHub>,
    pub(crate) xds_streams: Arc<crate::mesh::status::StreamRegistry>,
    /// Resolves tokens (an ADS stream checks its token again while open).
    pub(crate) tokens: Arc<crate::acl::Acl>,
    pub(crate) gossip: tribune_client::gossip::Gossip,
    /// Other servers' server port (the keyring's fan-out).
    pub(crate) peers: Arc<crate::rpc::peers::PeerClients>,
    /// Cluster peering (its API and the stream peers open).
    pub(crate) peering: Arc<crate::peering::PeeringCtx>,
}

/// Largest request the API accepts (a snapshot restore is streamed in
/// chunks of at most this size).
pub(crate) const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// gRPC metadata naming the leader's gRPC address when a write is refused.
pub(crate) const LEADER_HEADER: &str = "x-tribune-leader";

pub(crate) fn invalid(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

pub(crate) fn propose_error(e: ProposeError) -> Status {
    match &e {
        ProposeError::NotLeader { leader: Some(l) } => {
            let mut s = Status::unavailable(e.to_string());
            if let Ok(v) = l.grpc_addr.parse() {
                s.metadata_mut().insert(LEADER_HEADER, v);
            }
            s
        }
        ProposeError::NotLeader { leader: None }
        | ProposeError::ShuttingDown
        | ProposeError::Unreachable(_) => Status::unavailable(e.to_string()),
        ProposeError::Raft(_) => Status::internal(e.to_string()),
    }
}

/// Maps a command's apply-time refusal to its gRPC status.
pub(crate) fn outcome_error(o: Outcome) -> Status {
    match o {
        Outcome::NotFound { what } => Status::not_found(format!("{what} is not registered")),
        Outcome::Invalid { field, message } => Status::invalid_argument(format!("{field}: {message}")),
        other => Status::internal(format!("unexpected outcome {other:?}")),
    }
}

/// Reflection over every Tribune proto and `grpc.health.v1`, v1 and
/// v1alpha (grpcurl 1.8 speaks only v1alpha).
#[allow(clippy::type_complexity)]
pub(crate) fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tribune_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tribune_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Every gRPC service of a server agent's API port.
pub(crate) fn routes(s: Services) -> anyhow::Result<Routes> {
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        health_reporter
            .set_serving::<CatalogServer<catalog::CatalogApi>>()
            .await;
        health_reporter
            .set_serving::<HealthServer<health::HealthApi>>()
            .await;
        health_reporter
            .set_serving::<OperatorServer<operator::OperatorApi>>()
            .await;
    });

    let mut routes = Routes::default();
    routes = routes
        .add_service(
            CatalogServer::new(catalog::CatalogApi::new(s.catalog))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            HealthServer::new(health::HealthApi::new(s.core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            OperatorServer::new(operator::OperatorApi::new(s.operator))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            ConnectCaServer::new(connect::ConnectApi::new(s.connect.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            IntentionsServer::new(connect::IntentionsApi::new(s.connect))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(AclServer::new(acl::AclApi::new(s.acl)).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(
            AggregatedDiscoveryServiceServer::new(crate::mesh::ads::AdsService::new(
                s.hub,
                s.xds_streams,
                s.core.metrics.xds.clone(),
                s.tokens,
            ))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(tribune_proto::v1::keyring_server::KeyringServer::new(
            keyring::KeyringApi::new(s.gossip, Some(s.peers)),
        ))
        .add_service(tribune_proto::v1::peering_server::PeeringServer::new(
            crate::peering::api::PeeringApi {
                ctx: s.peering.clone(),
            },
        ))
        .add_service(
            tribune_proto::v1::peer_stream_server::PeerStreamServer::new(
                crate::peering::stream::PeerStreamApi { ctx: s.peering },
            )
            .max_decoding_message_size(crate::rpc::MAX_MESSAGE),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(routes)
}
