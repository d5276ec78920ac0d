//! What a rule grants and what a call needs.

use std::fmt;

/// A rule's grant. `Write` includes `Read`; `Deny` grants nothing and,
/// between rules that match equally, wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Deny,
    Read,
    Write,
}

impl Access {
    /// `policy = "..."` as the rule language spells it.
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "deny" => Some(Access::Deny),
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    /// Whether holding `self` grants `wanted` (`Read` or `Write`).
    pub fn grants(self, wanted: Access) -> bool {
        match self {
            Access::Deny => false,
            Access::Read => wanted == Access::Read,
            Access::Write => wanted != Access::Deny,
        }
    }

    /// Two grants for the same target: deny wins, else the greater.
    pub fn merge(self, other: Access) -> Access {
        if self == Access::Deny || other == Access::Deny {
            Access::Deny
        } else {
            self.max(other)
        }
    }
}

/// What a permission is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Service(String),
    /// Intentions whose destination is this service.
    Intention(String),
    Node(String),
    Agent(String),
    Operator,
    Mesh,
    Acl,
    Keyring,
    /// Cluster peerings and what is exported to them.
    Peering,
}

/// One permission a call needs; its `Display` is what PERMISSION_DENIED
/// names ("service:write on payments", "operator:write").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    pub resource: Resource,
    /// `Read` or `Write`.
    pub access: Access,
}

impl Permission {
    pub fn new(resource: Resource, access: Access) -> Permission {
        Permission { resource, access }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.access.as_str();
        match &self.resource {
            Resource::Service(n) => write!(f, "service:{a} on {n}"),
            Resource::Intention(n) => write!(f, "intention:{a} on {n}"),
            Resource::Node(n) => write!(f, "node:{a} on {n}"),
            Resource::Agent(n) => write!(f, "agent:{a} on {n}"),
            Resource::Operator => write!(f, "operator:{a}"),
            Resource::Mesh => write!(f, "mesh:{a}"),
            Resource::Acl => write!(f, "acl:{a}"),
            Resource::Keyring => write!(f, "keyring:{a}"),
            Resource::Peering => write!(f, "peering:{a}"),
        }
    }
}
