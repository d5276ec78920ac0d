//! `tribune.v1.Keyring`, the same on servers and client agents: gossip
//! keys on this agent (`Local`) or on every alive member of the LAN pool
//! (`Apply`, which calls each member's `Local` through its gRPC port).

use std::time::Duration;

use tonic::{Request, Response, Status};
use tribune_client::gossip::{Gossip, KeyringError, MemberState};
use tribune_proto::v1 as pb;
use tribune_proto::v1::keyring_client::KeyringClient;
use tribune_proto::v1::keyring_server::Keyring;

/// How long one member may take to answer during a fan-out.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct KeyringApi {
    gossip: Gossip,
}

impl KeyringApi {
    pub(crate) fn new(gossip: Gossip) -> Self {
        KeyringApi { gossip }
    }

    fn local(&self, req: &pb::KeyringRequest) -> Result<Vec<String>, Status> {
        let op = pb::KeyringOp::try_from(req.op).unwrap_or(pb::KeyringOp::Unspecified);
        let res = match op {
            pb::KeyringOp::List => Ok(()),
            pb::KeyringOp::Install => self.gossip.keyring_install(&req.key),
            pb::KeyringOp::Use => self.gossip.keyring_use(&req.key),
            pb::KeyringOp::Remove => self.gossip.keyring_remove(&req.key),
            pb::KeyringOp::Unspecified => {
                return Err(Status::invalid_argument("op: use LIST, INSTALL, USE or REMOVE"));
            }
        };
        res.map_err(keyring_status)?;
        if !self.gossip.encrypted() {
            return Err(keyring_status(KeyringError::NotEnabled));
        }
        Ok(self.gossip.keyring_list())
    }
}

fn keyring_status(e: KeyringError) -> Status {
    match e {
        KeyringError::NotEnabled => Status::failed_precondition(e.to_string()),
        KeyringError::Base64 { .. } | KeyringError::KeyLength { .. } => {
            Status::invalid_argument(format!("key: {e}"))
        }
        KeyringError::NotInstalled | KeyringError::RemovePrimary => {
            Status::failed_precondition(format!("key: {e}"))
        }
        other => Status::internal(other.to_string()),
    }
}

async fn ask(addr: String, req: pb::KeyringRequest) -> Result<Vec<String>, String> {
    let call = async {
        let mut c = KeyringClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        c.local(req)
            .await
            .map(|r| r.into_inner().keys)
            .map_err(|s| s.message().to_string())
    };
    match tokio::time::timeout(MEMBER_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer from {addr} within {MEMBER_TIMEOUT:?}")),
    }
}

#[tonic::async_trait]
impl Keyring for KeyringApi {
    async fn apply(&self, req: Request<pb::KeyringRequest>) -> Result<Response<pb::KeyringResponse>, Status> {
        let req = req.into_inner();
        // Checked here first, so a bad key is refused before any member changes.
        if !req.key.is_empty() {
            tribune_client::gossip::Keyring::new(&req.key).map_err(keyring_status)?;
        }
        if !self.gossip.encrypted() {
            return Err(keyring_status(KeyringError::NotEnabled));
        }
        let members: Vec<_> = self
            .gossip
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Alive && !m.member.is_placeholder())
            .map(|m| m.member)
            .collect();
        tracing::info!(
            op = req.op,
            members = members.len(),
            "keyring operation on every member"
        );
        let calls = members.iter().map(|m| {
            let (addr, req) = (m.grpc_addr.clone(), req.clone());
            async move { ask(addr, req).await }
        });
        let results = futures::future::join_all(calls).await;
        Ok(Response::new(pb::KeyringResponse {
            members: members
                .iter()
                .zip(results)
                .map(|(m, r)| match r {
                    Ok(keys) => pb::KeyringMemberResult {
                        node: m.name.clone(),
                        ok: true,
                        error: String::new(),
                        keys,
                    },
                    Err(error) => pb::KeyringMemberResult {
                        node: m.name.clone(),
                        ok: false,
                        error,
                        keys: Vec::new(),
                    },
                })
                .collect(),
        }))
    }

    async fn local(
        &self,
        req: Request<pb::KeyringRequest>,
    ) -> Result<Response<pb::KeyringLocalResponse>, Status> {
        let keys = self.local(&req.into_inner())?;
        Ok(Response::new(pb::KeyringLocalResponse { keys }))
    }
}
