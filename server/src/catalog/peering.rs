//! Cluster peerings in the catalog: each peering (either side of it), what
//! this cluster exports to which peer, and what it imported from each.
//! Secrets that authenticate a peer to this cluster are kept as SHA-256;
//! the stream secret a dialer presents is kept as it is (it must be sent).
//! Changes only through the Raft log, like the rest of the catalog.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PeeringState {
    /// A token was made; no peer has presented it.
    Pending,
    /// A dialer presented the token; the stream is not up yet.
    Establishing,
    Active,
    /// The stream is down; imports stay for a while.
    Failing,
    Terminated,
}

impl PeeringState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PeeringState::Pending => "PENDING",
            PeeringState::Establishing => "ESTABLISHING",
            PeeringState::Active => "ACTIVE",
            PeeringState::Failing => "FAILING",
            PeeringState::Terminated => "TERMINATED",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PeeringRole {
    /// This cluster made the token and serves the stream.
    Acceptor,
    /// This cluster presented the token and opens the stream.
    Dialer,
}

/// The other side: its trust bundle and where its servers are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerIdentity {
    pub trust_domain: String,
    pub datacenter: String,
    pub roots_pem: Vec<String>,
    pub server_addresses: Vec<String>,
    /// The name the peer's servers present (`server.<dc>.tribune`).
    pub server_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImportedInstance {
    pub id: String,
    pub node: String,
    pub address: String,
    pub port: u32,
    /// passing, warning or critical.
    pub health: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImportedService {
    pub name: String,
    /// What a sidecar sends to reach it through the exporter's gateways.
    pub sni: String,
    /// The identity its sidecars present.
    pub spiffe_id: String,
    pub instances: Vec<ImportedInstance>,
    /// The exporter's mesh gateways, `IP:PORT`.
    pub gateways: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Peering {
    pub name: String,
    pub id: String,
    pub role: PeeringRole,
    pub state: PeeringState,
    /// Acceptor: the token's one-time secret, until it is traded.
    pub establishment_sha256: Option<String>,
    /// Acceptor: the stream secret the dialer presents.
    pub stream_secret_sha256: Option<String>,
    /// Dialer: the stream secret it presents.
    pub stream_secret: Option<String>,
    pub peer: PeerIdentity,
    pub imported: Vec<ImportedService>,
    pub last_error: String,
    /// When the stream last went down (Unix seconds); imports are dropped
    /// once it has been down too long.
    pub down_since_unix: Option<i64>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeeringData {
    pub peerings: Vec<Peering>,
    /// (service, peer) pairs.
    pub exports: Vec<(String, String)>,
}

/// Peering commands, carried inside `Command`. Variants only ever added at
/// the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PeeringCommand {
    /// A new or replaced peering (a new token for a name replaces the old
    /// one; so does a dialer's establishment).
    Upsert(Box<Peering>),
    /// The acceptor traded the establishment secret: the token is spent.
    SecretTraded {
        id: String,
        stream_secret_sha256: String,
        dialer: PeerIdentity,
    },
    /// The stream's state as one side sees it.
    Status {
        name: String,
        state: PeeringState,
        last_error: String,
        at_unix: i64,
    },
    /// What the peer exports to this cluster now, and who it is.
    ImportsReplace {
        name: String,
        identity: PeerIdentity,
        services: Vec<ImportedService>,
    },
    /// Terminated: imports and exports to it go; the record stays (as
    /// TERMINATED) until deleted again.
    Terminate {
        name: String,
    },
    Export {
        service: String,
        peer: String,
    },
    Unexport {
        service: String,
        peer: String,
    },
    /// Removes a terminated peering's record.
    Remove {
        name: String,
    },
}

#[derive(Clone, Debug, Default)]
pub(crate) struct PeeringStore {
    pub peerings: BTreeMap<String, Peering>,
    /// Service -> peers it is exported to.
    pub exports: BTreeMap<String, BTreeSet<String>>,
}

impl PeeringStore {
    pub(crate) fn from_data(d: PeeringData) -> PeeringStore {
        let mut s = PeeringStore::default();
        for p in d.peerings {
            s.peerings.insert(p.name.clone(), p);
        }
        for (svc, peer) in d.exports {
            s.exports.entry(svc).or_default().insert(peer);
        }
        s
    }

    pub(crate) fn to_data(&self) -> PeeringData {
        PeeringData {
            peerings: self.peerings.values().cloned().collect(),
            exports: self
                .exports
                .iter()
                .flat_map(|(s, peers)| peers.iter().map(move |p| (s.clone(), p.clone())))
                .collect(),
        }
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Peering> {
        self.peerings.values().find(|p| p.id == id)
    }

    /// The services exported to `peer`.
    pub(crate) fn exported_to(&self, peer: &str) -> Vec<String> {
        self.exports
            .iter()
            .filter(|(_, peers)| peers.contains(peer))
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub(crate) fn apply(&mut self, index: u64, cmd: &PeeringCommand) -> Outcome {
        match cmd {
            PeeringCommand::Upsert(p) => {
                let mut p = (**p).clone();
                p.create_index = self
                    .peerings
                    .get(&p.name)
                    .filter(|old| old.id == p.id)
                    .map_or(index, |old| old.create_index);
                p.modify_index = index;
                self.peerings.insert(p.name.clone(), p);
                Outcome::PeeringUpdated
            }
            PeeringCommand::SecretTraded {
                id,
                stream_secret_sha256,
                dialer,
            } => {
                let Some(p) = self.peerings.values_mut().find(|p| &p.id == id) else {
                    return not_found(&format!("peering {id}"));
                };
                if p.establishment_sha256.is_none() {
                    // Spent already: a token works once.
                    return Outcome::Invalid {
                        field: "token".into(),
                        message: format!(
                            "peering {} has used its token already: generate a new one",
                            p.name
                        ),
                    };
                }
                p.establishment_sha256 = None;
                p.stream_secret_sha256 = Some(stream_secret_sha256.clone());
                p.peer = dialer.clone();
                p.state = PeeringState::Establishing;
                p.modify_index = index;
                Outcome::PeeringUpdated
            }
            PeeringCommand::Status {
                name,
                state,
                last_error,
                at_unix,
            } => {
                let Some(p) = self.peerings.get_mut(name) else {
                    return not_found(&format!("peering {name}"));
                };
                if p.state == PeeringState::Terminated {
                    return terminated(name);
                }
                if *state == PeeringState::Failing && p.state != PeeringState::Failing {
                    p.down_since_unix = Some(*at_unix);
                }
                if *state == PeeringState::Active {
                    p.down_since_unix = None;
                }
                p.state = *state;
                p.last_error = last_error.clone();
                p.modify_index = index;
                Outcome::PeeringUpdated
            }
            PeeringCommand::ImportsReplace {
                name,
                identity,
                services,
            } => {
                let Some(p) = self.peerings.get_mut(name) else {
                    return not_found(&format!("peering {name}"));
                };
                if p.state == PeeringState::Terminated {
                    return terminated(name);
                }
                // The token named the peer's servers; a stream names them anew.
                let server_name = std::mem::take(&mut p.peer.server_name);
                p.peer = identity.clone();
                if p.peer.server_name.is_empty() {
                    p.peer.server_name = server_name;
                }
                p.imported = services.clone();
                p.modify_index = index;
                Outcome::PeeringUpdated
            }
            PeeringCommand::Terminate { name } => {
                let Some(p) = self.peerings.get_mut(name) else {
                    return not_found(&format!("peering {name}"));
                };
                p.state = PeeringState::Terminated;
                p.imported.clear();
                p.establishment_sha256 = None;
                p.modify_index = index;
                for peers in self.exports.values_mut() {
                    peers.remove(name);
                }
                self.exports.retain(|_, peers| !peers.is_empty());
                Outcome::PeeringUpdated
            }
            PeeringCommand::Export { service, peer } => {
                self.exports
                    .entry(service.clone())
                    .or_default()
                    .insert(peer.clone());
                Outcome::PeeringUpdated
            }
            PeeringCommand::Unexport { service, peer } => {
                if let Some(peers) = self.exports.get_mut(service) {
                    peers.remove(peer);
                    if peers.is_empty() {
                        self.exports.remove(service);
                    }
                }
                Outcome::PeeringUpdated
            }
            PeeringCommand::Remove { name } => match self.peerings.remove(name) {
                Some(_) => Outcome::PeeringUpdated,
                None => not_found(&format!("peering {name}")),
            },
        }
    }
}

fn not_found(what: &str) -> Outcome {
    Outcome::NotFound { what: what.into() }
}

fn terminated(name: &str) -> Outcome {
    Outcome::Invalid {
        field: "peering".into(),
        message: format!("peering {name} is terminated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(name: &str, id: &str) -> Peering {
        Peering {
            name: name.into(),
            id: id.into(),
            role: PeeringRole::Acceptor,
            state: PeeringState::Pending,
            establishment_sha256: Some("e".into()),
            stream_secret_sha256: None,
            stream_secret: None,
            peer: PeerIdentity::default(),
            imported: vec![],
            last_error: String::new(),
            down_since_unix: None,
            create_index: 0,
            modify_index: 0,
        }
    }

    #[test]
    fn a_token_is_traded_once_and_termination_drops_imports_and_exports() {
        let mut s = PeeringStore::default();
        s.apply(1, &PeeringCommand::Upsert(Box::new(pending("a", "id1"))));
        s.apply(
            2,
            &PeeringCommand::Export {
                service: "db".into(),
                peer: "a".into(),
            },
        );
        let traded = PeeringCommand::SecretTraded {
            id: "id1".into(),
            stream_secret_sha256: "s".into(),
            dialer: PeerIdentity::default(),
        };
        assert_eq!(s.apply(3, &traded), Outcome::PeeringUpdated);
        assert!(matches!(s.apply(4, &traded), Outcome::Invalid { .. }));
        assert_eq!(s.peerings["a"].state, PeeringState::Establishing);
        assert_eq!(s.exported_to("a"), ["db"]);
        s.apply(5, &PeeringCommand::Terminate { name: "a".into() });
        assert_eq!(s.peerings["a"].state, PeeringState::Terminated);
        assert!(s.exported_to("a").is_empty());
        let back = PeeringStore::from_data(s.to_data());
        assert_eq!(back.peerings, s.peerings);
    }
}
