//! Consul's rule language, HCL or JSON, into [`Rules`].

use serde_json::Value;

use crate::access::Access;

/// Which names a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Exact(String),
    /// Every name that starts with it (`""`: every name).
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub target: Target,
    pub access: Access,
    /// On service rules only: what the rule grants on intentions whose
    /// destination it covers (`None`: derived from `access`).
    pub intentions: Option<Access>,
}

/// The rules of one policy (or of an identity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub services: Vec<Rule>,
    pub nodes: Vec<Rule>,
    pub agents: Vec<Rule>,
    pub operator: Option<Access>,
    pub mesh: Option<Access>,
    pub acl: Option<Access>,
    pub keyring: Option<Access>,
    pub peering: Option<Access>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// The text is not HCL (or JSON): the message carries line and column.
    #[error("rules do not parse: {0}")]
    Syntax(String),
    /// It parses, but says something the rule language does not have.
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
}

fn invalid<T>(at: impl Into<String>, message: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError::Invalid {
        at: at.into(),
        message: message.into(),
    })
}

const NOT_A_RULE: &str = "is not a rule: use service, service_prefix, node, node_prefix, agent, \
                          agent_prefix, operator, mesh, acl, keyring or peering";

fn access(at: &str, v: &str) -> Result<Access, RuleError> {
    Access::parse(v).map_or_else(|| invalid(at, format!("{v:?} is not read, write or deny")), Ok)
}

/// A block or object key of the language: which list it goes to, and
/// whether its name is a prefix.
enum Kind {
    Service,
    Node,
    Agent,
}

fn kind_of(ident: &str) -> Option<(Kind, bool)> {
    Some(match ident {
        "service" => (Kind::Service, false),
        "service_prefix" => (Kind::Service, true),
        "node" => (Kind::Node, false),
        "node_prefix" => (Kind::Node, true),
        "agent" => (Kind::Agent, false),
        "agent_prefix" => (Kind::Agent, true),
        _ => return None,
    })
}

impl Rules {
    /// Parses rules: JSON when the text is a JSON object, HCL otherwise.
    pub fn parse(text: &str) -> Result<Rules, RuleError> {
        if text.trim_start().starts_with('{') {
            Rules::parse_json(text)
        } else {
            Rules::parse_hcl(text)
        }
    }

    fn top_level(&mut self, key: &str, value: &str) -> Result<(), RuleError> {
        let slot = match key {
            "operator" => &mut self.operator,
            "mesh" => &mut self.mesh,
            "acl" => &mut self.acl,
            "keyring" => &mut self.keyring,
            "peering" => &mut self.peering,
            other => return invalid(other, NOT_A_RULE),
        };
        let a = access(key, value)?;
        *slot = Some(slot.map_or(a, |b| b.merge(a)));
        Ok(())
    }

    fn add(&mut self, ident: &str, name: &str, attrs: &[(String, String)]) -> Result<(), RuleError> {
        let at = format!("{ident} {name:?}");
        let Some((kind, prefix)) = kind_of(ident) else {
            return invalid(ident, NOT_A_RULE);
        };
        let mut policy = None;
        let mut intentions = None;
        for (k, v) in attrs {
            match (k.as_str(), &kind) {
                ("policy", _) => policy = Some(access(&at, v)?),
                ("intentions", Kind::Service) => intentions = Some(access(&at, v)?),
                (other, _) => return invalid(&at, format!("{other:?} is not a setting of this rule")),
            }
        }
        let Some(access) = policy else {
            return invalid(&at, "has no policy = \"read\", \"write\" or \"deny\"");
        };
        let target = if prefix {
            Target::Prefix(name.to_string())
        } else {
            if name.is_empty() {
                return invalid(
                    &at,
                    "an exact rule needs a name (for every name, use the _prefix form with \"\")",
                );
            }
            Target::Exact(name.to_string())
        };
        let rule = Rule {
            target,
            access,
            intentions,
        };
        match kind {
            Kind::Service => self.services.push(rule),
            Kind::Node => self.nodes.push(rule),
            Kind::Agent => self.agents.push(rule),
        }
        Ok(())
    }

    fn parse_hcl(text: &str) -> Result<Rules, RuleError> {
        let body = hcl::parse(text).map_err(|e| RuleError::Syntax(e.to_string()))?;
        let mut rules = Rules::default();
        for attr in body.attributes() {
            let key = attr.key();
            match attr.expr() {
                hcl::Expression::String(v) => rules.top_level(key, v)?,
                _ => return invalid(key, "must be a quoted string: \"read\", \"write\" or \"deny\""),
            }
        }
        for block in body.blocks() {
            let ident = block.identifier();
            let name = match block.labels() {
                [label] => label.as_str().to_string(),
                _ => return invalid(ident, "takes exactly one name, as in service \"web\" { ... }"),
            };
            if block.body().blocks().next().is_some() {
                return invalid(format!("{ident} {name:?}"), "has a nested block");
            }
            let attrs = block
                .body()
                .attributes()
                .map(|a| match a.expr() {
                    hcl::Expression::String(v) => Ok((a.key().to_string(), v.clone())),
                    _ => invalid(
                        format!("{ident} {name:?}"),
                        format!("{} must be a quoted string", a.key()),
                    ),
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.add(ident, &name, &attrs)?;
        }
        Ok(rules)
    }

    fn parse_json(text: &str) -> Result<Rules, RuleError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| RuleError::Syntax(format!("line {}, column {}: {e}", e.line(), e.column())))?;
        let Value::Object(top) = v else {
            return invalid("rules", "must be a JSON object");
        };
        let mut rules = Rules::default();
        for (key, value) in &top {
            if kind_of(key).is_none() {
                match value {
                    Value::String(s) => rules.top_level(key, s)?,
                    _ => return invalid(key, "must be a string: \"read\", \"write\" or \"deny\""),
                }
                continue;
            }
            let Value::Object(named) = value else {
                return invalid(
                    key,
                    "must be an object of names, as in {\"web\": {\"policy\": \"write\"}}",
                );
            };
            for (name, body) in named {
                let Value::Object(settings) = body else {
                    return invalid(
                        format!("{key} {name:?}"),
                        "must be an object such as {\"policy\": \"read\"}",
                    );
                };
                let attrs = settings
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k.clone(), s.clone())),
                        _ => invalid(format!("{key} {name:?}"), format!("{k} must be a string")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                rules.add(key, name, &attrs)?;
            }
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_say_the_same() {
        let hcl = r#"
            service "web" { policy = "write" }
            service_prefix "" {
              policy = "read"
              intentions = "deny"
            }
            node_prefix "n" { policy = "read" }
            agent "a1" { policy = "write" }
            operator = "read"
            keyring = "write"
        "#;
        let json = r#"{
            "service": {"web": {"policy": "write"}},
            "service_prefix": {"": {"policy": "read", "intentions": "deny"}},
            "node_prefix": {"n": {"policy": "read"}},
            "agent": {"a1": {"policy": "write"}},
            "operator": "read",
            "keyring": "write"
        }"#;
        let a = Rules::parse(hcl).unwrap();
        assert_eq!(a, Rules::parse(json).unwrap());
        assert_eq!(a.services.len(), 2);
        assert_eq!(a.services[1].intentions, Some(Access::Deny));
        assert_eq!(a.operator, Some(Access::Read));
        assert_eq!(a.mesh, None);
    }

    #[test]
    fn a_rule_that_does_not_parse_names_its_line_and_column() {
        let e = Rules::parse("service \"web\" { policy = \"write\" }\nnode [").unwrap_err();
        let RuleError::Syntax(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("line 2") && msg.contains("column"), "{msg}");
        let e = Rules::parse("{\"service\": {\"web\": {\"policy\": \"write\"}},\n  oops}").unwrap_err();
        let RuleError::Syntax(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("line 2, column"), "{msg}");
    }

    #[test]
    fn what_the_language_does_not_have_is_named() {
        for (text, needle) in [
            (
                r#"service "web" { policy = "admin" }"#,
                "\"admin\" is not read, write or deny",
            ),
            (r#"service "web" { }"#, "has no policy"),
            (
                "node \"n1\" {\n policy = \"read\"\n intentions = \"read\"\n}",
                "not a setting",
            ),
            (r#"servce "web" { policy = "read" }"#, "servce"),
            (r#"service "web" "x" { policy = "read" }"#, "exactly one name"),
            (r#"service "" { policy = "read" }"#, "needs a name"),
            (r#"operator = 1"#, "quoted string"),
            (r#"secrets = "write""#, "is not a rule"),
        ] {
            let e = Rules::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
