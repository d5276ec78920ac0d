//! The Raft-level types kept in `codec` records, and how each reads what
//! record version 2 wrote (through the catalog's version-2 shapes).

use serde::Deserialize;

use super::snapshot_file::SnapshotBody;
use super::{Entry, LogId, NodeId, ServerNode, StoredMembership, TypeConfig};
use crate::catalog::command::Request;
use crate::catalog::model::CatalogData;
use crate::codec::Record;

/// `openraft::EntryPayload` as version 2 wrote it.
#[derive(Deserialize)]
enum EntryPayloadV2 {
    Blank,
    Normal(crate::catalog::v2::RequestV2),
    Membership(openraft::Membership<NodeId, ServerNode>),
}

#[derive(Deserialize)]
struct EntryV2 {
    log_id: LogId,
    payload: EntryPayloadV2,
}

#[derive(Deserialize)]
struct SnapshotBodyV2 {
    snapshot_id: String,
    last_log_id: Option<LogId>,
    membership: StoredMembership,
    catalog: crate::catalog::v2::CatalogDataV2,
}

impl From<EntryPayloadV2> for openraft::EntryPayload<TypeConfig> {
    fn from(p: EntryPayloadV2) -> Self {
        match p {
            EntryPayloadV2::Blank => openraft::EntryPayload::Blank,
            EntryPayloadV2::Normal(r) => openraft::EntryPayload::Normal(Request::from(r)),
            EntryPayloadV2::Membership(m) => openraft::EntryPayload::Membership(m),
        }
    }
}

impl Record for openraft::EntryPayload<TypeConfig> {
    fn from_v2(body: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<EntryPayloadV2>(body).map(Into::into)
    }
}

impl Record for Entry {
    fn from_v2(body: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<EntryV2>(body).map(|e| Entry {
            log_id: e.log_id,
            payload: e.payload.into(),
        })
    }
}

impl Record for SnapshotBody {
    fn from_v2(body: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<SnapshotBodyV2>(body).map(|b| SnapshotBody {
            snapshot_id: b.snapshot_id,
            last_log_id: b.last_log_id,
            membership: b.membership,
            catalog: CatalogData::from(b.catalog),
        })
    }
}

impl Record for openraft::Vote<NodeId> {}
impl Record for LogId {}
