//! The client agent's own logic: the services and checks of its node that
//! it owns (kept on its disk), the checks it runs, and anti-entropy that
//! makes the servers' copy of its node converge to its own. The gRPC front
//! that apps call lives in the binary (`tribune agent` without `--server`);
//! what it does not answer itself it forwards to a server.

mod local;
mod runner;
mod servers;
mod sync;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use local::LocalServices;
pub use servers::Servers;
use tokio::sync::Notify;
use tonic::Status;

use crate::api::{self, HealthStatus};
use crate::gossip::Gossip;
use crate::{Client, Error};

/// What a client agent needs to know about itself.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Its node name.
    pub node: String,
    /// Its datacenter.
    pub datacenter: String,
    /// The address its services are reached at by default.
    pub address: String,
    /// Where it keeps the services it owns.
    pub data_dir: PathBuf,
    /// How often the servers' copy is compared with the agent's own.
    pub anti_entropy_interval: Duration,
    /// The agent token (ACLs): for the agent's own node, its checks and
    /// the services registered without a token of their own.
    pub token: Option<String>,
    /// With mutual TLS: how the servers' server port is dialled, presenting
    /// the agent's certificate (auto-encrypt); else their plaintext gRPC port.
    pub server_tls: Option<crate::tls::TlsConnector>,
}

/// A check of this node as the agent last saw it.
#[derive(Clone, Debug)]
struct CheckState {
    /// The instance it checks: its token reports the result.
    service_id: String,
    status: HealthStatus,
    output: String,
    /// The servers hold this result.
    reported: bool,
    /// How often the TTL was renewed (TTL checks): the runner restarts
    /// the TTL whenever this moves.
    ttl_renewals: u64,
}

/// A running client agent.
pub struct LocalAgent {
    settings: AgentSettings,
    servers: Servers,
    local: Mutex<LocalServices>,
    checks: Mutex<BTreeMap<String, CheckState>>,
    wake: Notify,
    synced: tokio::sync::watch::Sender<bool>,
    /// Held by a registration or deregistration from the servers' answer
    /// to the agent's own copy, and by a whole anti-entropy round: a round
    /// in between would see the instance on the servers but not here, and
    /// remove it as not owned.
    ownership: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalAgent {
    /// Loads the owned services from `settings.data_dir` and starts syncing
    /// them (and running their checks) against the servers gossip knows.
    pub fn start(settings: AgentSettings, gossip: Gossip) -> std::io::Result<Arc<LocalAgent>> {
        let local = LocalServices::open(&settings.data_dir.join("services"))?;
        let agent = Arc::new(LocalAgent {
            servers: match settings.server_tls.clone() {
                Some(tls) => Servers::new(gossip, &settings.datacenter, settings.token.clone()).with_tls(tls),
                None => Servers::new(gossip, &settings.datacenter, settings.token.clone()),
            },
            settings,
            local: Mutex::new(local),
            checks: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            synced: tokio::sync::watch::channel(false).0,
            ownership: tokio::sync::Mutex::new(()),
        });
        let span = tracing::info_span!("anti_entropy", node = %agent.settings.node);
        tokio::spawn(tracing::Instrument::instrument(sync::run(agent.clone()), span));
        Ok(agent)
    }

    /// The servers this agent talks to.
    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    /// Returns once the agent has been in sync with the servers.
    pub async fn wait_synced(&self) {
        let _ = self.synced.subscribe().wait_for(|s| *s).await;
    }

    /// How many services this agent owns.
    pub fn service_count(&self) -> usize {
        lock(&self.local).all().len()
    }

    async fn client(&self) -> Result<Client, Error> {
        self.servers.client().await
    }

    /// A client sending `token` (an app's), else the agent token.
    async fn client_as(&self, token: Option<&str>) -> Result<Client, Error> {
        let c = self.client().await?;
        match token {
            Some(t) => c.with_token(t),
            None => Ok(c),
        }
    }

    /// A client for the owned service `id`: the token it was registered
    /// with, else the agent token.
    async fn client_for(&self, id: &str) -> Result<Client, Error> {
        let token = lock(&self.local).token_of(id).map(str::to_string);
        self.client_as(token.as_deref()).await
    }

    /// Registers a service on this agent's node: on the servers first (so
    /// the answer means it is durable there, and `token` was allowed to),
    /// then on the agent's disk with the token, for later syncs.
    pub async fn register(
        &self,
        mut req: api::RegisterRequest,
        token: Option<&str>,
    ) -> Result<api::RegisterResponse, Error> {
        let me = &self.settings.node;
        if !req.node.is_empty() && &req.node != me {
            return Err(Status::invalid_argument(format!(
                "node: this client agent registers services on its own node {me:?}, not {:?}; \
                 register through that node's agent",
                req.node
            ))
            .into());
        }
        req.node = me.clone();
        if req.node_address.is_empty() {
            req.node_address = self.settings.address.clone();
        }
        let _owning = self.ownership.lock().await;
        let resp = self.client_as(token).await?.register(req.clone()).await?;
        if let Some(s) = req.service.as_mut()
            && s.id.is_empty()
        {
            s.id = resp.service_id.clone();
        }
        lock(&self.local).put(req, token).map_err(|e| {
            Status::internal(format!(
                "the servers registered {:?}, but this agent could not store it: {e}",
                resp.service_id
            ))
        })?;
        self.wake.notify_one();
        Ok(resp)
    }

    /// Removes a service from the servers and from this agent, as `token`.
    pub async fn deregister(&self, id: &str, token: Option<&str>) -> Result<api::DeregisterResponse, Error> {
        let _owning = self.ownership.lock().await;
        let owned = lock(&self.local).all().get(id).map(LocalServices::owned_ids);
        let resp = match self.client_as(token).await?.deregister(id).await {
            Ok(r) => r,
            // Gone from the servers already: this agent's copy still goes.
            Err(e) if e.code() == Some(tonic::Code::NotFound) && owned.is_some() => api::DeregisterResponse {
                index: 0,
                removed_ids: owned.clone().unwrap_or_default(),
            },
            Err(e) => return Err(e),
        };
        lock(&self.local).remove(id).map_err(|e| {
            Status::internal(format!(
                "deregistered {id:?}, but this agent could not forget it: {e}"
            ))
        })?;
        self.wake.notify_one();
        Ok(resp)
    }

    /// Sets a TTL check; the TTL starts again.
    pub async fn update_ttl(
        &self,
        check_id: &str,
        status: HealthStatus,
        note: &str,
        token: Option<&str>,
    ) -> Result<api::UpdateTtlResponse, Error> {
        let resp = self
            .client_as(token)
            .await?
            .update_ttl(check_id, status, note)
            .await?;
        if let Some(c) = lock(&self.checks).get_mut(check_id) {
            c.status = status;
            c.output = crate::checks::cap_output(note);
            c.reported = true;
            c.ttl_renewals += 1;
        }
        Ok(resp)
    }

    /// Leaving for good: the servers drop this node and its services.
    pub async fn leave(&self) {
        let name = self.settings.node.clone();
        let res = tokio::time::timeout(Duration::from_secs(3), async {
            self.client().await?.deregister_node(&name).await
        })
        .await;
        match res {
            Ok(Ok(_)) => tracing::info!("deregistered this node from the servers"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not deregister this node"),
            Err(_) => tracing::warn!("deregistering this node timed out"),
        }
    }
}
