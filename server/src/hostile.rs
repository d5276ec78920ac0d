//! Hostile input at the server's edges: a registration decoded from random
//! or mutated bytes never panics the validation (it is refused naming a
//! field, or accepted whole), and a random or damaged snapshot file is
//! refused by the reader. `PROPTEST_CASES=100000 cargo test -p
//! tribune-server hostile` runs a longer search.

use proptest::prelude::*;
use prost::Message;
use tribune_proto::v1 as pb;

use crate::api::convert::{RegisterDefaults, registration};
use crate::catalog::Catalog;
use crate::raft::snapshot_file;

const D: RegisterDefaults<'static> = RegisterDefaults {
    node: "dev",
    node_address: "127.0.0.1",
    datacenter: "dc1",
};

fn valid() -> Vec<u8> {
    pb::RegisterRequest {
        service: Some(pb::ServiceSpec {
            name: "web".into(),
            id: "web-1".into(),
            address: "10.0.0.1".into(),
            port: 8080,
            tags: vec!["a".into()],
            meta: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        }),
        checks: vec![pb::CheckDefinition {
            kind: Some(pb::check_definition::Kind::Http("http://10.0.0.1:8080/h".into())),
            interval_ms: 1000,
            ..Default::default()
        }],
        sidecar: Some(pb::SidecarSpec {
            port: 21000,
            upstreams: vec![pb::Upstream {
                destination_name: "api".into(),
                local_bind_port: 9191,
                datacenter: "dc2".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn snapshot() -> Vec<u8> {
    let body = snapshot_file::SnapshotBody {
        snapshot_id: "1-1-0".into(),
        last_log_id: None,
        membership: Default::default(),
        catalog: Catalog::default().to_data(),
    };
    snapshot_file::encode(&body).unwrap()
}

fn validate(bytes: &[u8]) {
    if let Ok(req) = pb::RegisterRequest::decode(bytes)
        && let Err(e) = registration(req, &D)
    {
        assert!(!e.field.is_empty(), "a refusal names its field: {e:?}");
    }
}

proptest! {
    // 256 cases in the suite (proptest's default); PROPTEST_CASES sets more.
    #[test]
    fn random_registrations_are_refused_or_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        validate(&bytes);
    }

    #[test]
    fn mutated_registrations_are_refused_or_accepted(at in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut b = valid();
        let i = at % b.len();
        b[i] = byte;
        validate(&b);
        b.truncate(cut.min(b.len()));
        validate(&b);
    }

    #[test]
    fn random_snapshot_files_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(snapshot_file::decode(&bytes).is_err());
        prop_assert!(snapshot_file::decode_head(&bytes).is_err());
    }

    #[test]
    fn damaged_snapshot_files_are_refused(at in 0usize..4096, bit in 0u8..8, cut in 0usize..4096) {
        let good = snapshot();
        let mut b = good.clone();
        let i = at % b.len();
        b[i] ^= 1 << bit;
        prop_assert!(snapshot_file::decode(&b).is_err(), "a flipped bit at {} of {} was not noticed", i, b.len());
        let cut = cut % good.len();
        prop_assert!(snapshot_file::decode(&good[..cut]).is_err());
    }
}
