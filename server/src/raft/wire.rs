//! Conversions between openraft's messages and `tribune.server.v1`, one
//! function pair per message. Decoding never trusts the peer: a missing
//! field or an unreadable payload is an error naming the field, which the
//! service turns into INVALID_ARGUMENT.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{InstallSnapshotError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, Membership, SnapshotMeta, SnapshotSegmentId};
use tribune_proto::server as pb;

use super::{Entry, LogId, NodeId, ServerNode, StoredMembership, TypeConfig};
use crate::codec;

/// A field of a peer's message that is missing or unreadable.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct WireError {
    pub(crate) field: &'static str,
    pub(crate) message: String,
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

fn missing(field: &'static str) -> WireError {
    WireError {
        field,
        message: "missing".into(),
    }
}

fn required<T>(v: Option<T>, field: &'static str) -> Result<T, WireError> {
    v.ok_or_else(|| missing(field))
}

pub(crate) type Vote = openraft::Vote<NodeId>;

pub(crate) fn log_id(l: &LogId) -> pb::LogId {
    pb::LogId {
        term: l.leader_id.term,
        node_id: l.leader_id.node_id,
        index: l.index,
    }
}

pub(crate) fn from_log_id(l: &pb::LogId) -> LogId {
    LogId::new(CommittedLeaderId::new(l.term, l.node_id), l.index)
}

fn opt_log_id(l: &Option<LogId>) -> Option<pb::LogId> {
    l.as_ref().map(log_id)
}

fn from_opt_log_id(l: &Option<pb::LogId>) -> Option<LogId> {
    l.as_ref().map(from_log_id)
}

pub(crate) fn vote(v: &Vote) -> pb::Vote {
    pb::Vote {
        term: v.leader_id.term,
        node_id: v.leader_id.node_id,
        committed: v.committed,
    }
}

pub(crate) fn from_vote(v: Option<&pb::Vote>, field: &'static str) -> Result<Vote, WireError> {
    let v = required(v, field)?;
    Ok(if v.committed {
        Vote::new_committed(v.term, v.node_id)
    } else {
        Vote::new(v.term, v.node_id)
    })
}

pub(crate) fn node(n: &ServerNode) -> pb::RaftNode {
    pb::RaftNode {
        name: n.name.clone(),
        raft_addr: n.raft_addr.clone(),
        grpc_addr: n.grpc_addr.clone(),
    }
}

pub(crate) fn from_node(n: &pb::RaftNode) -> ServerNode {
    ServerNode {
        name: n.name.clone(),
        raft_addr: n.raft_addr.clone(),
        grpc_addr: n.grpc_addr.clone(),
    }
}

fn membership(m: &StoredMembership) -> pb::StoredMembership {
    let mm = m.membership();
    pb::StoredMembership {
        log_id: opt_log_id(m.log_id()),
        membership: Some(pb::Membership {
            configs: mm
                .get_joint_config()
                .iter()
                .map(|c| pb::VoterSet {
                    ids: c.iter().copied().collect(),
                })
                .collect(),
            nodes: mm.nodes().map(|(id, n)| (*id, node(n))).collect(),
        }),
    }
}

fn from_membership(m: Option<&pb::StoredMembership>) -> Result<StoredMembership, WireError> {
    let m = required(m, "meta.last_membership")?;
    let mm = required(m.membership.as_ref(), "meta.last_membership.membership")?;
    let configs: Vec<BTreeSet<NodeId>> = mm
        .configs
        .iter()
        .map(|c| c.ids.iter().copied().collect())
        .collect();
    let nodes: BTreeMap<NodeId, ServerNode> = mm.nodes.iter().map(|(id, n)| (*id, from_node(n))).collect();
    for id in configs.iter().flatten() {
        if !nodes.contains_key(id) {
            return Err(WireError {
                field: "meta.last_membership.membership.nodes",
                message: format!("voter {id} has no node"),
            });
        }
    }
    Ok(StoredMembership::new(
        from_opt_log_id(&m.log_id),
        Membership::new(configs, nodes),
    ))
}

pub(crate) fn entry(e: &Entry) -> Result<pb::Entry, codec::CodecError> {
    Ok(pb::Entry {
        log_id: Some(log_id(&e.log_id)),
        payload: codec::encode(&e.payload)?,
    })
}

fn from_entry(e: &pb::Entry) -> Result<Entry, WireError> {
    Ok(Entry {
        log_id: from_log_id(required(e.log_id.as_ref(), "entries.log_id")?),
        payload: codec::decode(&e.payload).map_err(|err| WireError {
            field: "entries.payload",
            message: err.to_string(),
        })?,
    })
}

pub(crate) fn append_request(
    r: &AppendEntriesRequest<TypeConfig>,
) -> Result<pb::AppendEntriesRequest, codec::CodecError> {
    Ok(pb::AppendEntriesRequest {
        vote: Some(vote(&r.vote)),
        prev_log_id: opt_log_id(&r.prev_log_id),
        entries: r.entries.iter().map(entry).collect::<Result<_, _>>()?,
        leader_commit: opt_log_id(&r.leader_commit),
    })
}

pub(crate) fn from_append_request(
    r: &pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    Ok(AppendEntriesRequest {
        vote: from_vote(r.vote.as_ref(), "vote")?,
        prev_log_id: from_opt_log_id(&r.prev_log_id),
        entries: r.entries.iter().map(from_entry).collect::<Result<_, _>>()?,
        leader_commit: from_opt_log_id(&r.leader_commit),
    })
}

pub(crate) fn append_response(r: &AppendEntriesResponse<NodeId>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(true),
        AppendEntriesResponse::PartialSuccess(m) => R::PartialSuccess(pb::PartialSuccess {
            matching: opt_log_id(m),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(true),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote(v)),
    };
    pb::AppendEntriesResponse { result: Some(result) }
}

pub(crate) fn from_append_response(
    r: &pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<NodeId>, WireError> {
    use pb::append_entries_response::Result as R;
    Ok(match required(r.result.as_ref(), "result")? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(p) => AppendEntriesResponse::PartialSuccess(from_opt_log_id(&p.matching)),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(from_vote(Some(v), "result.higher_vote")?),
    })
}

pub(crate) fn vote_request(r: &VoteRequest<NodeId>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote(&r.vote)),
        last_log_id: opt_log_id(&r.last_log_id),
    }
}

pub(crate) fn from_vote_request(r: &pb::VoteRequest) -> Result<VoteRequest<NodeId>, WireError> {
    Ok(VoteRequest {
        vote: from_vote(r.vote.as_ref(), "vote")?,
        last_log_id: from_opt_log_id(&r.last_log_id),
    })
}

pub(crate) fn vote_response(r: &VoteResponse<NodeId>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id(&r.last_log_id),
    }
}

pub(crate) fn from_vote_response(r: &pb::VoteResponse) -> Result<VoteResponse<NodeId>, WireError> {
    Ok(VoteResponse {
        vote: from_vote(r.vote.as_ref(), "vote")?,
        vote_granted: r.vote_granted,
        last_log_id: from_opt_log_id(&r.last_log_id),
    })
}

/// The request with its chunk moved out of it, so the chunk is not copied.
pub(crate) fn snapshot_request(r: InstallSnapshotRequest<TypeConfig>) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest {
        vote: Some(vote(&r.vote)),
        meta: Some(pb::SnapshotMeta {
            last_log_id: opt_log_id(&r.meta.last_log_id),
            last_membership: Some(membership(&r.meta.last_membership)),
            snapshot_id: r.meta.snapshot_id,
        }),
        offset: r.offset,
        data: r.data,
        done: r.done,
    }
}

pub(crate) fn from_snapshot_request(
    r: pb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<TypeConfig>, WireError> {
    let meta = required(r.meta, "meta")?;
    Ok(InstallSnapshotRequest {
        vote: from_vote(r.vote.as_ref(), "vote")?,
        meta: SnapshotMeta {
            last_log_id: from_opt_log_id(&meta.last_log_id),
            last_membership: from_membership(meta.last_membership.as_ref())?,
            snapshot_id: meta.snapshot_id,
        },
        offset: r.offset,
        data: r.data,
        done: r.done,
    })
}

fn segment(s: &SnapshotSegmentId) -> pb::SnapshotSegmentId {
    pb::SnapshotSegmentId {
        id: s.id.clone(),
        offset: s.offset,
    }
}

fn from_segment(
    s: Option<&pb::SnapshotSegmentId>,
    field: &'static str,
) -> Result<SnapshotSegmentId, WireError> {
    let s = required(s, field)?;
    Ok(SnapshotSegmentId {
        id: s.id.clone(),
        offset: s.offset,
    })
}

pub(crate) fn snapshot_response(
    r: Result<InstallSnapshotResponse<NodeId>, SnapshotMismatch>,
) -> pb::InstallSnapshotResponse {
    use pb::install_snapshot_response::Result as R;
    let result = match r {
        Ok(resp) => R::Vote(vote(&resp.vote)),
        Err(m) => R::Mismatch(pb::SnapshotMismatch {
            expect: Some(segment(&m.expect)),
            got: Some(segment(&m.got)),
        }),
    };
    pb::InstallSnapshotResponse { result: Some(result) }
}

pub(crate) fn from_snapshot_response(
    r: &pb::InstallSnapshotResponse,
) -> Result<Result<InstallSnapshotResponse<NodeId>, InstallSnapshotError>, WireError> {
    use pb::install_snapshot_response::Result as R;
    Ok(match required(r.result.as_ref(), "result")? {
        R::Vote(v) => Ok(InstallSnapshotResponse {
            vote: from_vote(Some(v), "result.vote")?,
        }),
        R::Mismatch(m) => Err(InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
            expect: from_segment(m.expect.as_ref(), "result.mismatch.expect")?,
            got: from_segment(m.got.as_ref(), "result.mismatch.got")?,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::{Command, Request};
    use openraft::EntryPayload;

    fn lid(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    #[test]
    fn append_entries_round_trips() {
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 7),
            prev_log_id: Some(lid(2, 7, 10)),
            entries: vec![
                Entry {
                    log_id: lid(3, 7, 11),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: lid(3, 7, 12),
                    payload: EntryPayload::Normal(Request {
                        commands: vec![Command::Deregister {
                            service_id: "web-1".into(),
                        }],
                    }),
                },
            ],
            leader_commit: None,
        };
        let back = from_append_request(&append_request(&req).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));
        for resp in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(lid(1, 2, 3))),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(9, 1)),
        ] {
            assert_eq!(from_append_response(&append_response(&resp)).unwrap(), resp);
        }
    }

    #[test]
    fn snapshot_meta_keeps_the_membership() {
        let nodes = BTreeMap::from([
            (
                1,
                ServerNode {
                    name: "s1".into(),
                    raft_addr: "127.0.0.1:1".into(),
                    grpc_addr: "127.0.0.1:2".into(),
                },
            ),
            (2, ServerNode::default()),
        ]);
        let m = StoredMembership::new(
            Some(lid(1, 1, 1)),
            Membership::new(vec![BTreeSet::from([1])], nodes),
        );
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new(4, 1),
            meta: SnapshotMeta {
                last_log_id: Some(lid(4, 1, 99)),
                last_membership: m,
                snapshot_id: "4-99-0".into(),
            },
            offset: 1024,
            data: vec![1, 2, 3],
            done: false,
        };
        let text = format!("{req:?}");
        let back = from_snapshot_request(snapshot_request(req)).unwrap();
        assert_eq!(format!("{back:?}"), text);
    }

    #[test]
    fn malformed_messages_name_the_field() {
        let e = from_append_request(&pb::AppendEntriesRequest::default()).unwrap_err();
        assert_eq!(e.field, "vote");
        let bad = pb::AppendEntriesRequest {
            vote: Some(pb::Vote::default()),
            entries: vec![pb::Entry {
                log_id: Some(pb::LogId::default()),
                payload: b"{not a record".to_vec(),
            }],
            ..Default::default()
        };
        assert_eq!(from_append_request(&bad).unwrap_err().field, "entries.payload");
        let e = from_snapshot_request(pb::InstallSnapshotRequest {
            vote: Some(pb::Vote::default()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "meta");
    }
}
