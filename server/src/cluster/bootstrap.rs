//! Bootstrapping a new datacenter, as Consul does it: each server waits
//! until LAN gossip shows `bootstrap_expect` servers, asks each of them
//! whether it already has a Raft configuration, and if none does,
//! initializes Raft with all of them. Every server computes the same
//! membership, so servers that start at the same instant all initialize
//! identically; openraft accepts the same initial membership from several
//! nodes. A server whose Raft is initialized never bootstraps again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tribune_client::gossip::{Gossip, Role};

use crate::raft::{NodeId, Raft, ServerNode, node_id_for};
use crate::rpc::peers::PeerClients;

/// What bootstrapping takes: Raft, the other servers' RPC, and who this
/// server is.
pub(crate) struct Bootstrap {
    pub(crate) raft: Raft,
    pub(crate) peers: Arc<PeerClients>,
    pub(crate) node_name: String,
    pub(crate) node_id: NodeId,
    pub(crate) datacenter: String,
}

pub(crate) async fn run(ctx: Arc<Bootstrap>, gossip: Gossip, expect: usize) {
    let mut changes = gossip.changes();
    loop {
        match ctx.raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => return,
        }
        let mut servers: Vec<_> = gossip
            .alive(Role::Server)
            .into_iter()
            .filter(|m| m.datacenter == ctx.datacenter)
            .collect();
        servers.sort_by(|a, b| a.name.cmp(&b.name));
        servers.dedup_by(|a, b| a.name == b.name);
        if servers.len() >= expect {
            let mut someone_initialized = false;
            for s in servers.iter().filter(|s| s.name != ctx.node_name) {
                let st = ctx.peers.status(&s.server_addr, Duration::from_secs(2)).await;
                match st {
                    Ok(st) if st.initialized => someone_initialized = true,
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "bootstrap: status"),
                }
            }
            if someone_initialized {
                tracing::info!("a server already has a Raft configuration: waiting to be added to it");
                return;
            }
            let members: BTreeMap<u64, ServerNode> = servers
                .iter()
                .take(expect)
                .map(|s| {
                    (
                        node_id_for(&s.name),
                        ServerNode {
                            name: s.name.clone(),
                            raft_addr: s.server_addr.clone(),
                            grpc_addr: s.grpc_addr.clone(),
                        },
                    )
                })
                .collect();
            if members.contains_key(&ctx.node_id) {
                tracing::info!(servers = ?members.values().map(|n| n.name.clone()).collect::<Vec<_>>(), "bootstrapping the datacenter");
                if let Err(e) = ctx.raft.initialize(members).await {
                    tracing::info!(error = %e, "bootstrap: raft already initialized");
                }
                return;
            }
        } else {
            tracing::info!(known = servers.len(), expect, "waiting for servers to bootstrap");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), changes.changed()).await;
    }
}
