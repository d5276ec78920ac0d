//! Prometheus metrics, served on the HTTP port at `/metrics`.

use std::future::Future;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GrpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabel {
    pub method: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    /// Time from a write's submission to its commit and apply.
    pub commit_seconds: Histogram,
    pub applied_index: Gauge,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_seconds: Family<MethodLabel, Histogram>,
    pub watches_open: Gauge,
    pub xds: XdsMetrics,
    /// The write path, stage by stage: the log append with its fsync (on
    /// every server), the leader's AppendEntries round trip to a follower,
    /// and applying entries to the catalog.
    pub log_append_seconds: Histogram,
    pub append_entries_rpc_seconds: Histogram,
    /// A follower's share of that round trip: decoding, its own append and
    /// encoding the reply.
    pub append_entries_handle_seconds: Histogram,
    pub apply_seconds: Histogram,
    /// Gossip packets that did not decrypt (wrong or no key), since start.
    pub gossip_dropped: Counter,
    pub gossip_members: Family<StateLabel, Gauge>,
    /// Gossip bytes by pool (lan, wan) and direction (sent, received).
    pub gossip_bytes: Family<GossipBytesLabels, Counter>,
    /// Peering stream bytes by direction (sent, received).
    pub peering_bytes: Family<DirectionLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GossipBytesLabels {
    pub pool: &'static str,
    pub direction: &'static str,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs to ~3 s.
    exponential_buckets(0.00005, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tribune");
        let commit_seconds = Histogram::new(latency_buckets());
        registry.register(
            "raft_commit_seconds",
            "Time from a write's submission to its commit and apply",
            commit_seconds.clone(),
        );
        let applied_index = Gauge::default();
        registry.register(
            "raft_applied_index",
            "Last Raft index applied to the catalog",
            applied_index.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC requests by method and status code",
            grpc_requests.clone(),
        );
        let grpc_seconds =
            Family::<MethodLabel, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "grpc_request_seconds",
            "gRPC request latency by method",
            grpc_seconds.clone(),
        );
        let watches_open = Gauge::default();
        registry.register("watches_open", "Open watch streams", watches_open.clone());
        let xds_streams_open = Gauge::default();
        registry.register("xds_streams_open", "Open ADS streams", xds_streams_open.clone());
        let nacks = Family::default();
        registry.register(
            "xds_nacks",
            "Configurations proxies rejected, by type",
            nacks.clone(),
        );
        let log_append_seconds = Histogram::new(latency_buckets());
        registry.register(
            "raft_log_append_seconds",
            "Raft log appends, fsync included",
            log_append_seconds.clone(),
        );
        let append_entries_rpc_seconds = Histogram::new(latency_buckets());
        registry.register(
            "raft_append_entries_rpc_seconds",
            "AppendEntries round trips from this leader to a follower",
            append_entries_rpc_seconds.clone(),
        );
        let append_entries_handle_seconds = Histogram::new(latency_buckets());
        registry.register(
            "raft_append_entries_handle_seconds",
            "AppendEntries handled on this follower, from the request's arrival to its reply",
            append_entries_handle_seconds.clone(),
        );
        let apply_seconds = Histogram::new(latency_buckets());
        registry.register(
            "raft_apply_seconds",
            "Applying committed entries to the catalog",
            apply_seconds.clone(),
        );
        let gossip_dropped = Counter::default();
        registry.register(
            "gossip_dropped_packets",
            "LAN gossip packets dropped because they did not decrypt",
            gossip_dropped.clone(),
        );
        let gossip_members = Family::<StateLabel, Gauge>::default();
        registry.register(
            "gossip_members",
            "LAN gossip members by state, as this agent sees them",
            gossip_members.clone(),
        );
        let gossip_bytes = Family::<GossipBytesLabels, Counter>::default();
        registry.register(
            "gossip_bytes",
            "Gossip bytes sent and received by pool: UDP datagrams and TCP frames as sealed, without protocol headers",
            gossip_bytes.clone(),
        );
        let peering_bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "peering_bytes",
            "Peering stream messages sent and received, protobuf bytes without gRPC framing",
            peering_bytes.clone(),
        );
        Metrics {
            registry,
            peering_bytes,
            log_append_seconds,
            append_entries_rpc_seconds,
            append_entries_handle_seconds,
            apply_seconds,
            gossip_dropped,
            gossip_members,
            gossip_bytes,
            xds: XdsMetrics {
                streams_open: xds_streams_open,
                nacks,
            },
            commit_seconds,
            applied_index,
            grpc_requests,
            grpc_seconds,
            watches_open,
        }
    }
}

impl Metrics {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Runs one gRPC handler inside a span, counting it by method and code.
    pub(crate) async fn observe<T>(
        &self,
        method: &'static str,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let started = tokio::time::Instant::now();
        let res = fut.instrument(tracing::info_span!("grpc", method)).await;
        let code = match &res {
            Ok(_) => tonic::Code::Ok,
            Err(s) => {
                tracing::debug!(method, code = ?s.code(), message = s.message(), "request failed");
                s.code()
            }
        };
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.grpc_seconds
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
        res
    }
}

fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Holds one open stream in a gauge for as long as it lives.
/// What the ADS streams report: how many are open, rejections by type.
#[derive(Clone, Default)]
pub(crate) struct XdsMetrics {
    pub streams_open: Gauge,
    pub nacks: Family<NackLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct NackLabels {
    pub resource_type: &'static str,
}

pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn new(g: &Gauge) -> Self {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
