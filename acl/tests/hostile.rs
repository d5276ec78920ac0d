//! Hostile rule text: random and mutated input never panics the parser,
//! and whatever it accepts, the authorizer can decide on. The suite runs a
//! bounded number of cases; `PROPTEST_CASES=100000 cargo test -p
//! tribune-acl --test hostile` runs a longer search.

use proptest::prelude::*;
use tribune_acl::{Access, Authorizer, Permission, Resource, Rules};

const VALID: &str = r#"
service "web" { policy = "write" }
service_prefix "" {
  policy = "read"
  intentions = "deny"
}
node_prefix "n" { policy = "read" }
operator = "read"
"#;

const VALID_JSON: &str =
    r#"{"service": {"web": {"policy": "write"}}, "node_prefix": {"": {"policy": "read"}}, "acl": "deny"}"#;

/// `base` with `len` bytes at `at` replaced by `insert`, cut at char
/// boundaries.
fn mutate(base: &str, at: usize, len: usize, insert: &str) -> String {
    let floor = |mut i: usize| {
        i = i.min(base.len());
        while !base.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(at);
    let end = floor(start + len);
    format!("{}{insert}{}", &base[..start], &base[end..])
}

fn decide_everything(r: &Rules) {
    let a = Authorizer::new([r], false);
    for res in [
        Resource::Service("web".into()),
        Resource::Intention("web".into()),
        Resource::Node("n1".into()),
        Resource::Agent("a".into()),
        Resource::Operator,
        Resource::Acl,
    ] {
        for acc in [Access::Read, Access::Write] {
            let _ = a.allows(&Permission::new(res.clone(), acc));
        }
    }
}

proptest! {
    // 256 cases in the suite (proptest's default); PROPTEST_CASES sets more.
    #[test]
    fn random_text_is_refused_or_parsed_never_a_panic(s in "\\PC{0,300}") {
        if let Ok(r) = Rules::parse(&s) {
            decide_everything(&r);
        }
    }

    #[test]
    fn mutated_rules_are_refused_or_parsed_never_a_panic(
        json in any::<bool>(),
        at in 0usize..200,
        len in 0usize..12,
        insert in "[{}\"=\\[\\]a-z_ \n]{0,12}",
    ) {
        let base = if json { VALID_JSON } else { VALID };
        match Rules::parse(&mutate(base, at, len, &insert)) {
            Ok(r) => decide_everything(&r),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
