//! Which server a client agent talks to: the alive servers of LAN gossip,
//! one at a time, moving on when one fails.

use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::Client;
use crate::gossip::{Gossip, Role};

/// The servers of this agent's datacenter, as gossip knows them.
pub struct Servers {
    gossip: Gossip,
    datacenter: String,
    /// The agent token, sent with the agent's own calls.
    token: Option<String>,
    /// With TLS, servers are called on their server port through this
    /// (mutual TLS: it presents the agent's certificate).
    tls: Option<crate::tls::TlsConnector>,
    picked: Mutex<Picked>,
}

#[derive(Default)]
struct Picked {
    /// The alive servers' gRPC addresses when `client` was made.
    addrs: Vec<String>,
    client: Option<Client>,
    /// Channels for forwarded calls, by address; the first is in use.
    channels: Vec<(String, Channel)>,
}

impl Servers {
    /// Follows `gossip`'s servers of `datacenter`.
    pub fn new(gossip: Gossip, datacenter: &str, token: Option<String>) -> Self {
        Servers {
            gossip,
            datacenter: datacenter.to_string(),
            token,
            tls: None,
            picked: Mutex::new(Picked::default()),
        }
    }

    /// Calls the servers on their server port over `tls` instead of their
    /// plaintext gRPC port.
    pub fn with_tls(mut self, tls: crate::tls::TlsConnector) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The alive servers' server-port addresses.
    pub fn server_addrs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .gossip
            .alive(Role::Server)
            .into_iter()
            .filter(|m| m.datacenter == self.datacenter && !m.server_addr.is_empty())
            .map(|m| m.server_addr)
            .collect();
        v.sort();
        v
    }

    fn alive(&self) -> Vec<String> {
        if self.tls.is_some() {
            return self.server_addrs();
        }
        let mut v: Vec<String> = self
            .gossip
            .alive(Role::Server)
            .into_iter()
            .filter(|m| m.datacenter == self.datacenter && !m.grpc_addr.is_empty())
            .map(|m| m.grpc_addr)
            .collect();
        v.sort();
        v
    }

    /// A client over every alive server (it fails over between them).
    pub async fn client(&self) -> Result<Client, crate::Error> {
        let addrs = self.alive();
        if addrs.is_empty() {
            return Err(crate::Error::Status(tonic::Status::unavailable(
                "no server is known yet: this agent has not joined a datacenter with servers",
            )));
        }
        {
            let p = self.picked.lock().unwrap_or_else(|e| e.into_inner());
            if p.addrs == addrs
                && let Some(c) = &p.client
            {
                return Ok(c.clone());
            }
        }
        let mut c = Client::connect_any_with(&addrs, self.tls.as_ref()).await?;
        if let Some(t) = &self.token {
            c = c.with_token(t)?;
        }
        let mut p = self.picked.lock().unwrap_or_else(|e| e.into_inner());
        p.addrs = addrs;
        p.client = Some(c.clone());
        Ok(c)
    }

    /// A channel to one alive server, for a call forwarded as it is.
    pub fn channel(&self) -> Option<(String, Channel)> {
        let alive = self.alive();
        let mut p = self.picked.lock().unwrap_or_else(|e| e.into_inner());
        p.channels.retain(|(a, _)| alive.contains(a));
        for a in &alive {
            if !p.channels.iter().any(|(x, _)| x == a)
                && let Ok(e) = Endpoint::from_shared(format!("http://{a}"))
            {
                let e = e
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5));
                let ch = match &self.tls {
                    Some(t) => e.connect_with_connector_lazy(t.clone()),
                    None => e.connect_lazy(),
                };
                p.channels.push((a.clone(), ch));
            }
        }
        p.channels.first().cloned()
    }

    /// `addr` failed a forwarded call: the next call goes to another server.
    pub fn failed(&self, addr: &str) {
        let mut p = self.picked.lock().unwrap_or_else(|e| e.into_inner());
        if p.channels.first().is_some_and(|(a, _)| a == addr) && p.channels.len() > 1 {
            p.channels.rotate_left(1);
        }
    }
}
