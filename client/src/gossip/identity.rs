//! The identity each agent gossips: who it is and where its ports are.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
/// What an agent is.
pub enum Role {
    /// A server: a Raft voter of its datacenter.
    Server,
    /// A client agent.
    Client,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
/// An agent as it gossips itself.
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address (UDP) in the pool this identity is gossiped in.
    pub gossip_addr: SocketAddr,
    /// Server or client.
    pub role: Role,
    /// Datacenter name.
    pub datacenter: String,
    /// Server RPC (Raft) address; empty on client agents.
    pub server_addr: String,
    /// gRPC API address.
    pub grpc_addr: String,
    /// A server's WAN gossip address, in its LAN identity: the servers of
    /// a datacenter join each other's WAN pool through it.
    pub wan_addr: Option<SocketAddr>,
    /// Tribune version.
    pub version: String,
    /// Bumped on every restart and every rejoin after being declared down:
    /// the newest identity for an address wins.
    pub incarnation: u64,
}

impl Member {
    /// A stand-in for an address we only know from `--retry-join`.
    pub fn placeholder(addr: SocketAddr) -> Member {
        Member {
            name: String::new(),
            gossip_addr: addr,
            role: Role::Client,
            datacenter: String::new(),
            server_addr: String::new(),
            grpc_addr: String::new(),
            wan_addr: None,
            version: String::new(),
            incarnation: 0,
        }
    }

    /// Whether this is a stand-in made from an address alone.
    pub fn is_placeholder(&self) -> bool {
        self.name.is_empty()
    }
}

impl foca::Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        let mut next = self.clone();
        next.incarnation = self.incarnation.wrapping_add(1).max(1);
        Some(next)
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        self.incarnation > other.incarnation
    }
}
