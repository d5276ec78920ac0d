//! Every datacenter's copy of the others' meshes: their mesh gateways (at
//! their WAN addresses) and their services' sidecars (at the addresses
//! other datacenters reach them on). Gateways route to the remote
//! gateways, and sidecars in `none` mode to the remote sidecars, from it.
//!
//! A server serves its datacenter's view as a stream (`Federation/
//! WatchMesh`, on the server port): the view now, then again after every
//! change to it. Every server follows the stream of every other
//! datacenter; the leader, once caught up, writes a view that differs from
//! the local copy into Raft (`MeshCommand::RemoteMeshReplace`), so the xDS
//! builder reads remote datacenters from the state machine like the rest.
//! While a datacenter is unreachable its last copy stays.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tribune_proto::server as pb;
use tribune_proto::server::federation_client::FederationClient;
use tribune_proto::server::federation_server::Federation;

use super::wan::Wan;
use crate::catalog::Catalog;
use crate::catalog::command::Command;
use crate::catalog::mesh::{MeshCommand, RemoteEndpoint, RemoteMesh};
use crate::catalog::model::{Service, Status as Health};
use crate::consensus::{Leadership, Writer};
use crate::raft::state_machine::Shared;
use crate::rpc::peers::PeerClients;

/// How long a burst of changes may gather before the view is sent again.
const COALESCE: Duration = Duration::from_millis(10);
/// Pause before following another server after a stream ends.
const RETRY: Duration = Duration::from_secs(1);
/// How often new datacenters in the WAN pool are looked for.
const DISCOVER: Duration = Duration::from_secs(1);

/// Where other datacenters reach `s`: its own WAN address, else its node's
/// WAN address with its port, else its address.
pub(crate) fn reached_at(c: &Catalog, s: &Service) -> (String, u16) {
    if let Some(w) = &s.wan {
        return (w.address.clone(), w.port);
    }
    match c.node(&s.node).filter(|n| !n.wan_address.is_empty()) {
        Some(n) => (n.wan_address.clone(), s.port),
        None => (s.address.clone(), s.port),
    }
}

/// The local datacenter's mesh as others reach it.
pub(crate) fn view_of(c: &Catalog, datacenter: &str, index: u64) -> pb::MeshView {
    let ep = |s: &Service, healthy: bool| {
        let (address, port) = reached_at(c, s);
        pb::MeshEndpoint {
            id: s.id.clone(),
            address,
            port: u32::from(port),
            healthy,
        }
    };
    let mut gateways: Vec<pb::MeshEndpoint> = c
        .mesh_gateways()
        .map(|s| ep(s, c.status_of(s) != Health::Critical))
        .collect();
    let mut services: BTreeMap<String, Vec<pb::MeshEndpoint>> = c
        .mesh_destinations()
        .map(|name| {
            let eps = c.proxies_for(name).map(|s| ep(s, c.proxy_healthy(s))).collect();
            (name.clone(), eps)
        })
        .collect();
    for eps in services.values_mut() {
        eps.sort_by(|a, b| a.id.cmp(&b.id));
    }
    gateways.sort_by(|a, b| a.id.cmp(&b.id));
    pb::MeshView {
        datacenter: datacenter.to_string(),
        index,
        gateways,
        services: services
            .into_iter()
            .map(|(service, endpoints)| pb::ServiceMesh { service, endpoints })
            .collect(),
    }
}

fn remote_endpoint(e: &pb::MeshEndpoint) -> Option<RemoteEndpoint> {
    Some(RemoteEndpoint {
        id: e.id.clone(),
        address: e.address.clone(),
        port: u16::try_from(e.port).ok().filter(|p| *p != 0)?,
        healthy: e.healthy,
    })
}

/// A received view as the state keeps it; endpoints with no valid port
/// are dropped.
fn remote_mesh(v: &pb::MeshView) -> RemoteMesh {
    RemoteMesh {
        datacenter: v.datacenter.clone(),
        gateways: v.gateways.iter().filter_map(remote_endpoint).collect(),
        services: v
            .services
            .iter()
            .map(|s| {
                (
                    s.service.clone(),
                    s.endpoints.iter().filter_map(remote_endpoint).collect(),
                )
            })
            .collect(),
        remote_index: v.index,
        modify_index: 0,
    }
}

/// The server side: this datacenter's view, streamed.
pub(crate) struct MeshViews {
    pub(crate) state: Arc<Shared>,
    pub(crate) datacenter: String,
}

type ViewStream = Pin<Box<dyn Stream<Item = Result<pb::MeshView, Status>> + Send>>;

#[tonic::async_trait]
impl Federation for MeshViews {
    type WatchMeshStream = ViewStream;

    async fn watch_mesh(&self, req: Request<pb::WatchMeshRequest>) -> Result<Response<ViewStream>, Status> {
        let want = req.into_inner().datacenter;
        if want != self.datacenter {
            return Err(Status::failed_precondition(format!(
                "this server is in datacenter {}, not {want}",
                self.datacenter
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let state = self.state.clone();
        let dc = self.datacenter.clone();
        tokio::spawn(async move {
            let mut feed = state.read().feed.subscribe();
            let mut last: Option<pb::MeshView> = None;
            loop {
                let view = {
                    let d = state.read();
                    view_of(&d.catalog, &dc, d.applied_index())
                };
                let changed = last
                    .as_ref()
                    .is_none_or(|l| l.gateways != view.gateways || l.services != view.services);
                if changed {
                    if tx.send(Ok(view.clone())).await.is_err() {
                        return;
                    }
                    last = Some(view);
                }
                // Wait for a change, then let a burst gather.
                match feed.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                let deadline = tokio::time::Instant::now() + COALESCE;
                while let Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) =
                    tokio::time::timeout_at(deadline, feed.recv()).await
                {}
            }
        });
        let out = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(out)))
    }
}

/// The client side: follows every other datacenter's view.
pub(crate) struct RemoteMeshes {
    pub(crate) wan: Arc<Wan>,
    pub(crate) peers: Arc<PeerClients>,
    pub(crate) state: Arc<Shared>,
    pub(crate) leadership: Leadership,
    pub(crate) writer: Writer,
}

/// Runs for the life of the agent: one follower per datacenter that joins
/// the WAN pool.
pub(crate) async fn run(ctx: Arc<RemoteMeshes>) {
    let mut following = BTreeSet::new();
    loop {
        for dc in ctx.wan.datacenters() {
            if dc != ctx.wan.local() && following.insert(dc.clone()) {
                tokio::spawn(follow(ctx.clone(), dc));
            }
        }
        tokio::time::sleep(DISCOVER).await;
    }
}

async fn follow(ctx: Arc<RemoteMeshes>, dc: String) {
    loop {
        for addr in ctx.wan.servers(&dc) {
            let span = tracing::debug_span!("remote_mesh", datacenter = %dc, server = %addr);
            let _enter = span.enter();
            if let Err(e) = follow_server(&ctx, &dc, &addr).await {
                tracing::debug!(error = %e, "remote mesh stream ended");
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn follow_server(ctx: &RemoteMeshes, dc: &str, addr: &str) -> Result<(), String> {
    let channel = ctx.peers.channel(addr).map_err(|e| e.to_string())?;
    let mut stream = FederationClient::new(channel)
        .watch_mesh(pb::WatchMeshRequest {
            datacenter: dc.to_string(),
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    // A follower keeps the last view: should it become leader, the next
    // tick writes it if the copy is behind.
    let mut last: Option<RemoteMesh> = None;
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            m = stream.message() => {
                let Some(view) = m.map_err(|s| s.message().to_string())? else { return Ok(()) };
                if view.datacenter != dc {
                    return Err(format!("{addr} sent the view of {}", view.datacenter));
                }
                last = Some(remote_mesh(&view));
            }
            _ = tick.tick() => {}
        }
        let Some(mesh) = &last else { continue };
        let held = ctx.state.read().catalog.mesh().remote.get(dc).cloned();
        if held.is_some_and(|h| h.same_view(mesh)) || !ctx.leadership.leads_caught_up() {
            continue;
        }
        let cmd = Command::Mesh(MeshCommand::RemoteMeshReplace(Box::new(mesh.clone())));
        ctx.writer.propose(cmd).await.map_err(|e| e.to_string())?;
        tracing::debug!(remote_index = mesh.remote_index, "remote mesh copied");
    }
}
