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
}

impl AdsService {
    pub(crate) fn new(hub: Arc<XdsHub>, registry: Arc<StreamRegistry>, metrics: XdsMetrics) -> Self {
        AdsService {
            hub,
            registry,
            metrics,
        }
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

async fn serve<P: Protocol>(
    hub: Arc<XdsHub>,
    registry: Arc<StreamRegistry>,
    metrics: XdsMetrics,
    mut inbound: Streaming<P::Req>,
    out: Out<P::Resp>,
) where
    P::Req: prost::Message + Default,
{
    let first = match inbound.message().await {
        Ok(Some(r)) => r,
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
        loop {
            let batch: Vec<P::Resp> = match next.take() {
                Some(req) => {
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
                        m = inbound.message() => match m {
                            Ok(Some(req)) => { next = Some(req); continue; }
                            Ok(None) => break,
                            Err(e) => { tracing::debug!(error = %e, "ads stream closed"); break; }
                        },
                        c = updates.changed() => {
                            if c.is_err() { break; }
                            let res = updates.borrow_and_update().clone();
                            proto.on_update(res)
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
        tokio::spawn(serve::<SotwStream>(
            self.hub.clone(),
            self.registry.clone(),
            self.metrics.clone(),
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
        tokio::spawn(serve::<DeltaStream>(
            self.hub.clone(),
            self.registry.clone(),
            self.metrics.clone(),
            req.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
