//! Several servers on loopback as one datacenter, for the HA tests.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{Agent, Client, Ports};

pub struct Cluster {
    pub servers: Vec<Agent>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` servers started at the same instant, bootstrapping through gossip.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Cluster::start_each(n, |_| extra.clone())
    }

    /// The same, with flags for each server by its index.
    pub fn start_each(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<Ports> = (0..n).map(|_| Ports::free()).collect();
        let expect = n.to_string();
        let mut servers: Vec<Agent> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut args: Vec<String> = vec!["--bootstrap-expect".into(), expect.clone()];
                for other in &ports {
                    args.push("--retry-join".into());
                    args.push(other.serf_addr());
                }
                args.extend(extra(i));
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                Agent::spawn(
                    &dir.path().join(format!("s{i}")),
                    p.clone(),
                    &format!("s{i}"),
                    &a,
                    false,
                )
            })
            .collect();
        for s in &mut servers {
            s.wait_ready();
        }
        Cluster { servers, _dir: dir }
    }

    /// A client agent joining through every server's LAN gossip address;
    /// returns once it is in sync with the servers.
    pub fn start_client(&self, node: &str, extra: &[&str]) -> Agent {
        let mut args: Vec<String> = Vec::new();
        for s in &self.servers {
            args.push("--retry-join".into());
            args.push(s.ports.serf_addr());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::spawn_client(&self.data_dir().join(node), Ports::free(), node, &a, true)
    }

    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().to_path_buf()
    }

    /// Every server's gRPC address, comma-separated: what a client fails over across.
    pub fn grpc_addrs(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.grpc_addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.grpc_addrs())
            .await
            .expect("connecting to the cluster")
    }

    /// Waits until autopilot reports every server healthy and every server
    /// agrees on the leader.
    pub async fn healthy(&mut self, within: Duration) {
        let start = Instant::now();
        loop {
            let ok = match self.client().await.autopilot_state().await {
                Ok(a) => {
                    a.healthy
                        && a.servers
                            .iter()
                            .all(|s| a.leader_last_index.saturating_sub(s.matched_index) < 8)
                }
                Err(_) => false,
            };
            if ok && self.leader(Duration::from_secs(1)).await.is_some() {
                return;
            }
            assert!(
                start.elapsed() < within,
                "the cluster did not become healthy within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the server the running servers agree is leader.
    pub async fn leader(&mut self, within: Duration) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < within {
            let mut seen = Vec::new();
            for (i, s) in self.servers.iter_mut().enumerate() {
                if !s.is_running() {
                    continue;
                }
                if let Ok(c) = Client::connect(&s.grpc_addr()).await
                    && let Ok(p) = c.raft_peers().await
                    && let Some(l) = p.peers.iter().find(|p| p.leader)
                {
                    seen.push((i, l.node.clone()));
                }
            }
            if let Some((_, name)) = seen.first()
                && seen.iter().all(|(_, n)| n == name)
                && let Some(i) = self.servers.iter().position(|s| &s.node == name)
                && self.servers[i].is_running()
            {
                return Some(i);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}
