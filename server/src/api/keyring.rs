//! `tribune.v1.Keyring`, the same on servers and client agents: gossip
//! keys on this agent (`Local`) or on every alive member of the LAN pool
//! (`Apply`, which calls each member's `Local` with the caller's token:
//! a server through its server port, which every server has, a client
//! agent through its gRPC port).

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
    /// A server's clients of other servers' server port (`None` on a
    /// client agent, which reaches servers on their gRPC port).
    peers: Option<std::sync::Arc<crate::rpc::peers::PeerClients>>,
}

impl KeyringApi {
    pub(crate) fn new(gossip: Gossip, peers: Option<std::sync::Arc<crate::rpc::peers::PeerClients>>) -> Self {
        KeyringApi { gossip, peers }
    }

    /// The channel to `m`'s `Keyring` service.
    fn channel_to(&self, m: &tribune_client::gossip::Member) -> Result<tonic::transport::Channel, String> {
        if let Some(peers) = &self.peers
            && m.role == tribune_client::gossip::Role::Server
            && !m.server_addr.is_empty()
        {
            return peers.channel(&m.server_addr).map_err(|e| e.to_string());
        }
        if m.grpc_addr.is_empty() {
            return Err(format!(
                "{} has no plaintext gRPC port: ask one of the servers",
                m.name
            ));
        }
        tonic::transport::Endpoint::from_shared(format!("http://{}", m.grpc_addr))
            .map(|e| e.connect_timeout(MEMBER_TIMEOUT).connect_lazy())
            .map_err(|e| format!("{}: {e}", m.grpc_addr))
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

async fn ask(
    name: String,
    channel: Result<tonic::transport::Channel, String>,
    req: pb::KeyringRequest,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> Result<Vec<String>, String> {
    let call = async {
        let mut req = Request::new(req);
        if let Some(t) = token {
            req.metadata_mut().insert(crate::acl::TOKEN_HEADER, t);
        }
        KeyringClient::new(channel?)
            .local(req)
            .await
            .map(|r| r.into_inner().keys)
            .map_err(|s| s.message().to_string())
    };
    match tokio::time::timeout(MEMBER_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer from {name} within {MEMBER_TIMEOUT:?}")),
    }
}

#[tonic::async_trait]
impl Keyring for KeyringApi {
    async fn apply(&self, req: Request<pb::KeyringRequest>) -> Result<Response<pb::KeyringResponse>, Status> {
        let token = req.metadata().get(crate::acl::TOKEN_HEADER).cloned();
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
            let (name, channel, req, token) =
                (m.name.clone(), self.channel_to(m), req.clone(), token.clone());
            async move { ask(name, channel, req, token).await }
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
