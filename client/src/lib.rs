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

pub mod agent;
pub mod checks;
pub mod gossip;
pub mod tls;

use std::time::Duration;

use futures::Stream;
use tokio::io::AsyncWriteExt;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};
use tribune_proto::v1::acl_client::AclClient;
use tribune_proto::v1::catalog_client::CatalogClient;
use tribune_proto::v1::connect_ca_client::ConnectCaClient;
use tribune_proto::v1::health_client::HealthClient;
use tribune_proto::v1::intentions_client::IntentionsClient;
use tribune_proto::v1::keyring_client::KeyringClient;
use tribune_proto::v1::operator_client::OperatorClient;
use tribune_proto::v1::peering_client::PeeringClient;

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

/// A connection to one or more agents. Cheap to clone; calls may run
/// concurrently.
///
/// Given several addresses (`"a:8502,b:8502"`), a call that finds its
/// server unavailable moves on to the next one and tries again, for up to
/// [`RETRY_FOR`]. Every write carries a request ID, so a write retried after
/// an ambiguous failure is still applied once.
#[derive(Clone)]
pub struct Client {
    channels: std::sync::Arc<Vec<(String, Channel)>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    datacenter: Option<MetadataValue<tonic::metadata::Ascii>>,
    stale: bool,
}

/// How long a call keeps retrying across servers before it gives up.
pub const RETRY_FOR: Duration = Duration::from_secs(20);

/// How long one attempt may take before the next server is tried: a server
/// that accepts connections but does not answer (frozen, partitioned) must
/// not hold a call forever.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Metadata that names a write, so a retry applies once.
pub const REQUEST_ID_HEADER: &str = "x-tribune-request-id";
/// Metadata naming the datacenter that serves a request (the serving
/// server forwards it there when it is another).
pub const DATACENTER_HEADER: &str = "x-tribune-datacenter";
/// Metadata that asks for a read of the serving agent's own state.
pub const CONSISTENCY_HEADER: &str = "x-tribune-consistency";

/// Metadata on an error that says which other datacenter could not be
/// reached: another server of this datacenter would fare no better, so the
/// call is not retried.
pub const UNREACHABLE_DATACENTER_HEADER: &str = "x-tribune-unreachable-datacenter";

fn retryable(s: &Status) -> bool {
    if s.metadata().contains_key(UNREACHABLE_DATACENTER_HEADER) {
        return false;
    }
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        // A connection that broke mid-call.
        tonic::Code::Unknown | tonic::Code::Internal => {
            let m = s.message();
            m.contains("transport")
                || m.contains("connection")
                || m.contains("h2")
                || m.contains("broken pipe")
        }
        _ => false,
    }
}

fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Client {
    /// Connects to `addr`: `HOST:PORT`, `http://HOST:PORT`, or several of
    /// them separated by commas.
    pub async fn connect(addr: &str) -> Result<Self, Error> {
        let addrs: Vec<String> = addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        Self::connect_any(&addrs).await
    }

    /// Connects to the first of `addrs` that answers; the others stand by.
    pub async fn connect_any(addrs: &[String]) -> Result<Self, Error> {
        Self::connect_any_with(addrs, None).await
    }

    /// Like [`Client::connect_any`], over TLS through `tls` when given.
    pub async fn connect_any_with(addrs: &[String], tls: Option<&tls::TlsConnector>) -> Result<Self, Error> {
        if addrs.is_empty() {
            return Err(Error::Address(String::new()));
        }
        let endpoint = |a: &String| {
            let url = if a.contains("://") {
                a.clone()
            } else {
                format!("http://{a}")
            };
            Endpoint::from_shared(url)
                .map_err(|_| Error::Address(a.clone()))
                .map(|e| e.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true))
        };
        let mut channels = Vec::new();
        for a in addrs {
            let e = endpoint(a)?;
            let ch = match tls {
                Some(t) => e.connect_with_connector_lazy(t.clone()),
                None => e.connect_lazy(),
            };
            channels.push((a.clone(), ch));
        }
        // Start with one that answers now; fail like a single connect would.
        let mut first = None;
        let mut last_err = None;
        for (i, (a, _)) in channels.iter().enumerate() {
            let probe = endpoint(a)?;
            let probed = match tls {
                Some(t) => probe.connect_with_connector(t.clone()).await,
                None => probe.connect().await,
            };
            match probed {
                Ok(_) => {
                    first = Some(i);
                    break;
                }
                Err(source) => {
                    last_err = Some(Error::Connect {
                        addr: a.clone(),
                        source,
                    })
                }
            }
        }
        let Some(first) = first else {
            return Err(last_err.unwrap_or_else(|| Error::Address(addrs.join(","))));
        };
        Ok(Client {
            channels: std::sync::Arc::new(channels),
            current: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(first)),
            token: None,
            datacenter: None,
            stale: false,
        })
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

    /// Sends every call to datacenter `dc` (the serving server forwards it
    /// there when it is another one).
    pub fn datacenter(mut self, dc: &str) -> Result<Self, Error> {
        self.datacenter =
            Some(dc.parse().map_err(|_| {
                Error::Status(Status::invalid_argument("datacenter: not valid ASCII metadata"))
            })?);
        Ok(self)
    }

    /// Reads answer from the serving agent's own state, without asking the
    /// leader (faster; may lag behind the latest writes).
    pub fn stale(mut self, stale: bool) -> Self {
        self.stale = stale;
        self
    }

    /// The address calls currently go to.
    pub fn current_addr(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.channels[i % self.channels.len()].0
    }

    fn channel(&self) -> (usize, Channel) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.channels.len();
        (i, self.channels[i].1.clone())
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(TOKEN_HEADER, t.clone());
        }
        if let Some(dc) = &self.datacenter {
            r.metadata_mut().insert(DATACENTER_HEADER, dc.clone());
        }
        r
    }

    /// One unary call, retried on the next server while the cluster is
    /// unavailable (a leader election, a server down).
    async fn unary<Req, Resp, F, Fut>(&self, write: bool, msg: Req, call: F) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let request_id = write.then(new_request_id);
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            let mut r = self.req(msg.clone());
            if let Some(id) = &request_id
                && let Ok(v) = id.parse()
            {
                r.metadata_mut().insert(REQUEST_ID_HEADER, v);
            }
            if self.stale && !write {
                r.metadata_mut()
                    .insert(CONSISTENCY_HEADER, MetadataValue::from_static("stale"));
            }
            let (i, ch) = self.channel();
            let res = match tokio::time::timeout(ATTEMPT_TIMEOUT, call(ch, r)).await {
                Ok(res) => res,
                Err(_) => Err(Status::unavailable(format!(
                    "no answer from {} within {ATTEMPT_TIMEOUT:?}",
                    self.channels[i].0
                ))),
            };
            match res {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if retryable(&s) && started.elapsed() < RETRY_FOR => {
                    attempt += 1;
                    let n = self.channels.len();
                    if n > 1 {
                        let _ = self.current.compare_exchange(
                            i,
                            (i + 1) % n,
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                    tracing::debug!(attempt, error = %s, "retrying on another server");
                    tokio::time::sleep(Duration::from_millis((50 * u64::from(attempt)).min(500))).await;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Registers (or updates, by ID) a service instance; returns once durable.
    pub async fn register(&self, req: api::RegisterRequest) -> Result<api::RegisterResponse, Error> {
        self.unary(true, req, |ch, r| async move {
            CatalogClient::new(ch).register(r).await
        })
        .await
    }

    /// Removes an instance and its sidecar.
    pub async fn deregister(&self, service_id: &str) -> Result<api::DeregisterResponse, Error> {
        let req = api::DeregisterRequest {
            service_id: service_id.to_string(),
        };
        self.unary(true, req, |ch, r| async move {
            CatalogClient::new(ch).deregister(r).await
        })
        .await
    }

    /// Every service name with instance counts.
    pub async fn list_services(&self) -> Result<api::ListServicesResponse, Error> {
        self.unary(false, api::ListServicesRequest {}, |ch, r| async move {
            CatalogClient::new(ch).list_services(r).await
        })
        .await
    }

    /// Every node.
    pub async fn list_nodes(&self) -> Result<api::ListNodesResponse, Error> {
        self.unary(false, api::ListNodesRequest {}, |ch, r| async move {
            CatalogClient::new(ch).list_nodes(r).await
        })
        .await
    }

    /// The datacenters of the federation, nearest first.
    pub async fn list_datacenters(&self) -> Result<Vec<String>, Error> {
        let r = self
            .unary(false, api::ListDatacentersRequest {}, |ch, r| async move {
                CatalogClient::new(ch).list_datacenters(r).await
            })
            .await?;
        Ok(r.datacenters)
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
        self.unary(false, req, |ch, r| async move {
            CatalogClient::new(ch).get_service(r).await
        })
        .await
    }

    /// One instance by ID.
    pub async fn get_instance(&self, id: &str) -> Result<api::GetInstanceResponse, Error> {
        let req = api::GetInstanceRequest { id: id.to_string() };
        self.unary(false, req, |ch, r| async move {
            CatalogClient::new(ch).get_instance(r).await
        })
        .await
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
        self.unary(false, req, |ch, r| async move {
            CatalogClient::new(ch).watch_service(r).await
        })
        .await
    }

    /// Follows the whole catalog.
    pub async fn watch_catalog(&self, from_index: u64) -> Result<Streaming<api::WatchEvent>, Error> {
        let req = api::WatchCatalogRequest { from_index };
        self.unary(false, req, |ch, r| async move {
            CatalogClient::new(ch).watch_catalog(r).await
        })
        .await
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
        self.unary(true, req, |ch, r| async move {
            HealthClient::new(ch).update_ttl(r).await
        })
        .await
    }

    /// Records a check's result, as the agent that runs the check saw it.
    pub async fn report_check(
        &self,
        check_id: &str,
        status: api::HealthStatus,
        output: &str,
    ) -> Result<api::ReportCheckResponse, Error> {
        let req = api::ReportCheckRequest {
            check_id: check_id.to_string(),
            status: status as i32,
            output: output.to_string(),
        };
        self.unary(true, req, |ch, r| async move {
            HealthClient::new(ch).report_check(r).await
        })
        .await
    }

    /// A gossip keyring operation on every alive member (each answers for itself).
    pub async fn keyring(&self, op: api::KeyringOp, key: &str) -> Result<api::KeyringResponse, Error> {
        let req = api::KeyringRequest {
            op: op as i32,
            key: key.to_string(),
        };
        self.unary(false, req, |ch, r| async move {
            KeyringClient::new(ch).apply(r).await
        })
        .await
    }

    /// A node with its instances and node-level checks.
    pub async fn get_node(&self, name: &str) -> Result<api::GetNodeResponse, Error> {
        let req = api::GetNodeRequest {
            name: name.to_string(),
        };
        self.unary(false, req, |ch, r| async move {
            CatalogClient::new(ch).get_node(r).await
        })
        .await
    }

    /// Removes a node with everything on it.
    pub async fn deregister_node(&self, name: &str) -> Result<api::DeregisterNodeResponse, Error> {
        let req = api::DeregisterNodeRequest {
            name: name.to_string(),
        };
        self.unary(true, req, |ch, r| async move {
            CatalogClient::new(ch).deregister_node(r).await
        })
        .await
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
        self.unary(false, req, |ch, r| async move {
            HealthClient::new(ch).list_checks(r).await
        })
        .await
    }

    /// The Raft configuration and who leads it.
    pub async fn raft_peers(&self) -> Result<api::RaftListPeersResponse, Error> {
        self.unary(false, api::RaftListPeersRequest {}, |ch, r| async move {
            OperatorClient::new(ch).raft_list_peers(r).await
        })
        .await
    }

    /// Removes a server from the Raft configuration.
    pub async fn raft_remove_peer(&self, node: &str) -> Result<api::RaftRemovePeerResponse, Error> {
        let req = api::RaftRemovePeerRequest {
            node: node.to_string(),
        };
        self.unary(false, req, |ch, r| async move {
            OperatorClient::new(ch).raft_remove_peer(r).await
        })
        .await
    }

    /// Each server's health and the cluster's failure tolerance.
    pub async fn autopilot_state(&self) -> Result<api::AutopilotStateResponse, Error> {
        self.unary(false, api::AutopilotStateRequest {}, |ch, r| async move {
            OperatorClient::new(ch).autopilot_state(r).await
        })
        .await
    }

    /// LAN gossip members as the serving agent sees them.
    pub async fn members(&self) -> Result<api::MembersResponse, Error> {
        self.unary(false, api::MembersRequest { wan: false }, |ch, r| async move {
            OperatorClient::new(ch).members(r).await
        })
        .await
    }

    /// What the serving server of a secondary datacenter copies from the
    /// primary, and how recently it succeeded.
    pub async fn replication_status(&self) -> Result<api::ReplicationStatusResponse, Error> {
        self.unary(false, api::ReplicationStatusRequest {}, |ch, r| async move {
            OperatorClient::new(ch).replication_status(r).await
        })
        .await
    }

    /// The WAN pool (the servers of every datacenter) as the serving server
    /// sees it; names are `node.datacenter`.
    pub async fn wan_members(&self) -> Result<api::MembersResponse, Error> {
        self.unary(false, api::MembersRequest { wan: true }, |ch, r| async move {
            OperatorClient::new(ch).members(r).await
        })
        .await
    }

    /// Streams a whole-state snapshot into `out`; returns its size in bytes.
    pub async fn snapshot_save<W: tokio::io::AsyncWrite + Unpin>(&self, out: &mut W) -> Result<u64, Error> {
        let mut stream = self
            .unary(false, api::SnapshotSaveRequest {}, |ch, r| async move {
                OperatorClient::new(ch).snapshot_save(r).await
            })
            .await?;
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
        let (_, ch) = self.channel();
        Ok(OperatorClient::new(ch)
            .snapshot_restore(self.req(stream))
            .await?
            .into_inner())
    }

    /// Creates the first management token (once).
    pub async fn acl_bootstrap(&self) -> Result<api::AclToken, Error> {
        let r = self
            .unary(true, api::AclBootstrapRequest {}, |ch, r| async move {
                AclClient::new(ch).bootstrap(r).await
            })
            .await?;
        r.token
            .ok_or_else(|| Error::Status(Status::internal("no token in the answer")))
    }

    /// A new policy from rules in Consul's rule language (HCL or JSON).
    pub async fn acl_policy_create(
        &self,
        name: &str,
        description: &str,
        rules: &str,
    ) -> Result<api::AclPolicy, Error> {
        let req = api::AclPolicyCreateRequest {
            name: name.to_string(),
            description: description.to_string(),
            rules: rules.to_string(),
        };
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).policy_create(r).await
            })
            .await?;
        r.policy
            .ok_or_else(|| Error::Status(Status::internal("no policy in the answer")))
    }

    /// Every policy.
    pub async fn acl_policy_list(&self) -> Result<Vec<api::AclPolicy>, Error> {
        let r = self
            .unary(false, api::AclPolicyListRequest {}, |ch, r| async move {
                AclClient::new(ch).policy_list(r).await
            })
            .await?;
        Ok(r.policies)
    }

    /// A policy by ID or name.
    pub async fn acl_policy_read(&self, id_or_name: &str) -> Result<api::AclPolicy, Error> {
        let req = api::AclPolicyReadRequest {
            id_or_name: id_or_name.to_string(),
        };
        let r = self
            .unary(false, req, |ch, r| async move {
                AclClient::new(ch).policy_read(r).await
            })
            .await?;
        r.policy
            .ok_or_else(|| Error::Status(Status::internal("no policy in the answer")))
    }

    /// Deletes a policy by ID or name.
    pub async fn acl_policy_delete(&self, id_or_name: &str) -> Result<u64, Error> {
        let req = api::AclPolicyDeleteRequest {
            id_or_name: id_or_name.to_string(),
        };
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).policy_delete(r).await
            })
            .await?;
        Ok(r.index)
    }

    /// A new token; the answer carries its secret ID, the only time it is shown.
    pub async fn acl_token_create(&self, req: api::AclTokenCreateRequest) -> Result<api::AclToken, Error> {
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).token_create(r).await
            })
            .await?;
        r.token
            .ok_or_else(|| Error::Status(Status::internal("no token in the answer")))
    }

    /// Every token, without secrets.
    pub async fn acl_token_list(&self) -> Result<Vec<api::AclToken>, Error> {
        let r = self
            .unary(false, api::AclTokenListRequest {}, |ch, r| async move {
                AclClient::new(ch).token_list(r).await
            })
            .await?;
        Ok(r.tokens)
    }

    /// One token by accessor ID, without its secret.
    pub async fn acl_token_read(&self, accessor_id: &str) -> Result<api::AclToken, Error> {
        let req = api::AclTokenReadRequest {
            accessor_id: accessor_id.to_string(),
        };
        let r = self
            .unary(false, req, |ch, r| async move {
                AclClient::new(ch).token_read(r).await
            })
            .await?;
        r.token
            .ok_or_else(|| Error::Status(Status::internal("no token in the answer")))
    }

    /// Deletes a token: its secret is unknown from then on.
    pub async fn acl_token_delete(&self, accessor_id: &str) -> Result<u64, Error> {
        let req = api::AclTokenDeleteRequest {
            accessor_id: accessor_id.to_string(),
        };
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).token_delete(r).await
            })
            .await?;
        Ok(r.index)
    }

    /// Replaces a token's links and description; its secret stays.
    pub async fn acl_token_update(&self, req: api::AclTokenUpdateRequest) -> Result<api::AclToken, Error> {
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).token_update(r).await
            })
            .await?;
        r.token
            .ok_or_else(|| Error::Status(Status::internal("no token in the answer")))
    }

    /// Replaces a policy's rules (and description when given).
    pub async fn acl_policy_update(
        &self,
        id_or_name: &str,
        description: &str,
        rules: &str,
    ) -> Result<api::AclPolicy, Error> {
        let req = api::AclPolicyUpdateRequest {
            id_or_name: id_or_name.to_string(),
            description: description.to_string(),
            rules: rules.to_string(),
        };
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).policy_update(r).await
            })
            .await?;
        r.policy
            .ok_or_else(|| Error::Status(Status::internal("no policy in the answer")))
    }

    /// A new role: policies and identities tokens can link to by name.
    pub async fn acl_role_create(&self, req: api::AclRoleCreateRequest) -> Result<api::AclRole, Error> {
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).role_create(r).await
            })
            .await?;
        r.role
            .ok_or_else(|| Error::Status(Status::internal("no role in the answer")))
    }

    /// Every role.
    pub async fn acl_role_list(&self) -> Result<Vec<api::AclRole>, Error> {
        let r = self
            .unary(false, api::AclRoleListRequest {}, |ch, r| async move {
                AclClient::new(ch).role_list(r).await
            })
            .await?;
        Ok(r.roles)
    }

    /// A role by ID or name.
    pub async fn acl_role_read(&self, id_or_name: &str) -> Result<api::AclRole, Error> {
        let req = api::AclRoleReadRequest {
            id_or_name: id_or_name.to_string(),
        };
        let r = self
            .unary(false, req, |ch, r| async move {
                AclClient::new(ch).role_read(r).await
            })
            .await?;
        r.role
            .ok_or_else(|| Error::Status(Status::internal("no role in the answer")))
    }

    /// Deletes a role by ID or name.
    pub async fn acl_role_delete(&self, id_or_name: &str) -> Result<u64, Error> {
        let req = api::AclRoleDeleteRequest {
            id_or_name: id_or_name.to_string(),
        };
        let r = self
            .unary(true, req, |ch, r| async move {
                AclClient::new(ch).role_delete(r).await
            })
            .await?;
        Ok(r.index)
    }

    /// The token this client sends.
    pub async fn acl_whoami(&self) -> Result<api::AclToken, Error> {
        let r = self
            .unary(false, api::AclWhoAmIRequest {}, |ch, r| async move {
                AclClient::new(ch).who_am_i(r).await
            })
            .await?;
        r.token
            .ok_or_else(|| Error::Status(Status::internal("no token in the answer")))
    }

    /// The CA's roots and trust domain.
    pub async fn ca_roots(&self) -> Result<api::CaRootsResponse, Error> {
        self.unary(false, api::CaRootsRequest {}, |ch, r| async move {
            ConnectCaClient::new(ch).roots(r).await
        })
        .await
    }

    /// Rotates the CA root (the new one cross-signed by the old).
    pub async fn ca_rotate(&self) -> Result<api::CaRotateResponse, Error> {
        let (_, ch) = self.channel();
        Ok(ConnectCaClient::new(ch)
            .rotate(self.req(api::CaRotateRequest {}))
            .await?
            .into_inner())
    }

    /// A leaf certificate for `service`.
    pub async fn ca_sign(&self, service: &str) -> Result<api::CaSignResponse, Error> {
        let req = api::CaSignRequest {
            service: service.to_string(),
        };
        self.unary(false, req, |ch, r| async move {
            ConnectCaClient::new(ch).sign(r).await
        })
        .await
    }

    /// A client agent's TLS certificate for `node`, signed from `csr_pem`
    /// (auto-encrypt).
    pub async fn ca_sign_agent(&self, node: &str, csr_pem: &str) -> Result<api::CaSignAgentResponse, Error> {
        let req = api::CaSignAgentRequest {
            node: node.to_string(),
            csr_pem: csr_pem.to_string(),
        };
        self.unary(false, req, |ch, r| async move {
            ConnectCaClient::new(ch).sign_agent(r).await
        })
        .await
    }

    /// A peering token for a cluster to be known here as `name`.
    pub async fn peering_generate_token(
        &self,
        name: &str,
    ) -> Result<api::PeeringGenerateTokenResponse, Error> {
        let req = api::PeeringGenerateTokenRequest { name: name.into() };
        self.unary(false, req, |ch, r| async move {
            PeeringClient::new(ch).generate_token(r).await
        })
        .await
    }

    /// Presents another cluster's token; the peering is known here as `name`.
    pub async fn peering_establish(
        &self,
        name: &str,
        token: &str,
    ) -> Result<api::PeeringEstablishResponse, Error> {
        let req = api::PeeringEstablishRequest {
            name: name.into(),
            token: token.into(),
        };
        self.unary(false, req, |ch, r| async move {
            PeeringClient::new(ch).establish(r).await
        })
        .await
    }

    /// Every peering of this cluster.
    pub async fn peering_list(&self) -> Result<api::PeeringListResponse, Error> {
        self.unary(false, api::PeeringListRequest {}, |ch, r| async move {
            PeeringClient::new(ch).list(r).await
        })
        .await
    }

    /// One peering.
    pub async fn peering_read(&self, name: &str) -> Result<api::PeeringInfo, Error> {
        let req = api::PeeringReadRequest { name: name.into() };
        let r = self
            .unary(
                false,
                req,
                |ch, r| async move { PeeringClient::new(ch).read(r).await },
            )
            .await?;
        r.peering
            .ok_or_else(|| Error::Status(Status::internal("no peering in the answer")))
    }

    /// Terminates a peering (a terminated one: removes it).
    pub async fn peering_delete(&self, name: &str) -> Result<api::PeeringDeleteResponse, Error> {
        let req = api::PeeringDeleteRequest { name: name.into() };
        self.unary(false, req, |ch, r| async move {
            PeeringClient::new(ch).delete(r).await
        })
        .await
    }

    /// Lets peer `peer` import `service` (or, with `export` false, no longer).
    pub async fn peering_export(
        &self,
        service: &str,
        peer: &str,
        export: bool,
    ) -> Result<api::PeeringExportResponse, Error> {
        let req = api::PeeringExportRequest {
            service: service.into(),
            peer: peer.into(),
        };
        self.unary(false, req, |ch, r| async move {
            if export {
                PeeringClient::new(ch).export(r).await
            } else {
                PeeringClient::new(ch).unexport(r).await
            }
        })
        .await
    }

    /// What `peer` exports to this cluster (only `service`, when not empty).
    pub async fn peering_imported(
        &self,
        peer: &str,
        service: &str,
    ) -> Result<Vec<api::ImportedService>, Error> {
        let req = api::PeeringImportedServicesRequest {
            peer: peer.into(),
            service: service.into(),
        };
        let r = self
            .unary(false, req, |ch, r| async move {
                PeeringClient::new(ch).imported_services(r).await
            })
            .await?;
        Ok(r.services)
    }

    /// Creates or replaces the intention `source -> destination`.
    pub async fn intention_upsert(
        &self,
        source: &str,
        destination: &str,
        allow: bool,
    ) -> Result<api::IntentionUpsertResponse, Error> {
        self.intention_upsert_from(None, source, destination, allow).await
    }

    /// The same, for a source service in cluster peer `source_peer`.
    pub async fn intention_upsert_from(
        &self,
        source_peer: Option<&str>,
        source: &str,
        destination: &str,
        allow: bool,
    ) -> Result<api::IntentionUpsertResponse, Error> {
        let req = api::IntentionUpsertRequest {
            source: source.to_string(),
            destination: destination.to_string(),
            allow,
            source_peer: source_peer.unwrap_or_default().to_string(),
        };
        self.unary(true, req, |ch, r| async move {
            IntentionsClient::new(ch).upsert(r).await
        })
        .await
    }

    /// Every intention and the default.
    pub async fn intention_list(&self) -> Result<api::IntentionListResponse, Error> {
        self.unary(false, api::IntentionListRequest {}, |ch, r| async move {
            IntentionsClient::new(ch).list(r).await
        })
        .await
    }

    /// Removes the intention `source -> destination`.
    pub async fn intention_delete(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<api::IntentionDeleteResponse, Error> {
        self.intention_delete_from(None, source, destination).await
    }

    /// The same, for a source service in cluster peer `source_peer`.
    pub async fn intention_delete_from(
        &self,
        source_peer: Option<&str>,
        source: &str,
        destination: &str,
    ) -> Result<api::IntentionDeleteResponse, Error> {
        let req = api::IntentionDeleteRequest {
            source: source.to_string(),
            destination: destination.to_string(),
            source_peer: source_peer.unwrap_or_default().to_string(),
        };
        self.unary(true, req, |ch, r| async move {
            IntentionsClient::new(ch).delete(r).await
        })
        .await
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
        self.unary(false, req, |ch, r| async move {
            IntentionsClient::new(ch).check(r).await
        })
        .await
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
