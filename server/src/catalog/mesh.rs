//! Mesh state in the catalog: the certificate authority (trust domain and
//! roots, private keys included in the primary datacenter; in a secondary,
//! the primary's roots without keys and this datacenter's intermediate),
//! intentions, and the last copy of every other datacenter's mesh. Like the rest of the
//! catalog it changes only through the Raft log; key material is generated
//! by the leader before it proposes, so applying stays deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tribune_certs::RootCa;

use super::command::Outcome;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CaRoot {
    pub root: RootCa,
    /// This root cross-signed by the one it replaced.
    pub cross_signed_pem: Option<String>,
    /// When a rotation retired it.
    pub rotated_out_unix: Option<i64>,
}

/// A secondary datacenter's intermediate CA and the primary root that
/// signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SigningCa {
    pub ca: RootCa,
    pub root_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CaState {
    pub cluster_id: String,
    pub trust_domain: String,
    pub leaf_ttl_secs: u64,
    /// Oldest first; the last one is active. In a secondary datacenter,
    /// the primary's, without their keys.
    pub roots: Vec<CaRoot>,
    /// A secondary datacenter's intermediate; `None` in the primary.
    pub signing: Option<SigningCa>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl CaState {
    pub(crate) fn active(&self) -> Option<&CaRoot> {
        self.roots.last()
    }

    /// What signs this datacenter's leaves: its intermediate in a
    /// secondary, the active root in the primary.
    pub(crate) fn signer(&self) -> Option<&RootCa> {
        match &self.signing {
            Some(s) => Some(&s.ca),
            None => self.active().map(|r| &r.root),
        }
    }

    /// The certificates a leaf is presented with after itself: the
    /// intermediate, then the cross-signed active root while an older root
    /// is still trusted.
    pub(crate) fn chain_after_leaf(&self) -> String {
        let mut chain = String::new();
        if let Some(s) = &self.signing {
            chain.push_str(&s.ca.cert_pem);
        }
        if self.roots.len() > 1
            && let Some(x) = self.active().and_then(|r| r.cross_signed_pem.as_ref())
        {
            chain.push_str(x);
        }
        chain
    }

    /// Every root's PEM, active first: what proxies trust.
    pub(crate) fn trust_bundle(&self) -> Vec<String> {
        self.roots.iter().rev().map(|r| r.root.cert_pem.clone()).collect()
    }

    /// Roots retired long enough ago that no leaf they signed is still valid.
    pub(crate) fn prunable(&self, now_unix: i64, grace_secs: i64) -> Vec<String> {
        let active = self.active().map(|r| r.root.id.clone());
        self.roots
            .iter()
            .filter(|r| Some(&r.root.id) != active.as_ref())
            .filter(|r| {
                r.rotated_out_unix
                    .is_some_and(|t| now_unix >= t + self.leaf_ttl_secs as i64 + grace_secs)
            })
            .map(|r| r.root.id.clone())
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Intention {
    /// A service, `*`, or `peer:PEER/SERVICE` for a cluster peer's service
    /// (a service name holds neither `:` nor `/`), so that records of
    /// earlier builds read as they are. Built and read by
    /// [`peer_source`] and [`Intention::source_peer`].
    pub source: String,
    pub destination: String,
    pub allow: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

/// How an intention's source names a peer's service.
pub(crate) fn peer_source(peer: &str, service: &str) -> String {
    format!("peer:{peer}/{service}")
}

impl Intention {
    /// `(peer, service)` when the source is a cluster peer's service.
    pub(crate) fn source_peer(&self) -> Option<(&str, &str)> {
        self.source.strip_prefix("peer:")?.split_once('/')
    }
}

/// One endpoint of another datacenter's mesh: a sidecar or a gateway, at
/// the address other datacenters reach it on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct RemoteEndpoint {
    pub id: String,
    pub address: String,
    pub port: u16,
    pub healthy: bool,
}

/// The last copy of another datacenter's mesh, as its servers reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteMesh {
    pub datacenter: String,
    /// Its mesh gateways, at their WAN addresses.
    pub gateways: Vec<RemoteEndpoint>,
    /// Its services' sidecars, at their WAN addresses, by service name.
    pub services: BTreeMap<String, Vec<RemoteEndpoint>>,
    /// The remote datacenter's Raft index this copy reflects.
    pub remote_index: u64,
    pub modify_index: u64,
}

impl RemoteMesh {
    /// The same mesh, whatever the indexes.
    pub(crate) fn same_view(&self, other: &RemoteMesh) -> bool {
        self.datacenter == other.datacenter
            && self.gateways == other.gateways
            && self.services == other.services
    }
}

/// Mesh commands, carried inside `Command`. Variants are only ever added
/// at the end (older records name the others by position).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MeshCommand {
    /// Fixes the trust domain and the first root, once per cluster.
    CaInit {
        cluster_id: String,
        root: Box<RootCa>,
        leaf_ttl_secs: u64,
    },
    /// Makes `root` the active root; the old one stays trusted.
    CaRotate {
        root: Box<RootCa>,
        cross_signed_pem: String,
        at_unix: i64,
    },
    /// Forgets retired roots.
    CaPrune {
        root_ids: Vec<String>,
    },
    IntentionUpsert {
        source: String,
        destination: String,
        allow: bool,
    },
    IntentionDelete {
        source: String,
        destination: String,
    },
    /// A secondary datacenter's copy of the primary's intentions: the set
    /// becomes exactly `intentions` (an unchanged one keeps its indexes).
    IntentionsReplace {
        intentions: Vec<IntentionRule>,
    },
    /// A secondary datacenter's CA: the primary's trust domain and roots
    /// (without keys) and this datacenter's intermediate.
    CaReplicate {
        cluster_id: String,
        leaf_ttl_secs: u64,
        roots: Vec<CaRoot>,
        signing: Option<Box<SigningCa>>,
    },
    /// The copy of another datacenter's mesh becomes `mesh`.
    RemoteMeshReplace(Box<RemoteMesh>),
}

/// An intention as the primary datacenter replicates it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct IntentionRule {
    pub source: String,
    pub destination: String,
    pub allow: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct MeshState {
    pub ca: Option<CaState>,
    pub intentions: BTreeMap<(String, String), Intention>,
    /// Other datacenters' meshes, by name.
    pub remote: BTreeMap<String, RemoteMesh>,
}

impl MeshState {
    pub(crate) fn apply(&mut self, index: u64, cmd: &MeshCommand) -> Outcome {
        match cmd {
            MeshCommand::CaInit {
                cluster_id,
                root,
                leaf_ttl_secs,
            } => {
                if self.ca.is_some() {
                    // Two servers raced to initialize: the first one wins.
                    return Outcome::MeshUpdated;
                }
                self.ca = Some(CaState {
                    cluster_id: cluster_id.clone(),
                    trust_domain: tribune_certs::trust_domain(cluster_id),
                    leaf_ttl_secs: *leaf_ttl_secs,
                    roots: vec![CaRoot {
                        root: (**root).clone(),
                        cross_signed_pem: None,
                        rotated_out_unix: None,
                    }],
                    signing: None,
                    create_index: index,
                    modify_index: index,
                });
                Outcome::MeshUpdated
            }
            MeshCommand::CaRotate {
                root,
                cross_signed_pem,
                at_unix,
            } => {
                let Some(ca) = self.ca.as_mut() else {
                    return Outcome::Invalid {
                        field: "ca".into(),
                        message: "the CA is not initialized yet".into(),
                    };
                };
                if let Some(old) = ca.roots.last_mut() {
                    old.rotated_out_unix = Some(*at_unix);
                }
                ca.roots.push(CaRoot {
                    root: (**root).clone(),
                    cross_signed_pem: Some(cross_signed_pem.clone()),
                    rotated_out_unix: None,
                });
                ca.modify_index = index;
                Outcome::MeshUpdated
            }
            MeshCommand::CaPrune { root_ids } => {
                if let Some(ca) = self.ca.as_mut() {
                    let active = ca.active().map(|r| r.root.id.clone());
                    let before = ca.roots.len();
                    ca.roots
                        .retain(|r| Some(&r.root.id) == active.as_ref() || !root_ids.contains(&r.root.id));
                    if ca.roots.len() != before {
                        ca.modify_index = index;
                    }
                }
                Outcome::MeshUpdated
            }
            MeshCommand::IntentionUpsert {
                source,
                destination,
                allow,
            } => {
                let key = (source.clone(), destination.clone());
                let create_index = self.intentions.get(&key).map_or(index, |i| i.create_index);
                self.intentions.insert(
                    key,
                    Intention {
                        source: source.clone(),
                        destination: destination.clone(),
                        allow: *allow,
                        create_index,
                        modify_index: index,
                    },
                );
                Outcome::MeshUpdated
            }
            MeshCommand::IntentionsReplace { intentions } => {
                let wanted: BTreeMap<(String, String), bool> = intentions
                    .iter()
                    .map(|r| ((r.source.clone(), r.destination.clone()), r.allow))
                    .collect();
                self.intentions.retain(|key, _| wanted.contains_key(key));
                for ((source, destination), allow) in wanted {
                    let key = (source.clone(), destination.clone());
                    match self.intentions.get_mut(&key) {
                        Some(i) if i.allow == allow => {}
                        Some(i) => {
                            i.allow = allow;
                            i.modify_index = index;
                        }
                        None => {
                            self.intentions.insert(
                                key,
                                Intention {
                                    source,
                                    destination,
                                    allow,
                                    create_index: index,
                                    modify_index: index,
                                },
                            );
                        }
                    }
                }
                Outcome::MeshUpdated
            }
            MeshCommand::CaReplicate {
                cluster_id,
                leaf_ttl_secs,
                roots,
                signing,
            } => {
                let create_index = self.ca.as_ref().map_or(index, |c| c.create_index);
                self.ca = Some(CaState {
                    cluster_id: cluster_id.clone(),
                    trust_domain: tribune_certs::trust_domain(cluster_id),
                    leaf_ttl_secs: *leaf_ttl_secs,
                    roots: roots.clone(),
                    signing: signing.as_deref().cloned(),
                    create_index,
                    modify_index: index,
                });
                Outcome::MeshUpdated
            }
            MeshCommand::RemoteMeshReplace(mesh) => {
                let mut mesh = (**mesh).clone();
                mesh.modify_index = index;
                self.remote.insert(mesh.datacenter.clone(), mesh);
                Outcome::MeshUpdated
            }
            MeshCommand::IntentionDelete { source, destination } => {
                match self.intentions.remove(&(source.clone(), destination.clone())) {
                    Some(_) => Outcome::MeshUpdated,
                    None => Outcome::NotFound {
                        what: format!("intention {source} -> {destination}"),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(n: u32) -> RootCa {
        tribune_certs::new_root(
            "abc.tribune",
            &format!("Tribune CA {n}"),
            86400 * 365,
            1_800_000_000,
        )
        .unwrap()
    }

    #[test]
    fn rotation_keeps_the_old_root_until_its_leaves_expire() {
        let mut m = MeshState::default();
        m.apply(
            1,
            &MeshCommand::CaInit {
                cluster_id: "ABC".into(),
                root: Box::new(root(1)),
                leaf_ttl_secs: 3600,
            },
        );
        let ca = m.ca.as_ref().unwrap();
        assert_eq!(ca.trust_domain, "abc.tribune");
        // A second init (another server raced) changes nothing.
        m.apply(
            2,
            &MeshCommand::CaInit {
                cluster_id: "other".into(),
                root: Box::new(root(9)),
                leaf_ttl_secs: 1,
            },
        );
        assert_eq!(m.ca.as_ref().unwrap().cluster_id, "ABC");

        let r2 = root(2);
        m.apply(
            3,
            &MeshCommand::CaRotate {
                root: Box::new(r2.clone()),
                cross_signed_pem: "X".into(),
                at_unix: 1000,
            },
        );
        let ca = m.ca.as_ref().unwrap();
        assert_eq!(ca.active().unwrap().root.id, r2.id);
        assert_eq!(ca.trust_bundle().len(), 2);
        assert!(
            ca.prunable(1000 + 3600, 60).is_empty(),
            "leaves of the old root may still be valid"
        );
        let old = ca.prunable(1000 + 3600 + 60, 60);
        assert_eq!(old.len(), 1);
        m.apply(4, &MeshCommand::CaPrune { root_ids: old });
        assert_eq!(m.ca.as_ref().unwrap().roots.len(), 1);
        assert_eq!(m.ca.as_ref().unwrap().active().unwrap().root.id, r2.id);
    }

    #[test]
    fn intentions_upsert_keep_their_create_index_and_delete_reports_unknowns() {
        let mut m = MeshState::default();
        let up = |allow| MeshCommand::IntentionUpsert {
            source: "web".into(),
            destination: "api".into(),
            allow,
        };
        m.apply(5, &up(false));
        m.apply(7, &up(true));
        let i = &m.intentions[&("web".to_string(), "api".to_string())];
        assert_eq!((i.allow, i.create_index, i.modify_index), (true, 5, 7));
        let del = MeshCommand::IntentionDelete {
            source: "web".into(),
            destination: "api".into(),
        };
        assert_eq!(m.apply(8, &del), Outcome::MeshUpdated);
        assert!(matches!(m.apply(9, &del), Outcome::NotFound { .. }));
    }

    #[test]
    fn a_replicated_set_replaces_the_intentions_and_keeps_unchanged_indexes() {
        let mut m = MeshState::default();
        let rule = |s: &str, d: &str, allow| IntentionRule {
            source: s.into(),
            destination: d.into(),
            allow,
        };
        let replace = |rules| MeshCommand::IntentionsReplace { intentions: rules };
        m.apply(
            3,
            &replace(vec![rule("web", "api", true), rule("web", "db", false)]),
        );
        m.apply(
            9,
            &replace(vec![rule("web", "api", true), rule("ops", "db", true)]),
        );
        let key = |s: &str, d: &str| (s.to_string(), d.to_string());
        assert_eq!(m.intentions.len(), 2, "web -> db is gone");
        let kept = &m.intentions[&key("web", "api")];
        assert_eq!((kept.create_index, kept.modify_index), (3, 3), "unchanged");
        assert_eq!(m.intentions[&key("ops", "db")].create_index, 9);
        m.apply(12, &replace(vec![rule("web", "api", false)]));
        let flipped = &m.intentions[&key("web", "api")];
        assert_eq!(
            (flipped.allow, flipped.create_index, flipped.modify_index),
            (false, 3, 12)
        );
    }
}
