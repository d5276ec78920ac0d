//! What every gRPC method of the public port needs: the table README.md
//! shows. `InHandler` methods name their resource in the request (or in the
//! state: a deregistration's service); their handler asks the same
//! [`super::Caller`]. Reads marked `InHandler` are filtered, not refused.

use tribune_acl::{Access, Permission, Resource};

pub(crate) enum Need {
    /// This permission, checked before the handler runs.
    Permission(Permission),
    /// Checked (or filtered) by the handler, on what the request names.
    InHandler,
    /// Open to any caller (health, reflection, the ACL bootstrap).
    Nothing,
}

fn p(resource: Resource, access: Access) -> Need {
    Need::Permission(Permission::new(resource, access))
}

/// The need of the method at `path`; `None`: not in the table (refused).
pub(crate) fn need(path: &str) -> Option<Need> {
    use Access::{Read, Write};
    use Resource::{Acl, Keyring, Operator, Peering};
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    Some(match (service, method) {
        ("tribune.v1.Catalog", "Register" | "Deregister" | "DeregisterNode") => Need::InHandler,
        ("tribune.v1.Catalog", "ListServices" | "ListNodes" | "GetService" | "GetInstance" | "GetNode") => {
            Need::InHandler
        }
        ("tribune.v1.Catalog", "WatchService" | "WatchCatalog") => Need::InHandler,
        ("tribune.v1.Catalog", "ListDatacenters") => Need::Nothing,
        ("tribune.v1.Health", "UpdateTtl" | "ReportCheck" | "ListChecks") => Need::InHandler,
        ("tribune.v1.ConnectCA", "Roots") => Need::Nothing,
        ("tribune.v1.ConnectCA", "Sign" | "SignAgent") => Need::InHandler,
        ("tribune.v1.ConnectCA", "Rotate" | "SignIntermediate") => p(Operator, Write),
        ("tribune.v1.Intentions", "Upsert" | "Delete" | "List" | "Check") => Need::InHandler,
        ("tribune.v1.Operator", "RaftRemovePeer") => p(Operator, Write),
        ("tribune.v1.Operator", "AutopilotState" | "RaftListPeers" | "ReplicationStatus" | "Members") => {
            p(Operator, Read)
        }
        ("tribune.v1.Operator", "SnapshotSave" | "SnapshotRestore") => p(Acl, Write),
        ("tribune.v1.Keyring", "Apply") => p(Keyring, Write),
        ("tribune.v1.Keyring", "Local") => p(Keyring, Read),
        ("tribune.v1.ACL", "Bootstrap" | "WhoAmI") => Need::Nothing,
        (
            "tribune.v1.ACL",
            "PolicyList" | "PolicyRead" | "TokenList" | "TokenRead" | "RoleList" | "RoleRead",
        ) => p(Acl, Read),
        (
            "tribune.v1.ACL",
            "PolicyCreate" | "PolicyUpdate" | "PolicyDelete" | "TokenCreate" | "TokenUpdate" | "TokenDelete"
            | "RoleCreate" | "RoleDelete",
        ) => p(Acl, Write),
        ("tribune.v1.Peering", "GenerateToken" | "Establish" | "Delete" | "Export" | "Unexport") => {
            p(Peering, Write)
        }
        ("tribune.v1.Peering", "List" | "Read") => p(Peering, Read),
        ("tribune.v1.Peering", "ImportedServices") => Need::InHandler,
        // Authenticated by the peering's secrets, not by a token.
        ("tribune.v1.PeerStream", "ExchangeSecret" | "Stream") => Need::Nothing,
        ("envoy.service.discovery.v3.AggregatedDiscoveryService", _) => Need::InHandler,
        ("grpc.health.v1.Health", _) => Need::Nothing,
        ("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection", _) => {
            Need::Nothing
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of every public service is in the table: a new method
    /// that is not is refused with ACLs on, and fails this test.
    #[test]
    fn every_public_method_is_in_the_table() {
        let set = tribune_proto::FILE_DESCRIPTOR_SET;
        let fds = <prost_types::FileDescriptorSet as prost::Message>::decode(set).unwrap();
        let mut n = 0;
        for f in &fds.file {
            if f.package() != "tribune.v1" {
                continue;
            }
            for s in &f.service {
                for m in &s.method {
                    let path = format!("/tribune.v1.{}/{}", s.name(), m.name());
                    assert!(need(&path).is_some(), "{path} is not in the ACL table");
                    n += 1;
                }
            }
        }
        assert!(n > 30, "only {n} methods found");
        assert!(need("/tribune.v1.Catalog/Nope").is_none());
    }
}
