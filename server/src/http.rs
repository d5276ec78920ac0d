//! The HTTP port: health, Prometheus metrics and Consul-style status
//! endpoints. Everything here is read-only.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use tribune_client::gossip::MemberState;

use crate::consensus::Leadership;
use crate::mesh::status::StreamRegistry;
use crate::metrics::{GossipBytesLabels, Metrics, StateLabel};
use crate::raft::NodeId;
use crate::raft::state_machine::Shared;

/// What the HTTP port reads: who leads, the state, the metrics, the xDS
/// streams, gossip, and this agent's identity.
pub(crate) struct HttpCtx {
    pub(crate) leadership: Leadership,
    pub(crate) state: Arc<Shared>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) xds_streams: Arc<StreamRegistry>,
    pub(crate) gossip: Option<tribune_client::gossip::Gossip>,
    /// A server's WAN pool.
    pub(crate) wan: Option<tribune_client::gossip::Gossip>,
    pub(crate) node_name: String,
    pub(crate) node_id: NodeId,
    pub(crate) datacenter: String,
    pub(crate) data_dir: String,
    pub(crate) grpc_addr: String,
    pub(crate) http_addr: String,
    pub(crate) raft_addr: String,
}

pub(crate) fn router(ctx: Arc<HttpCtx>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/status/leader", get(leader))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/xds", get(xds_streams))
        .with_state(ctx)
}

async fn healthz(State(ctx): State<Arc<HttpCtx>>) -> impl IntoResponse {
    let leader = ctx.leadership.leader();
    let code = if leader.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": if leader.is_some() { "ok" } else { "no leader" },
            "leader": leader.map(|l| l.name),
            "applied_index": ctx.state.read().applied_index(),
        })),
    )
}

async fn metrics(State(ctx): State<Arc<HttpCtx>>) -> impl IntoResponse {
    ctx.metrics
        .applied_index
        .set(ctx.state.read().applied_index() as i64);
    if let Some(g) = &ctx.gossip {
        let m = &ctx.metrics;
        let dropped = g.dropped_packets();
        m.gossip_dropped
            .inc_by(dropped.saturating_sub(m.gossip_dropped.get()));
        let members = g.members();
        for (state, name) in [
            (MemberState::Alive, "alive"),
            (MemberState::Suspect, "suspect"),
            (MemberState::Down, "down"),
            (MemberState::Left, "left"),
        ] {
            let n = members.iter().filter(|x| x.state == state).count();
            m.gossip_members
                .get_or_create(&StateLabel { state: name })
                .set(n as i64);
        }
    }
    for (pool, g) in [("lan", &ctx.gossip), ("wan", &ctx.wan)] {
        let Some(g) = g else { continue };
        let (sent, received) = g.bytes();
        for (direction, total) in [("sent", sent), ("received", received)] {
            let c = ctx
                .metrics
                .gossip_bytes
                .get_or_create(&GossipBytesLabels { pool, direction });
            c.inc_by(total.saturating_sub(c.get()));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}

/// As in Consul: the leader's server RPC address as a JSON string, or "".
async fn leader(State(ctx): State<Arc<HttpCtx>>) -> impl IntoResponse {
    Json(ctx.leadership.leader().map(|l| l.raft_addr).unwrap_or_default())
}

async fn agent_self(State(ctx): State<Arc<HttpCtx>>) -> impl IntoResponse {
    let leader = ctx.leadership.leader();
    Json(json!({
        "Config": {
            "NodeName": ctx.node_name,
            "NodeID": ctx.node_id.to_string(),
            "Datacenter": ctx.datacenter,
            "Server": true,
            "Version": env!("CARGO_PKG_VERSION"),
            "DataDir": ctx.data_dir,
        },
        "Addresses": {
            "grpc": ctx.grpc_addr,
            "http": ctx.http_addr,
            "server": ctx.raft_addr,
        },
        "Raft": {
            "Leader": leader.as_ref().map(|l| l.name.clone()),
            "LeaderAddr": leader.map(|l| l.raft_addr),
            "AppliedIndex": ctx.state.read().applied_index(),
        },
    }))
}

/// Connected proxies and, per resource type, what was sent, ACKed and
/// rejected (with Envoy's own error message).
async fn xds_streams(State(ctx): State<Arc<HttpCtx>>) -> impl IntoResponse {
    Json(ctx.xds_streams.snapshot())
}
