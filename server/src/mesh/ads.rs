//! The ADS endpoint on the gRPC port: `StreamAggregatedResources` (state of
//! the world) and `DeltaAggregatedResources` (incremental). Each stream is a
//! `select!` loop between Envoy's requests and the hub's updates; the
//! protocol itself lives in `tribune_xds::{SotwStream, DeltaStream}`.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tribune_xds::{DeltaStream, RequestKind, SharedResources, SotwStream, TypeStatus};

use super::hub::XdsHub;
use super::status::StreamRegistry;
use crate::metrics::{GaugeGuard, NackLabels, XdsMetrics};

pub(crate) struct AdsService {
    hub: Arc<XdsHub>,
    registry: Arc<StreamRegistry>,
    metrics: XdsMetrics,
    acl: Arc<crate::acl::Acl>,
}

impl AdsService {
    pub(crate) fn new(
        hub: Arc<XdsHub>,
        registry: Arc<StreamRegistry>,
        metrics: XdsMetrics,
        acl: Arc<crate::acl::Acl>,
    ) -> Self {
        AdsService {
            hub,
            registry,
            metrics,
            acl,
        }
    }

    /// Resolves this stream's token, now and whenever asked again.
    fn authorize<T>(&self, req: &Request<T>) -> Authorize {
        let secret = req
            .metadata()
            .get(crate::acl::TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let acl = self.acl.clone();
        Arc::new(move || acl.caller(secret.as_deref()))
    }
}

/// The protocol differences between SotW and delta, behind one loop.
trait Protocol: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const MODE: &'static str;
    fn new(res: SharedResources) -> Self;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn type_url(req: &Self::Req) -> &str;
    fn on_request(&mut self, req: &Self::Req) -> (RequestKind, Option<Self::Resp>);
    fn on_update(&mut self, res: SharedResources) -> Vec<Self::Resp>;
    fn status(&self) -> Vec<TypeStatus>;
}

impl Protocol for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const MODE: &'static str = "sotw";
    fn new(res: SharedResources) -> Self {
        SotwStream::new(res)
    }
    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn type_url(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }
    fn on_request(&mut self, req: &DiscoveryRequest) -> (RequestKind, Option<DiscoveryResponse>) {
        SotwStream::on_request(self, req)
    }
    fn on_update(&mut self, res: SharedResources) -> Vec<DiscoveryResponse> {
        SotwStream::on_update(self, res)
    }
    fn status(&self) -> Vec<TypeStatus> {
        SotwStream::status(self)
    }
}

impl Protocol for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const MODE: &'static str = "delta";
    fn new(res: SharedResources) -> Self {
        DeltaStream::new(res)
    }
    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }
    fn on_request(&mut self, req: &DeltaDiscoveryRequest) -> (RequestKind, Option<DeltaDiscoveryResponse>) {
        DeltaStream::on_request(self, req)
    }
    fn on_update(&mut self, res: SharedResources) -> Vec<DeltaDiscoveryResponse> {
        DeltaStream::on_update(self, res)
    }
    fn status(&self) -> Vec<TypeStatus> {
        DeltaStream::status(self)
    }
}

type Out<T> = mpsc::Sender<Result<T, Status>>;

/// Resolves the stream's token again: it may have been deleted, or its
/// policies changed, since the stream opened.
pub(crate) type Authorize = Arc<dyn Fn() -> Result<crate::acl::Caller, Status> + Send + Sync>;

/// How often an open stream's token is checked again when the proxy sends
/// nothing (it is also checked on every request).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// A proxy's configuration is its service's: the token must write it.
fn permitted(authorize: &Authorize, hub: &XdsHub, proxy_id: &str) -> Result<(), Status> {
    let Some(service) = hub.identity_of(proxy_id) else {
        return Ok(());
    };
    authorize()?.require(&crate::acl::service(&service, tribune_acl::Access::Write))
}

async fn serve<P: Protocol>(
    hub: Arc<XdsHub>,
    registry: Arc<StreamRegistry>,
    metrics: XdsMetrics,
    authorize: Authorize,
    mut inbound: impl Stream<Item = Result<P::Req, Status>> + Unpin + Send,
    out: Out<P::Resp>,
) where
    P::Req: prost::Message + Default,
{
    let first = match inbound.next().await {
        Some(Ok(r)) => r,
        _ => return,
    };
    let proxy_id = P::node(&first).map(|n| n.id.clone()).unwrap_or_default();
    if proxy_id.is_empty() {
        let _ = out
            .send(Err(Status::invalid_argument(
                "node.id: required; set it to the proxy's service ID (\"<service id>-sidecar-proxy\")",
            )))
            .await;
        return;
    }
    if let Err(e) = permitted(&authorize, &hub, &proxy_id) {
        tracing::warn!(proxy = %proxy_id, error = %e.message(), "ads stream refused");
        let _ = out.send(Err(e)).await;
        return;
    }
    let mut updates: watch::Receiver<SharedResources> = match hub.subscribe(&proxy_id) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(proxy = %proxy_id, error = %e, "ads stream refused");
            let _ = out.send(Err(Status::not_found(e.to_string()))).await;
            return;
        }
    };
    let span = tracing::info_span!("ads", proxy = %proxy_id, mode = P::MODE);
    async move {
        let _open = GaugeGuard::new(&metrics.streams_open);
        let stream_id = registry.open(&proxy_id, P::MODE);
        tracing::info!("proxy connected");
        let mut proto = P::new(updates.borrow_and_update().clone());
        let mut next = Some(first);
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            let batch: Vec<P::Resp> = match next.take() {
                Some(req) => {
                    // The proxy keeps its last configuration when the
                    // stream ends here.
                    if let Err(e) = permitted(&authorize, &hub, &proxy_id) {
                        tracing::warn!(error = %e.message(), "ads stream ended: the token no longer allows it");
                        let _ = out.send(Err(e)).await;
                        break;
                    }
                    let (kind, resp) = proto.on_request(&req);
                    if let RequestKind::Nack(msg) = &kind {
                        let t = tribune_xds::names::short(P::type_url(&req));
                        tracing::warn!(r#type = t, error = %msg, "proxy rejected a configuration; keeping the last accepted one");
                        metrics.nacks.get_or_create(&NackLabels { resource_type: t }).inc();
                    }
                    resp.into_iter().collect()
                }
                None => {
                    tokio::select! {
                        m = inbound.next() => match m {
                            Some(Ok(req)) => { next = Some(req); continue; }
                            None => break,
                            Some(Err(e)) => { tracing::debug!(error = %e, "ads stream closed"); break; }
                        },
                        c = updates.changed() => {
                            if c.is_err() { break; }
                            let res = updates.borrow_and_update().clone();
                            proto.on_update(res)
                        }
                        _ = recheck.tick() => {
                            if let Err(e) = permitted(&authorize, &hub, &proxy_id) {
                                tracing::warn!(error = %e.message(), "ads stream ended: the token no longer allows it");
                                let _ = out.send(Err(e)).await;
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            for r in batch {
                if out.send(Ok(r)).await.is_err() {
                    registry.close(stream_id);
                    return;
                }
            }
            registry.update(stream_id, proto.status());
        }
        registry.close(stream_id);
        tracing::info!("proxy disconnected");
    }
    .instrument(span)
    .await;
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let authorize = self.authorize(&req);
        tokio::spawn(serve::<SotwStream>(
            self.hub.clone(),
            self.registry.clone(),
            self.metrics.clone(),
            authorize,
            req.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let authorize = self.authorize(&req);
        tokio::spawn(serve::<DeltaStream>(
            self.hub.clone(),
            self.registry.clone(),
            self.metrics.clone(),
            authorize,
            req.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    //! The ADS stream loop on a real hub and state machine, fed requests
    //! from a channel: no Raft, no network.

    use std::sync::Arc;
    use std::time::Duration;

    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    };
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;
    use tonic::Status;
    use tribune_xds::{DeltaStream, SotwStream, names};

    use super::serve;
    use crate::mesh::hub::XdsHub;
    use crate::mesh::hub::fixture::{Fixture, mesh, with_sidecar};
    use crate::mesh::status::StreamRegistry;
    use crate::metrics::{NackLabels, XdsMetrics};

    const PROXY: &str = "web-1-sidecar-proxy";

    struct Harness<Req, Resp> {
        _f: Fixture,
        to_server: mpsc::UnboundedSender<Result<Req, Status>>,
        from_server: mpsc::Receiver<Result<Resp, Status>>,
        registry: std::sync::Arc<StreamRegistry>,
        metrics: XdsMetrics,
    }

    async fn start<P: super::Protocol>(f: Fixture, hub: std::sync::Arc<XdsHub>) -> Harness<P::Req, P::Resp>
    where
        P::Req: prost::Message + Default,
    {
        start_as::<P>(f, hub, Arc::new(|| Ok(crate::acl::Caller::management()))).await
    }

    async fn start_as<P: super::Protocol>(
        f: Fixture,
        hub: std::sync::Arc<XdsHub>,
        authorize: super::Authorize,
    ) -> Harness<P::Req, P::Resp>
    where
        P::Req: prost::Message + Default,
    {
        let (to_server, rx) = mpsc::unbounded_channel();
        let (out, from_server) = mpsc::channel(16);
        let registry = std::sync::Arc::new(StreamRegistry::default());
        let metrics = XdsMetrics::default();
        tokio::spawn(serve::<P>(
            hub,
            registry.clone(),
            metrics.clone(),
            authorize,
            UnboundedReceiverStream::new(rx),
            out,
        ));
        Harness {
            _f: f,
            to_server,
            from_server,
            registry,
            metrics,
        }
    }

    async fn recv<T>(rx: &mut mpsc::Receiver<Result<T, Status>>) -> Result<T, Status> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a response within 5 s")
            .expect("the stream is open")
    }

    fn node(id: &str) -> Option<Node> {
        Some(Node {
            id: id.into(),
            cluster: "web".into(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn sotw_configures_the_proxy_and_an_ack_is_answered_with_silence() {
        let (f, hub) = mesh().await;
        let mut h = start::<SotwStream>(f, hub).await;
        h.to_server
            .send(Ok(DiscoveryRequest {
                node: node(PROXY),
                type_url: names::CLUSTER.into(),
                ..Default::default()
            }))
            .unwrap();
        let resp: DiscoveryResponse = recv(&mut h.from_server).await.unwrap();
        assert_eq!(resp.type_url, names::CLUSTER);
        assert!(!resp.resources.is_empty(), "the api upstream cluster at least");
        h.to_server
            .send(Ok(DiscoveryRequest {
                node: node(PROXY),
                type_url: names::CLUSTER.into(),
                version_info: resp.version_info.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            }))
            .unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), h.from_server.recv()).await;
        assert!(quiet.is_err(), "an ACK gets no response: {quiet:?}");
        let streams = h.registry.snapshot();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].proxy_id, PROXY);
        assert!(streams[0].types.iter().any(|t| t.type_url == "cds" && t.acked));
    }

    #[tokio::test]
    async fn a_nack_is_counted_kept_and_not_answered_with_the_same_config() {
        let (f, hub) = mesh().await;
        let mut h = start::<SotwStream>(f, hub).await;
        h.to_server
            .send(Ok(DiscoveryRequest {
                node: node(PROXY),
                type_url: names::CLUSTER.into(),
                ..Default::default()
            }))
            .unwrap();
        let resp = recv(&mut h.from_server).await.unwrap();
        h.to_server
            .send(Ok(DiscoveryRequest {
                node: node(PROXY),
                type_url: names::CLUSTER.into(),
                response_nonce: resp.nonce.clone(),
                error_detail: Some(RpcStatus {
                    code: 3,
                    message: "cluster rejected".into(),
                    details: vec![],
                }),
                ..Default::default()
            }))
            .unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), h.from_server.recv()).await;
        assert!(
            quiet.is_err(),
            "a NACK is not answered with the same config again"
        );
        let nacks = h
            .metrics
            .nacks
            .get_or_create(&NackLabels { resource_type: "cds" })
            .get();
        assert_eq!(nacks, 1);
        let cds = h.registry.snapshot()[0]
            .types
            .iter()
            .find(|t| t.type_url == "cds")
            .cloned()
            .unwrap();
        assert_eq!(cds.last_nack.as_deref(), Some("cluster rejected"));
        assert!(!cds.acked);
    }

    #[tokio::test]
    async fn delta_pushes_a_catalog_change_to_an_open_stream() {
        let (f, hub) = mesh().await;
        let mut h = start::<DeltaStream>(f, hub).await;
        // EDS is not a wildcard type: the proxy names the cluster it wants.
        let api = names::sni("api", "dc1", &tribune_ids::trust_domain("c1"));
        h.to_server
            .send(Ok(DeltaDiscoveryRequest {
                node: node(PROXY),
                type_url: names::ENDPOINT.into(),
                resource_names_subscribe: vec![api.clone()],
                ..Default::default()
            }))
            .unwrap();
        let first: DeltaDiscoveryResponse = recv(&mut h.from_server).await.unwrap();
        assert_eq!(first.type_url, names::ENDPOINT);
        assert!(first.resources.iter().any(|r| r.name == api), "api's endpoints");
        h.to_server
            .send(Ok(DeltaDiscoveryRequest {
                node: node(PROXY),
                type_url: names::ENDPOINT.into(),
                response_nonce: first.nonce.clone(),
                ..Default::default()
            }))
            .unwrap();
        h._f.apply(with_sidecar("api-2", "api", 8082, &[])).await;
        let pushed = recv(&mut h.from_server).await.unwrap();
        assert_eq!(pushed.type_url, names::ENDPOINT);
        assert!(
            pushed.resources.iter().any(|r| r.name == api),
            "api's endpoints again, now with api-2: {:?}",
            pushed.resources.iter().map(|r| &r.name).collect::<Vec<_>>()
        );
        let cla = pushed
            .resources
            .iter()
            .find(|r| r.name == api)
            .and_then(|r| r.resource.as_ref())
            .map(|any| {
                use prost::Message;
                envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(&*any.value)
                    .unwrap()
            })
            .expect("a ClusterLoadAssignment");
        let n: usize = cla.endpoints.iter().map(|e| e.lb_endpoints.len()).sum();
        assert_eq!(n, 2, "api-1 and api-2");
    }

    #[tokio::test]
    async fn a_stream_is_refused_without_a_node_id_or_for_an_unknown_proxy() {
        let (f, hub) = mesh().await;
        let mut h = start::<SotwStream>(f, hub.clone()).await;
        h.to_server.send(Ok(DiscoveryRequest::default())).unwrap();
        let e = recv(&mut h.from_server).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("node.id"), "{}", e.message());

        let (f, hub) = mesh().await;
        let mut h = start::<SotwStream>(f, hub).await;
        h.to_server
            .send(Ok(DiscoveryRequest {
                node: node("nope-sidecar-proxy"),
                type_url: names::CLUSTER.into(),
                ..Default::default()
            }))
            .unwrap();
        let e = recv(&mut h.from_server).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(h.registry.snapshot().is_empty());
    }

    #[tokio::test]
    async fn a_proxy_whose_token_cannot_write_its_service_is_refused() {
        let (f, hub) = mesh().await;
        let authorize: super::Authorize = Arc::new(|| {
            let api_only = tribune_acl::Authorizer::new([&tribune_acl::service_identity("api")], false);
            Ok(crate::acl::Caller::for_tests(Some("t-1"), api_only))
        });
        let mut h = start_as::<SotwStream>(f, hub, authorize).await;
        h.to_server
            .send(Ok(DiscoveryRequest {
                node: node(PROXY),
                type_url: names::CLUSTER.into(),
                ..Default::default()
            }))
            .unwrap();
        let e = recv(&mut h.from_server).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("service:write on web"), "{}", e.message());
        assert!(h.registry.snapshot().is_empty(), "no stream was opened");
    }

    #[tokio::test]
    async fn a_token_deleted_while_the_stream_is_open_ends_it_at_the_next_request() {
        let (f, hub) = mesh().await;
        let deleted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gone = deleted.clone();
        let authorize: super::Authorize = Arc::new(move || {
            if gone.load(std::sync::atomic::Ordering::Relaxed) {
                Err(Status::unauthenticated(
                    "the token is not known (was it deleted?)",
                ))
            } else {
                Ok(crate::acl::Caller::management())
            }
        });
        let mut h = start_as::<SotwStream>(f, hub, authorize).await;
        let req = |t: &str| DiscoveryRequest {
            node: node(PROXY),
            type_url: t.into(),
            ..Default::default()
        };
        h.to_server.send(Ok(req(names::CLUSTER))).unwrap();
        assert!(
            recv(&mut h.from_server).await.is_ok(),
            "configured while the token is valid"
        );
        deleted.store(true, std::sync::atomic::Ordering::Relaxed);
        h.to_server.send(Ok(req(names::LISTENER))).unwrap();
        let e = recv(&mut h.from_server).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{}", e.message());
    }
}
