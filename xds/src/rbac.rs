//! Intentions to an RBAC network filter for one destination service.
//!
//! The decision for a source is the most specific matching intention:
//! exact source and destination, then `*` source, then `*` destination,
//! then `* -> *`; with none, the default. Since Envoy's RBAC has one action
//! per filter, the sources that differ from the decision for "anyone else"
//! are listed as principals of a policy with the opposite action.
//!
//! A filter carries at most one policy, its principals in name order: prost
//! encodes the `policies` map in `HashMap` order, which differs between
//! processes, and the encoded bytes are the resource's version. Several
//! policies would make servers disagree on versions.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::rbac::v3::{self as rbac, Permission, Policy, Principal};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};

use crate::model::Intention;

/// Whether `source` may connect to `destination`.
pub fn decide(intentions: &[Intention], default_allow: bool, source: &str, destination: &str) -> bool {
    best_match(intentions, source, destination).map_or(default_allow, |i| i.allow)
}

/// The intention that decides `source -> destination`, if any.
pub fn best_match<'a>(intentions: &'a [Intention], source: &str, destination: &str) -> Option<&'a Intention> {
    let rank = |i: &Intention| -> Option<u8> {
        let src = if i.source == source {
            Some(0)
        } else if i.source == "*" {
            Some(1)
        } else {
            None
        }?;
        let dst = if i.destination == destination {
            Some(0)
        } else if i.destination == "*" {
            Some(2)
        } else {
            None
        }?;
        Some(src + dst)
    };
    intentions
        .iter()
        .filter_map(|i| rank(i).map(|r| (r, i)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, i)| i)
}

/// The RBAC filter config for `destination`'s public listener.
pub fn filter_for(
    intentions: &[Intention],
    default_allow: bool,
    destination: &str,
    trust_domain: &str,
) -> RbacFilter {
    // Services named by an intention that can apply to this destination.
    let named: BTreeSet<&str> = intentions
        .iter()
        .filter(|i| (i.destination == destination || i.destination == "*") && i.source != "*")
        .map(|i| i.source.as_str())
        .collect();
    // A source matching no named rule: "*" intentions, else the default.
    let others_allowed = decide(intentions, default_allow, "\u{0}", destination);
    let exceptions: Vec<&str> = named
        .into_iter()
        .filter(|s| decide(intentions, default_allow, s, destination) != others_allowed)
        .collect();
    let action = if others_allowed {
        rbac::rbac::Action::Deny
    } else {
        rbac::rbac::Action::Allow
    };
    let mut policies = HashMap::new();
    if !exceptions.is_empty() {
        policies.insert(
            if others_allowed {
                "denied-sources"
            } else {
                "allowed-sources"
            }
            .to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(rbac::permission::Rule::Any(true)),
                }],
                principals: exceptions.iter().map(|s| principal(trust_domain, s)).collect(),
                ..Default::default()
            },
        );
    }
    RbacFilter {
        rules: Some(rbac::Rbac {
            action: action as i32,
            policies,
            ..Default::default()
        }),
        stat_prefix: "connect_authz".into(),
        ..Default::default()
    }
}

/// A source service in any datacenter of this trust domain, or of a peer's
/// (`<trust-domain>/<service>`).
fn principal(trust_domain: &str, source: &str) -> Principal {
    let (trust_domain, service) = source.split_once('/').unwrap_or((trust_domain, source));
    let any_dc = tribune_ids::service_spiffe_id(&regex_escape(trust_domain), "[^/]+", &regex_escape(service));
    let regex = format!("^{any_dc}$");
    Principal {
        identifier: Some(rbac::principal::Identifier::Authenticated(
            rbac::principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                        regex,
                        ..Default::default()
                    })),
                    ignore_case: false,
                }),
            },
        )),
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(source: &str, destination: &str, allow: bool) -> Intention {
        Intention {
            source: source.into(),
            destination: destination.into(),
            allow,
        }
    }

    #[test]
    fn exact_beats_wildcard_and_default_applies_last() {
        let rules = vec![i("*", "api", false), i("web", "api", true), i("*", "*", true)];
        assert!(decide(&rules, false, "web", "api"));
        assert!(!decide(&rules, true, "billing", "api"));
        assert!(decide(&rules, false, "web", "db"), "* -> * allows");
        assert!(!decide(&[], false, "web", "db"));
        assert!(decide(&[], true, "web", "db"));
        // Exact source with wildcard destination outranks wildcard source with exact destination? No:
        // an exact destination is more specific, as in Consul.
        let rules = vec![i("web", "*", false), i("*", "api", true)];
        assert!(decide(&rules, false, "web", "api"));
    }

    #[test]
    fn the_encoding_is_the_same_whatever_the_order_of_intentions() {
        use prost::Message;
        let mut rules = vec![
            i("web", "api", false),
            i("billing", "api", false),
            i("*", "api", true),
            i("audit", "*", false),
            i("cron", "api", true),
            i("zeta", "api", false),
        ];
        let first = filter_for(&rules, true, "api", "td.tribune").encode_to_vec();
        for _ in 0..rules.len() {
            rules.rotate_left(1);
            rules.swap(0, 3);
            assert_eq!(
                filter_for(&rules, true, "api", "td.tribune").encode_to_vec(),
                first
            );
        }
        let r = filter_for(&rules, true, "api", "td.tribune").rules.unwrap();
        assert_eq!(r.policies.len(), 1);
        // audit -> * loses to * -> api: an exact destination is more specific.
        assert_eq!(
            r.policies["denied-sources"].principals.len(),
            3,
            "billing, web, zeta"
        );
    }

    #[test]
    fn filter_lists_only_the_exceptions() {
        let rules = vec![i("web", "api", false)];
        let f = filter_for(&rules, true, "api", "td.tribune");
        let r = f.rules.unwrap();
        assert_eq!(r.action, rbac::rbac::Action::Deny as i32);
        let p = &r.policies["denied-sources"];
        assert_eq!(p.principals.len(), 1);

        // Default deny with an allow: an ALLOW policy for web only.
        let rules = vec![i("web", "api", true), i("db", "billing", true)];
        let r = filter_for(&rules, false, "api", "td.tribune").rules.unwrap();
        assert_eq!(r.action, rbac::rbac::Action::Allow as i32);
        assert_eq!(r.policies["allowed-sources"].principals.len(), 1);

        // Default allow, nothing denied: a DENY filter with no policies denies nothing.
        let r = filter_for(&[], true, "api", "td.tribune").rules.unwrap();
        assert_eq!(r.action, rbac::rbac::Action::Deny as i32);
        assert!(r.policies.is_empty());
    }
}
