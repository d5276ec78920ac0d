//! A token's identities as the rules they stand for (Consul's templated
//! policies): a service identity writes its service and its sidecar and
//! reads the catalog; a node identity writes its node.

use crate::access::Access;
use crate::rules::{Rule, Rules, Target};

fn rule(target: Target, access: Access) -> Rule {
    Rule {
        target,
        access,
        intentions: None,
    }
}

/// `service "NAME"` and its sidecar's service write; every service and
/// node read (to discover its upstreams).
pub fn service_identity(name: &str) -> Rules {
    Rules {
        services: vec![
            rule(Target::Exact(name.to_string()), Access::Write),
            rule(Target::Exact(tribune_ids::sidecar_name(name)), Access::Write),
            rule(Target::Prefix(String::new()), Access::Read),
        ],
        nodes: vec![rule(Target::Prefix(String::new()), Access::Read)],
        ..Rules::default()
    }
}

/// `node "NODE"` write; every service read.
pub fn node_identity(node: &str) -> Rules {
    Rules {
        nodes: vec![rule(Target::Exact(node.to_string()), Access::Write)],
        services: vec![rule(Target::Prefix(String::new()), Access::Read)],
        ..Rules::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authorizer, Permission, Resource};

    #[test]
    fn a_service_identity_writes_its_service_and_sidecar_and_reads_the_rest() {
        let a = Authorizer::new([&service_identity("web")], false);
        let p = |r, acc| Permission::new(r, acc);
        assert!(a.allows(&p(Resource::Service("web".into()), Access::Write)));
        assert!(a.allows(&p(Resource::Service("web-sidecar-proxy".into()), Access::Write)));
        assert!(a.allows(&p(Resource::Service("api".into()), Access::Read)));
        assert!(!a.allows(&p(Resource::Service("api".into()), Access::Write)));
        assert!(a.allows(&p(Resource::Node("n1".into()), Access::Read)));
        assert!(!a.allows(&p(Resource::Node("n1".into()), Access::Write)));
        assert!(!a.allows(&p(Resource::Operator, Access::Read)));
        let n = Authorizer::new([&node_identity("n1")], false);
        assert!(n.allows(&p(Resource::Node("n1".into()), Access::Write)));
        assert!(!n.allows(&p(Resource::Node("n2".into()), Access::Read)));
    }
}
