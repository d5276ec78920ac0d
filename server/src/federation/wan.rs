//! The WAN pool: servers of every datacenter gossip with each other on
//! their WAN address, each as `node.datacenter`, advertising its server
//! RPC address (where requests from other datacenters arrive). It tells
//! which datacenters exist, which of their servers are alive, and how far
//! each datacenter is (round trips of a periodic `Status` call).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tribune_client::gossip::{Gossip, GossipConfig, Member, MemberState, MemberStatus, Role};

use crate::config::Settings;
use crate::rpc::peers::PeerClients;

/// How often each other datacenter's distance is measured.
const RTT_EVERY: Duration = Duration::from_secs(10);
const RTT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the LAN pool is compared with the WAN pool at the latest.
const FLOOD_EVERY: Duration = Duration::from_secs(5);
/// The WAN pool's expected size, for its SWIM timings.
const WAN_POOL_SIZE: u32 = 16;

pub(crate) struct Wan {
    gossip: Gossip,
    local: String,
    /// Where the next forwarded request to a datacenter starts, so load
    /// spreads over its servers and a failed one is not tried first again.
    cursor: AtomicUsize,
    /// Round trips to each other datacenter, smoothed.
    rtt: Mutex<HashMap<String, Duration>>,
}

/// How this server gossips itself in the WAN pool.
fn wan_member(settings: &Settings, server_addr: SocketAddr, grpc_addr: SocketAddr) -> Member {
    Member {
        name: format!("{}.{}", settings.node, settings.datacenter),
        gossip_addr: settings.serf_wan_addr,
        role: Role::Server,
        datacenter: settings.datacenter.clone(),
        server_addr: server_addr.to_string(),
        grpc_addr: grpc_addr.to_string(),
        wan_addr: None,
        version: env!("CARGO_PKG_VERSION").into(),
        incarnation: 0,
    }
}

impl Wan {
    /// Joins the WAN pool (retrying `--retry-join-wan` until one answers),
    /// encrypted like the LAN pool, with its keyring in
    /// `<data-dir>/serf/remote.keyring` as in Consul.
    pub(crate) async fn start(
        settings: &Settings,
        data_dir: &Path,
        server_addr: SocketAddr,
        grpc_addr: SocketAddr,
    ) -> anyhow::Result<Arc<Wan>> {
        let lan = crate::agent::gossip_config(settings, data_dir)?;
        let cfg = GossipConfig {
            pool: "WAN",
            cluster_size: WAN_POOL_SIZE,
            keyring_file: Some(data_dir.join("serf").join("remote.keyring")),
            swim: Some(tribune_client::gossip::tuning::wan_swim_config(WAN_POOL_SIZE)),
            ..lan
        };
        let gossip = Gossip::start(
            wan_member(settings, server_addr, grpc_addr),
            settings.retry_join_wan.clone(),
            cfg,
        )
        .await
        .context("starting WAN gossip")?;
        Ok(Arc::new(Wan {
            gossip,
            local: settings.datacenter.clone(),
            cursor: AtomicUsize::new(0),
            rtt: Mutex::default(),
        }))
    }

    pub(crate) fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    pub(crate) fn local(&self) -> &str {
        &self.local
    }

    /// Every member of the pool, this server included.
    pub(crate) fn members(&self) -> Vec<MemberStatus> {
        self.gossip.members()
    }

    /// Whether any server of `dc` was ever seen, alive or not.
    pub(crate) fn knows(&self, dc: &str) -> bool {
        dc == self.local || self.members().iter().any(|m| m.member.datacenter == dc)
    }

    /// The server RPC addresses of `dc`'s alive servers, starting with the
    /// one whose turn it is.
    pub(crate) fn servers(&self, dc: &str) -> Vec<String> {
        let mut alive: Vec<String> = self
            .members()
            .into_iter()
            .filter(|m| {
                m.member.datacenter == dc && m.state == MemberState::Alive && !m.member.is_placeholder()
            })
            .map(|m| m.member.server_addr)
            .collect();
        alive.sort();
        if !alive.is_empty() {
            let start = self.cursor.fetch_add(1, Ordering::Relaxed) % alive.len();
            alive.rotate_left(start);
        }
        alive
    }

    /// Every known datacenter, nearest first: this one, then the others by
    /// measured round trip (unmeasured ones last, by name).
    pub(crate) fn datacenters(&self) -> Vec<String> {
        let mut dcs: BTreeMap<String, ()> = BTreeMap::new();
        for m in self.members() {
            if !m.member.is_placeholder() {
                dcs.insert(m.member.datacenter, ());
            }
        }
        dcs.remove(&self.local);
        let rtt = self.rtt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut others: Vec<String> = dcs.into_keys().collect();
        others.sort_by_key(|dc| (rtt.get(dc).copied().unwrap_or(Duration::MAX), dc.clone()));
        std::iter::once(self.local.clone()).chain(others).collect()
    }

    /// Joins the WAN pool through the other servers of this datacenter, as
    /// the LAN pool reveals them (Consul's flood join): `--retry-join-wan`
    /// on one server of a datacenter is enough for all of them.
    pub(crate) async fn join_local_servers(self: Arc<Self>, lan: Gossip) {
        let mut changes = lan.changes();
        loop {
            let known: std::collections::HashSet<SocketAddr> =
                self.members().into_iter().map(|m| m.member.gossip_addr).collect();
            let wanted: Vec<SocketAddr> = lan
                .alive(Role::Server)
                .into_iter()
                .filter(|m| m.datacenter == self.local)
                .filter_map(|m| m.wan_addr)
                .filter(|a| !known.contains(a))
                .collect();
            for addr in wanted {
                tracing::info!(%addr, "joining a server of this datacenter in the WAN pool");
                self.gossip.join(addr).await;
            }
            // Changes of the LAN pool, and now and then regardless: a join
            // that was lost is tried again.
            if let Ok(Err(_)) = tokio::time::timeout(FLOOD_EVERY, changes.changed()).await {
                return; // the LAN pool is gone: shutting down
            }
        }
    }

    /// Measures each other datacenter's distance, forever.
    pub(crate) async fn measure_distances(self: Arc<Self>, peers: Arc<PeerClients>) {
        loop {
            for dc in self.datacenters().into_iter().skip(1) {
                let Some(addr) = self.servers(&dc).into_iter().next() else {
                    continue;
                };
                let started = Instant::now();
                if peers.status(&addr, RTT_TIMEOUT).await.is_ok() {
                    let took = started.elapsed();
                    let mut rtt = self.rtt.lock().unwrap_or_else(|e| e.into_inner());
                    let smoothed = match rtt.get(&dc) {
                        Some(old) => (*old * 3 + took) / 4,
                        None => took,
                    };
                    rtt.insert(dc, smoothed);
                }
            }
            tokio::time::sleep(RTT_EVERY).await;
        }
    }
}
