//! The primary datacenter, as the servers of a secondary one reach it: it
//! owns authorization, so intention writes go there, and its intentions
//! are copied here (`replication.rs`). Calls are typed (the generated
//! clients of `tribune.v1`) and go to the primary's alive servers in turn
//! over their server port.

use std::future::Future;
use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tribune_client::DATACENTER_HEADER;

use super::wan::Wan;
use crate::rpc::peers::PeerClients;

pub(crate) struct Primary {
    name: String,
    wan: Arc<Wan>,
    peers: Arc<PeerClients>,
}

impl Primary {
    pub(crate) fn new(name: String, wan: Arc<Wan>, peers: Arc<PeerClients>) -> Self {
        Primary { name, wan, peers }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether this server's datacenter is a secondary one.
    pub(crate) fn is_elsewhere(&self) -> bool {
        self.name != self.wan.local()
    }

    /// Sends `req` to the primary as it came (token, request ID), naming
    /// the primary as the datacenter that serves it, so that the primary
    /// never sends it back here.
    pub(crate) async fn forward<Req, Resp, F, Fut>(
        &self,
        req: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let mut metadata = req.metadata().clone();
        if let Ok(v) = self.name.parse() {
            metadata.insert(DATACENTER_HEADER, v);
        }
        let msg = req.into_inner();
        self.call(|ch| {
            call(
                ch,
                Request::from_parts(metadata.clone(), Default::default(), msg.clone()),
            )
        })
        .await
    }

    /// Runs `call` against the primary's alive servers in turn, until one
    /// answers anything but UNAVAILABLE.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let servers = self.wan.servers(&self.name);
        let mut last = format!(
            "no server of the primary datacenter {} is alive in the WAN pool",
            self.name
        );
        for addr in servers {
            let channel = match self.peers.channel(&addr) {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match call(channel).await {
                Err(s) if s.code() == tonic::Code::Unavailable => last = format!("{addr}: {}", s.message()),
                other => return other,
            }
        }
        Err(super::forward::unreachable(
            &self.name,
            format!(
                "the primary datacenter {} could not be reached: {last}",
                self.name
            ),
        ))
    }
}
