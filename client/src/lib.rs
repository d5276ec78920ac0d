//! Tribune's Rust client: typed calls to an agent's gRPC API (`tribune.v1`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tribune_client::Error> {
//! use tribune_client::{Client, api};
//! let client = Client::connect("127.0.0.1:8502").await?;
//! let req = api::RegisterRequest {
//!     service: Some(api::ServiceSpec { name: "web".into(), id: "web-1".into(), port: 8080, ..Default::default() }),
//!     ..Default::default()
//! };
//! let resp = client.register(req).await?;
//! println!("registered at index {}", resp.index);
//! # Ok(()) }
//! ```
//!
//! Every call returns the Raft index its answer reflects; watches yield one
//! [`api::WatchEvent`] per index, starting with a snapshot.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

use futures::Stream;
use tokio::io::AsyncWriteExt;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};
use tribune_proto::v1::catalog_client::CatalogClient;
use tribune_proto::v1::connect_ca_client::ConnectCaClient;
use tribune_proto::v1::health_client::HealthClient;
use tribune_proto::v1::intentions_client::IntentionsClient;
use tribune_proto::v1::operator_client::OperatorClient;

/// The wire types of `tribune.v1`.
pub use tribune_proto::v1 as api;

/// Metadata key that carries an ACL token.
pub const TOKEN_HEADER: &str = "x-tribune-token";

/// Chunk size for streamed snapshot uploads.
const CHUNK: usize = 64 * 1024;

/// What can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not `HOST:PORT` or a URL.
    #[error("invalid agent address {0:?}")]
    Address(String),
    /// No connection could be made.
    #[error("cannot reach the agent at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why it failed.
        #[source]
        source: tonic::transport::Error,
    },
    /// The agent answered with an error.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Status),
    /// Local I/O (snapshot files).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

// Not `#[from]`: that would also make the status the error's source, and
// the CLI would print its message twice.
impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::Status(s)
    }
}

impl Error {
    /// The gRPC code, when the agent answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

fn code_name(c: tonic::Code) -> String {
    // "InvalidArgument" -> "invalid argument"
    let s = format!("{c:?}");
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(ch.to_lowercase());
    }
    out
}

/// A connection to one agent. Cheap to clone; calls may run concurrently.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    /// Connects to `addr` (`HOST:PORT` or `http://HOST:PORT`).
    pub async fn connect(addr: &str) -> Result<Self, Error> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|_| Error::Address(addr.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })?;
        Ok(Client { channel, token: None })
    }

    /// Sends `token` with every call.
    pub fn with_token(mut self, token: &str) -> Result<Self, Error> {
        self.token = Some(
            token
                .parse()
                .map_err(|_| Error::Status(Status::invalid_argument("token: not valid ASCII metadata")))?,
        );
        Ok(self)
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(TOKEN_HEADER, t.clone());
        }
        r
    }

    fn catalog(&self) -> CatalogClient<Channel> {
        CatalogClient::new(self.channel.clone())
    }

    fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    fn operator(&self) -> OperatorClient<Channel> {
        OperatorClient::new(self.channel.clone())
    }

    fn ca(&self) -> ConnectCaClient<Channel> {
        ConnectCaClient::new(self.channel.clone())
    }

    fn intentions(&self) -> IntentionsClient<Channel> {
        IntentionsClient::new(self.channel.clone())
    }

    /// One instance by ID.
    pub async fn get_instance(&self, id: &str) -> Result<api::GetInstanceResponse, Error> {
        let req = api::GetInstanceRequest { id: id.to_string() };
        Ok(self.catalog().get_instance(self.req(req)).await?.into_inner())
    }

    /// The CA's roots and trust domain.
    pub async fn ca_roots(&self) -> Result<api::CaRootsResponse, Error> {
        Ok(self
            .ca()
            .roots(self.req(api::CaRootsRequest {}))
            .await?
            .into_inner())
    }

    /// Rotates the CA root (the new one cross-signed by the old).
    pub async fn ca_rotate(&self) -> Result<api::CaRotateResponse, Error> {
        Ok(self
            .ca()
            .rotate(self.req(api::CaRotateRequest {}))
            .await?
            .into_inner())
    }

    /// A leaf certificate for `service`.
    pub async fn ca_sign(&self, service: &str) -> Result<api::CaSignResponse, Error> {
        let req = api::CaSignRequest {
            service: service.to_string(),
        };
        Ok(self.ca().sign(self.req(req)).await?.into_inner())
    }

    /// Creates or replaces the intention `source -> destination`.
    pub async fn intention_upsert(
        &self,
        source: &str,
        destination: &str,
        allow: bool,
    ) -> Result<api::IntentionUpsertResponse, Error> {
        let req = api::IntentionUpsertRequest {
            source: source.to_string(),
            destination: destination.to_string(),
            allow,
        };
        Ok(self.intentions().upsert(self.req(req)).await?.into_inner())
    }

    /// Every intention and the default.
    pub async fn intention_list(&self) -> Result<api::IntentionListResponse, Error> {
        Ok(self
            .intentions()
            .list(self.req(api::IntentionListRequest {}))
            .await?
            .into_inner())
    }

    /// Removes the intention `source -> destination`.
    pub async fn intention_delete(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<api::IntentionDeleteResponse, Error> {
        let req = api::IntentionDeleteRequest {
            source: source.to_string(),
            destination: destination.to_string(),
        };
        Ok(self.intentions().delete(self.req(req)).await?.into_inner())
    }

    /// Whether `source` may connect to `destination`.
    pub async fn intention_check(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<api::IntentionCheckResponse, Error> {
        let req = api::IntentionCheckRequest {
            source: source.to_string(),
            destination: destination.to_string(),
        };
        Ok(self.intentions().check(self.req(req)).await?.into_inner())
    }

    /// Registers (or updates, by ID) a service instance; returns once durable.
    pub async fn register(&self, req: api::RegisterRequest) -> Result<api::RegisterResponse, Error> {
        Ok(self.catalog().register(self.req(req)).await?.into_inner())
    }

    /// Removes an instance and its sidecar.
    pub async fn deregister(&self, service_id: &str) -> Result<api::DeregisterResponse, Error> {
        let req = api::DeregisterRequest {
            service_id: service_id.to_string(),
        };
        Ok(self.catalog().deregister(self.req(req)).await?.into_inner())
    }

    /// Every service name with instance counts.
    pub async fn list_services(&self) -> Result<api::ListServicesResponse, Error> {
        Ok(self
            .catalog()
            .list_services(self.req(api::ListServicesRequest {}))
            .await?
            .into_inner())
    }

    /// Every node.
    pub async fn list_nodes(&self) -> Result<api::ListNodesResponse, Error> {
        Ok(self
            .catalog()
            .list_nodes(self.req(api::ListNodesRequest {}))
            .await?
            .into_inner())
    }

    /// A service's instances with their health.
    pub async fn get_service(
        &self,
        name: &str,
        passing_only: bool,
    ) -> Result<api::GetServiceResponse, Error> {
        let req = api::GetServiceRequest {
            name: name.to_string(),
            passing_only,
        };
        Ok(self.catalog().get_service(self.req(req)).await?.into_inner())
    }

    /// Follows a service: a snapshot (or the changes since `from_index`), then each change.
    pub async fn watch_service(
        &self,
        name: &str,
        from_index: u64,
    ) -> Result<Streaming<api::WatchEvent>, Error> {
        let req = api::WatchServiceRequest {
            name: name.to_string(),
            from_index,
        };
        Ok(self.catalog().watch_service(self.req(req)).await?.into_inner())
    }

    /// Follows the whole catalog.
    pub async fn watch_catalog(&self, from_index: u64) -> Result<Streaming<api::WatchEvent>, Error> {
        let req = api::WatchCatalogRequest { from_index };
        Ok(self.catalog().watch_catalog(self.req(req)).await?.into_inner())
    }

    /// Sets a TTL check's status.
    pub async fn update_ttl(
        &self,
        check_id: &str,
        status: api::HealthStatus,
        note: &str,
    ) -> Result<api::UpdateTtlResponse, Error> {
        let req = api::UpdateTtlRequest {
            check_id: check_id.to_string(),
            status: status as i32,
            note: note.to_string(),
        };
        Ok(self.health().update_ttl(self.req(req)).await?.into_inner())
    }

    /// Checks, optionally only those in `status` or of `service`.
    pub async fn list_checks(
        &self,
        status: Option<api::HealthStatus>,
        service: Option<&str>,
    ) -> Result<api::ListChecksResponse, Error> {
        let req = api::ListChecksRequest {
            status: status.map(|s| s as i32).unwrap_or(0),
            service: service.unwrap_or_default().to_string(),
        };
        Ok(self.health().list_checks(self.req(req)).await?.into_inner())
    }

    /// The Raft configuration and who leads it.
    pub async fn raft_peers(&self) -> Result<api::RaftListPeersResponse, Error> {
        Ok(self
            .operator()
            .raft_list_peers(self.req(api::RaftListPeersRequest {}))
            .await?
            .into_inner())
    }

    /// Streams a whole-state snapshot into `out`; returns its size in bytes.
    pub async fn snapshot_save<W: tokio::io::AsyncWrite + Unpin>(&self, out: &mut W) -> Result<u64, Error> {
        let mut stream = self
            .operator()
            .snapshot_save(self.req(api::SnapshotSaveRequest {}))
            .await?
            .into_inner();
        let mut n = 0u64;
        while let Some(chunk) = stream.message().await? {
            out.write_all(&chunk.data).await?;
            n += chunk.data.len() as u64;
        }
        out.flush().await?;
        Ok(n)
    }

    /// Replaces the whole catalog with a snapshot's.
    pub async fn snapshot_restore(&self, bytes: Vec<u8>) -> Result<api::SnapshotRestoreResponse, Error> {
        let chunks: Vec<api::SnapshotChunk> = bytes
            .chunks(CHUNK)
            .map(|c| api::SnapshotChunk { data: c.to_vec() })
            .collect();
        let stream = futures::stream::iter(chunks);
        Ok(self
            .operator()
            .snapshot_restore(self.req(stream))
            .await?
            .into_inner())
    }
}

/// Folds watch events into the current set of instances, keyed by ID, so a
/// watcher sees the same thing as a fresh read at the event's index.
#[derive(Debug, Default, Clone)]
pub struct WatchState {
    /// The index of the last event applied.
    pub index: u64,
    /// Instances by ID.
    pub instances: std::collections::BTreeMap<String, api::InstanceHealth>,
}

impl WatchState {
    /// Applies one event.
    pub fn apply(&mut self, ev: &api::WatchEvent) {
        if ev.snapshot {
            self.instances.clear();
        }
        for h in &ev.upserts {
            if let Some(s) = &h.service {
                self.instances.insert(s.id.clone(), h.clone());
            }
        }
        for id in &ev.removed_ids {
            self.instances.remove(id);
        }
        self.index = ev.index;
    }
}

/// Turns a watch into a stream of events with transport errors mapped.
pub fn events(s: Streaming<api::WatchEvent>) -> impl Stream<Item = Result<api::WatchEvent, Error>> {
    futures::StreamExt::map(s, |r| r.map_err(Error::from))
}
