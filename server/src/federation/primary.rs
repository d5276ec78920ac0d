//! The primary datacenter, as the servers of a secondary one reach it: it
//! owns authorization, so intention writes go there, and its intentions
//! are copied here (`replication.rs`). Calls are typed (the generated
//! clients of `tribune.v1`) and go to the primary's alive servers in turn
//! over their server port.

use std::future::Future;
use std::sync::Arc;

use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tribune_client::{DATACENTER_HEADER, UNREACHABLE_DATACENTER_HEADER};

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

    /// `metadata` for a call to the primary: the caller's (token, request
    /// ID), naming the primary as the datacenter that serves it, so that
    /// the primary never sends it back here.
    pub(crate) fn metadata(&self, metadata: &MetadataMap) -> MetadataMap {
        let mut m = metadata.clone();
        if let Ok(v) = self.name.parse() {
            m.insert(DATACENTER_HEADER, v);
        }
        m
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
        let mut s = Status::unavailable(format!(
            "the primary datacenter {} could not be reached: {last}",
            self.name
        ));
        if let Ok(v) = self.name.parse() {
            s.metadata_mut().insert(UNREACHABLE_DATACENTER_HEADER, v);
        }
        Err(s)
    }
}
