//! Every rule a token holds, merged, and the one decision.

use crate::access::{Access, Permission, Resource};
use crate::rules::{Rule, Rules, Target};

/// What a token may do: the union of its policies' and identities' rules.
#[derive(Clone, Debug)]
pub struct Authorizer {
    services: Vec<Rule>,
    nodes: Vec<Rule>,
    agents: Vec<Rule>,
    operator: Option<Access>,
    mesh: Option<Access>,
    acl: Option<Access>,
    keyring: Option<Access>,
    peering: Option<Access>,
    /// What applies where no rule matches: `Write` (allow) or `Deny`.
    default: Access,
}

/// What a service rule grants on intentions when it does not say: read for
/// a rule that grants read or write, nothing for a deny.
fn intention_access(r: &Rule) -> Access {
    r.intentions.unwrap_or(match r.access {
        Access::Deny => Access::Deny,
        Access::Read | Access::Write => Access::Read,
    })
}

/// The grant for `name` among `rules`: the exact rules if any match, else
/// the longest matching prefix; rules that match equally merge (deny wins).
fn decide(rules: &[Rule], name: &str, grant: impl Fn(&Rule) -> Access) -> Option<Access> {
    let merged = |it: &mut dyn Iterator<Item = &Rule>| it.map(&grant).reduce(Access::merge);
    let exact = merged(
        &mut rules
            .iter()
            .filter(|r| r.target == Target::Exact(name.to_string())),
    );
    if exact.is_some() {
        return exact;
    }
    let longest = rules
        .iter()
        .filter_map(|r| match &r.target {
            Target::Prefix(p) if name.starts_with(p.as_str()) => Some(p.len()),
            _ => None,
        })
        .max()?;
    merged(&mut rules.iter().filter(
        |r| matches!(&r.target, Target::Prefix(p) if p.len() == longest && name.starts_with(p.as_str())),
    ))
}

fn merge_opt(a: Option<Access>, b: Option<Access>) -> Option<Access> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.merge(b)),
        (a, b) => a.or(b),
    }
}

impl Authorizer {
    /// The union of `rules`; `default_allow` decides what no rule matches.
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a Rules>, default_allow: bool) -> Authorizer {
        let mut a = Authorizer {
            services: Vec::new(),
            nodes: Vec::new(),
            agents: Vec::new(),
            operator: None,
            mesh: None,
            acl: None,
            keyring: None,
            peering: None,
            default: if default_allow {
                Access::Write
            } else {
                Access::Deny
            },
        };
        for r in rules {
            a.services.extend(r.services.iter().cloned());
            a.nodes.extend(r.nodes.iter().cloned());
            a.agents.extend(r.agents.iter().cloned());
            a.operator = merge_opt(a.operator, r.operator);
            a.mesh = merge_opt(a.mesh, r.mesh);
            a.acl = merge_opt(a.acl, r.acl);
            a.keyring = merge_opt(a.keyring, r.keyring);
            a.peering = merge_opt(a.peering, r.peering);
        }
        a
    }

    /// A management token: everything.
    pub fn management() -> Authorizer {
        Authorizer::new([], true)
    }

    /// Whether the token may do what `p` names.
    pub fn allows(&self, p: &Permission) -> bool {
        let held = match &p.resource {
            Resource::Service(n) => decide(&self.services, n, |r| r.access),
            Resource::Intention(n) => decide(&self.services, n, intention_access),
            Resource::Node(n) => decide(&self.nodes, n, |r| r.access),
            Resource::Agent(n) => decide(&self.agents, n, |r| r.access),
            Resource::Operator => self.operator,
            Resource::Mesh => self.mesh,
            Resource::Acl => self.acl,
            Resource::Keyring => self.keyring,
            Resource::Peering => self.peering,
        };
        held.unwrap_or(self.default).grants(p.access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(texts: &[&str], default_allow: bool) -> Authorizer {
        let rules: Vec<Rules> = texts.iter().map(|t| Rules::parse(t).unwrap()).collect();
        Authorizer::new(&rules, default_allow)
    }

    fn svc(name: &str, a: Access) -> Permission {
        Permission::new(Resource::Service(name.into()), a)
    }

    #[test]
    fn the_exact_name_beats_prefixes_and_the_longest_prefix_wins() {
        let a = authz(
            &[r#"
                service_prefix "" { policy = "read" }
                service_prefix "pay" { policy = "write" }
                service_prefix "payments-" { policy = "deny" }
                service "payments-api" { policy = "read" }
            "#],
            false,
        );
        assert!(a.allows(&svc("web", Access::Read)));
        assert!(!a.allows(&svc("web", Access::Write)));
        assert!(a.allows(&svc("payroll", Access::Write)));
        assert!(
            !a.allows(&svc("payments-db", Access::Read)),
            "the longer prefix denies"
        );
        assert!(
            a.allows(&svc("payments-api", Access::Read)),
            "the exact rule wins"
        );
        assert!(!a.allows(&svc("payments-api", Access::Write)));
    }

    #[test]
    fn between_policies_deny_wins_then_the_greater_grant() {
        let a = authz(
            &[
                r#"service "web" { policy = "write" }"#,
                r#"service "web" { policy = "deny" }"#,
            ],
            true,
        );
        assert!(!a.allows(&svc("web", Access::Read)));
        let b = authz(
            &[
                r#"service "web" { policy = "read" }"#,
                r#"service "web" { policy = "write" }"#,
            ],
            false,
        );
        assert!(b.allows(&svc("web", Access::Write)));
        let c = authz(&[r#"operator = "read""#, r#"operator = "deny""#], true);
        assert!(!c.allows(&Permission::new(Resource::Operator, Access::Read)));
    }

    #[test]
    fn the_default_policy_decides_what_no_rule_matches() {
        let allow = authz(&[r#"service "web" { policy = "read" }"#], true);
        let deny = authz(&[r#"service "web" { policy = "read" }"#], false);
        for p in [
            svc("api", Access::Write),
            Permission::new(Resource::Keyring, Access::Write),
        ] {
            assert!(allow.allows(&p) && !deny.allows(&p), "{p}");
        }
        assert!(
            !allow.allows(&svc("web", Access::Write)),
            "a matching rule is not overridden"
        );
        assert!(Authorizer::management().allows(&Permission::new(Resource::Acl, Access::Write)));
    }

    #[test]
    fn intentions_follow_the_service_rule_unless_it_says() {
        let a = authz(
            &[r#"
                service "api" { policy = "write" }
                service "db" {
                  policy = "read"
                  intentions = "write"
                }
            "#],
            false,
        );
        let i = |n: &str, acc| Permission::new(Resource::Intention(n.into()), acc);
        assert!(a.allows(&i("api", Access::Read)) && !a.allows(&i("api", Access::Write)));
        assert!(a.allows(&i("db", Access::Write)));
        assert!(!a.allows(&i("web", Access::Read)));
    }
}
