//! Mesh benchmarks.
//!
//! - `sign`: leaf certificates signed per second on one core, through
//!   `tribune_certs::sign_leaf` (a fresh P-256 key and an ECDSA signature
//!   each).
//! - `xds-fanout`: N ADS streams that speak the real protocol (subscribe to
//!   CDS, LDS, EDS and SDS as an Envoy sidecar does, ACK every response)
//!   against one Tribune server; then one catalog write (a new instance of
//!   the service every stream has as upstream) and the time until each
//!   stream holds the new endpoint; and the server's RSS per idle stream.
//!   With `--across-datacenters`, the sidecars are in dc1 and their
//!   upstream `api` in dc2 (gateway mode none): the write goes to dc2's
//!   server and the time runs until each dc1 stream holds the new endpoint,
//!   through dc1's copy of dc2's mesh.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tribune_client::{Client, api};

use crate::load::percentile;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

#[derive(clap::Args)]
pub struct SignArgs {
    /// How long to sign for.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
}

/// Signs leaves on this thread alone for `duration`.
pub fn sign(args: SignArgs) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let root = tribune_certs::new_root("bench.tribune", "Tribune CA 1", 86_400 * 365, now)?;
    let id = tribune_certs::service_spiffe_id("bench.tribune", "dc1", "web");
    let start = Instant::now();
    let mut n = 0u64;
    let mut lat = Vec::new();
    while start.elapsed() < args.duration {
        let t = Instant::now();
        let leaf = tribune_certs::sign_leaf(&root, &id, 72 * 3600, now)?;
        lat.push(t.elapsed());
        std::hint::black_box(leaf);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "leaf certificates signed on one core: {:.0}/s ({n} in {secs:.1}s); p50 {:?}, p99 {:?}",
        n as f64 / secs,
        percentile(&lat, 50.0).unwrap_or_default(),
        percentile(&lat, 99.0).unwrap_or_default()
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Delta,
    Sotw,
}

#[derive(clap::Args)]
pub struct FanoutArgs {
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/tribune"))]
    tribune_bin: PathBuf,
    /// Stream counts; one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    streams: Vec<usize>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "delta,sotw")]
    modes: Vec<Mode>,
    /// ADS streams per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// Services the sidecars front (each has its own leaf certificate).
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Catalog writes to time, one after another.
    #[arg(long, default_value_t = 3)]
    changes: usize,
    /// Sidecars in dc1, their upstream in dc2 (two federated servers, dc2
    /// on 127.0.0.2): a change in dc2 against the last dc1 sidecar.
    #[arg(long)]
    across_datacenters: bool,
    /// ACLs on, default deny: each sidecar's stream carries a
    /// service-identity token of its service, authorized when it opens,
    /// on every request and every minute.
    #[arg(long)]
    acl: bool,
    /// Sidecars in cluster A import api from cluster B (a peer, its TLS
    /// port on 127.0.0.2): the change is a new mesh gateway of B, which
    /// every importing sidecar holds as an endpoint.
    #[arg(long)]
    across_peers: bool,
}

/// The management token of `--acl` runs.
const ROOT: &str = "5e0c9a8b-1f2d-4e3c-8b7a-6d5c4b3a2f10";

/// What one stream reports: its number, and how many endpoints it holds.
type Report = (usize, usize, Instant);

fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

fn endpoints_in(resources: &[Any]) -> Option<usize> {
    resources
        .iter()
        .filter(|a| a.type_url == EDS)
        .filter_map(|a| ClusterLoadAssignment::decode(&*a.value).ok())
        .map(|cla| cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum())
        .max()
}

/// Where a registered sidecar's upstream `api` is: none, the local
/// datacenter, or another one (mode none).
#[derive(Clone, Copy)]
enum ApiIn<'a> {
    Nowhere,
    Here,
    Datacenter(&'a str),
    Peer(&'a str),
}

async fn sidecar(
    client: &Client,
    name: &str,
    id: &str,
    port: u32,
    sidecar_port: u32,
    api: ApiIn<'_>,
) -> Result<()> {
    let upstream = |dc: &str| api::Upstream {
        destination_name: "api".into(),
        local_bind_port: 9191,
        datacenter: dc.into(),
        mesh_gateway_mode: api::MeshGatewayMode::None as i32,
        ..Default::default()
    };
    let from_peer = |peer: &str| api::Upstream {
        destination_name: "api".into(),
        local_bind_port: 9191,
        peer: peer.into(),
        ..Default::default()
    };
    let req = api::RegisterRequest {
        service: Some(api::ServiceSpec {
            id: id.into(),
            name: name.into(),
            address: "127.0.0.1".into(),
            port,
            ..Default::default()
        }),
        sidecar: Some(api::SidecarSpec {
            port: sidecar_port,
            upstreams: match api {
                ApiIn::Nowhere => vec![],
                ApiIn::Here => vec![upstream("")],
                ApiIn::Datacenter(dc) => vec![upstream(dc)],
                ApiIn::Peer(p) => vec![from_peer(p)],
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .register(req)
        .await
        .with_context(|| format!("registering {id}"))?;
    Ok(())
}

/// Mesh gateway number `n` of the exporting cluster, on 127.0.0.2.
async fn register_gateway(client: &Client, n: usize) -> Result<()> {
    let port = 30_000 + n as u32;
    client
        .register(api::RegisterRequest {
            service: Some(api::ServiceSpec {
                id: format!("gw-{n}"),
                name: "gateway".into(),
                address: "127.0.0.2".into(),
                port,
                kind: api::ServiceKind::MeshGateway as i32,
                wan_address: format!("127.0.0.2:{port}"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("registering gateway gw-{n}"))?;
    Ok(())
}

struct StreamSpec {
    n: usize,
    /// The proxy's ACL token (`--acl`).
    token: Option<String>,
    proxy_id: String,
    cluster: String,
    sni: String,
    leaf: String,
}

/// A request carrying `token` as `x-tribune-token`, when given.
fn with_token<T>(body: T, token: Option<&str>) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(body);
    if let Some(t) = token {
        r.metadata_mut().insert("x-tribune-token", t.parse()?);
    }
    Ok(r)
}

async fn run_delta(ch: Channel, s: StreamSpec, tx: mpsc::UnboundedSender<Report>) -> Result<()> {
    let (req_tx, req_rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let node = Node {
        id: s.proxy_id.clone(),
        cluster: s.cluster.clone(),
        ..Default::default()
    };
    let subs: [(&str, Vec<String>); 4] = [
        (CDS, vec![]),
        (LDS, vec![]),
        (EDS, vec![s.sni.clone()]),
        (SDS, vec![s.leaf.clone(), "tribune-roots".into()]),
    ];
    for (t, names) in subs {
        req_tx
            .send(DeltaDiscoveryRequest {
                node: Some(node.clone()),
                type_url: t.into(),
                resource_names_subscribe: names,
                ..Default::default()
            })
            .await?;
    }
    let mut resp = AggregatedDiscoveryServiceClient::new(ch)
        .delta_aggregated_resources(with_token(ReceiverStream::new(req_rx), s.token.as_deref())?)
        .await?
        .into_inner();
    while let Some(r) = resp.message().await? {
        let any: Vec<Any> = r.resources.iter().filter_map(|x| x.resource.clone()).collect();
        if let Some(n) = endpoints_in(&any) {
            let _ = tx.send((s.n, n, Instant::now()));
        }
        req_tx
            .send(DeltaDiscoveryRequest {
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

async fn run_sotw(ch: Channel, s: StreamSpec, tx: mpsc::UnboundedSender<Report>) -> Result<()> {
    let (req_tx, req_rx) = mpsc::channel::<DiscoveryRequest>(16);
    let node = Node {
        id: s.proxy_id.clone(),
        cluster: s.cluster.clone(),
        ..Default::default()
    };
    let names: HashMap<&str, Vec<String>> = HashMap::from([
        (CDS, vec![]),
        (LDS, vec![]),
        (EDS, vec![s.sni.clone()]),
        (SDS, vec![s.leaf.clone(), "tribune-roots".into()]),
    ]);
    for (t, n) in &names {
        req_tx
            .send(DiscoveryRequest {
                node: Some(node.clone()),
                type_url: (*t).into(),
                resource_names: n.clone(),
                ..Default::default()
            })
            .await?;
    }
    let mut resp = AggregatedDiscoveryServiceClient::new(ch)
        .stream_aggregated_resources(with_token(ReceiverStream::new(req_rx), s.token.as_deref())?)
        .await?
        .into_inner();
    while let Some(r) = resp.message().await? {
        if let Some(n) = endpoints_in(&r.resources) {
            let _ = tx.send((s.n, n, Instant::now()));
        }
        req_tx
            .send(DiscoveryRequest {
                type_url: r.type_url.clone(),
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                resource_names: names.get(r.type_url.as_str()).cloned().unwrap_or_default(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

struct FanoutResult {
    streams: usize,
    mode: Mode,
    connect_secs: f64,
    rss_per_stream_kib: f64,
    /// Per change: p50, p99, last.
    changes: Vec<(Duration, Duration, Duration)>,
    /// Across peers: the exporter's stream bytes per change, and the time
    /// from the exporter's restart (ready) to the importer ACTIVE again.
    peering: Option<(f64, Duration)>,
}

/// Waits until every stream reports at least `want` endpoints; the time each
/// first did, counted from `t0`.
async fn wait_all(
    rx: &mut mpsc::UnboundedReceiver<Report>,
    held: &mut [usize],
    want: usize,
    t0: Instant,
    limit: Duration,
) -> Result<Vec<Duration>> {
    let mut times = vec![None; held.len()];
    for (i, h) in held.iter().enumerate() {
        if *h >= want {
            times[i] = Some(Duration::ZERO);
        }
    }
    let mut missing = times.iter().filter(|t| t.is_none()).count();
    let deadline = tokio::time::Instant::now() + limit;
    while missing > 0 {
        let Ok(Some((i, n, at))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            bail!(
                "{missing} of {} streams did not get {want} endpoints within {limit:?}",
                held.len()
            );
        };
        held[i] = n;
        if n >= want && times[i].is_none() {
            times[i] = Some(at.saturating_duration_since(t0));
            missing -= 1;
        }
    }
    let mut out: Vec<Duration> = times.into_iter().flatten().collect();
    out.sort();
    Ok(out)
}

/// The servers of one run: where the sidecars connect, and where `api` is
/// registered (the same server, or dc2's).
struct Servers {
    local: crate::tribune::Tribune,
    api_dc: Option<crate::tribune::Tribune>,
}

async fn servers(args: &FanoutArgs) -> Result<Servers> {
    if args.across_peers {
        let local = crate::tribune::start(&args.tribune_bin, None, None).await?;
        let tls = format!("127.0.0.2:{}", crate::servers::free_ports(1)?[0]);
        let b = crate::tribune::start_with(&args.tribune_bin, &["--grpc-tls-addr", &tls]).await?;
        return Ok(Servers {
            local,
            api_dc: Some(b),
        });
    }
    if args.acl {
        anyhow::ensure!(!args.across_datacenters, "--acl runs within one datacenter");
        let local = crate::tribune::start_with(
            &args.tribune_bin,
            &[
                "--acl-enabled",
                "--default-policy",
                "deny",
                "--initial-management-token",
                ROOT,
            ],
        )
        .await?;
        return Ok(Servers { local, api_dc: None });
    }
    if !args.across_datacenters {
        let local = crate::tribune::start(&args.tribune_bin, None, None).await?;
        return Ok(Servers { local, api_dc: None });
    }
    let wan = crate::servers::free_udp_ports(2)?;
    let dc1_wan = format!("127.0.0.1:{}", wan[0]);
    let fed = |dc: &str, wan: String, join: Option<String>| crate::tribune::Federated {
        datacenter: dc.into(),
        wan_addr: wan,
        join_wan: join,
        primary: "dc1".into(),
    };
    let local =
        crate::tribune::start_federated(&args.tribune_bin, "127.0.0.1", fed("dc1", dc1_wan.clone(), None))
            .await?;
    let dc2 = crate::tribune::start_federated(
        &args.tribune_bin,
        "127.0.0.2",
        fed("dc2", format!("127.0.0.2:{}", wan[1]), Some(dc1_wan)),
    )
    .await?;
    Ok(Servers {
        local,
        api_dc: Some(dc2),
    })
}

async fn fanout_one(args: &FanoutArgs, n: usize, mode: Mode) -> Result<FanoutResult> {
    let mut servers = servers(args).await?;
    let t = &servers.local;
    let pid = t.server.pid().context("the server has no pid")?;
    let mut client = Client::connect(&t.grpc_addr).await?;
    if args.acl {
        client = client.with_token(ROOT)?;
        // The leader writes the configured management token once it leads.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.acl_whoami().await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the management token never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (api_client, api_dc, upstream) = match &servers.api_dc {
        Some(b) if args.across_peers => (Client::connect(&b.grpc_addr).await?, "", ApiIn::Peer("cluster-b")),
        Some(dc2) => (
            Client::connect(&dc2.grpc_addr).await?,
            "dc2",
            ApiIn::Datacenter("dc2"),
        ),
        None => (client.clone(), "dc1", ApiIn::Here),
    };
    sidecar(&api_client, "api", "api-1", 9001, 21001, ApiIn::Nowhere).await?;
    if args.across_peers {
        let token = loop {
            match api_client.peering_generate_token("cluster-a").await {
                Ok(t) => break t.token,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        client.peering_establish("cluster-b", &token).await?;
        register_gateway(&api_client, 1).await?;
        api_client.peering_export("api", "cluster-a", true).await?;
    }
    // The sidecars, written concurrently (group commit makes this quick).
    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for w in 0..64 {
        let c = client.clone();
        let services = args.services;
        let api = upstream;
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(64) {
                let svc = format!("app-{}", i % services);
                sidecar(
                    &c,
                    &svc,
                    &format!("app-{i}"),
                    10_000,
                    20_000 + (i % 40_000) as u32,
                    api,
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let td = loop {
        match client.ca_roots().await {
            Ok(r) => break r.trust_domain,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let sni = if args.across_peers {
        let td_b = api_client.ca_roots().await?.trust_domain;
        format!("api.default.cluster-b.external.{td_b}")
    } else {
        format!("api.default.{api_dc}.internal.{td}")
    };
    // One service-identity token per service, shared by its sidecars.
    let mut tokens = Vec::new();
    if args.acl {
        for i in 0..args.services {
            let t = client
                .acl_token_create(tribune_client::api::AclTokenCreateRequest {
                    service_identities: vec![format!("app-{i}")],
                    ..Default::default()
                })
                .await?;
            tokens.push(t.secret_id);
        }
    }
    let rss_before = vm_rss_kib(pid)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let started = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(args.per_connection) {
        let ch = Endpoint::from_shared(format!("http://{}", t.grpc_addr))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("connecting an ADS channel")?;
        channels.push(ch);
    }
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let spec = StreamSpec {
            n: i,
            token: tokens.get(i % args.services).cloned(),
            proxy_id: format!("app-{i}-sidecar-proxy"),
            cluster: format!("app-{}", i % args.services),
            sni: sni.clone(),
            leaf: format!("tribune-leaf:app-{}", i % args.services),
        };
        let ch = channels[i / args.per_connection].clone();
        let tx = tx.clone();
        streams.push(tokio::spawn(async move {
            let r = match mode {
                Mode::Delta => run_delta(ch, spec, tx).await,
                Mode::Sotw => run_sotw(ch, spec, tx).await,
            };
            if let Err(e) = r {
                eprintln!("stream ended: {e:#}");
            }
        }));
    }
    let mut held = vec![0usize; n];
    wait_all(&mut rx, &mut held, 1, started, Duration::from_secs(120)).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = vm_rss_kib(pid)?;

    let mut changes = Vec::new();
    let sent_bytes = |t: &crate::tribune::Tribune| {
        let http = t.http_addr.clone();
        async move { crate::tribune::metric(&http, "tribune_peering_bytes_total{direction=\"sent\"}").await }
    };
    let mut peer_bytes = 0.0;
    for k in 0..args.changes {
        let before = match (&servers.api_dc, args.across_peers) {
            (Some(b), true) => sent_bytes(b).await?,
            _ => 0.0,
        };
        let t0 = Instant::now();
        if args.across_peers {
            register_gateway(&api_client, k + 2).await?;
        } else {
            sidecar(
                &api_client,
                "api",
                &format!("api-{}", k + 2),
                9002 + k as u32,
                21_002 + k as u32,
                ApiIn::Nowhere,
            )
            .await?;
        }
        let times = wait_all(&mut rx, &mut held, k + 2, t0, Duration::from_secs(60)).await?;
        if let (Some(b), true) = (&servers.api_dc, args.across_peers) {
            peer_bytes += sent_bytes(b).await? - before;
        }
        changes.push((
            percentile(&times, 50.0).unwrap_or_default(),
            percentile(&times, 99.0).unwrap_or_default(),
            times.last().copied().unwrap_or_default(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The streams end before the server does, so none reports the server
    // going away as an error.
    for s in &streams {
        s.abort();
    }
    for s in streams {
        let _ = s.await;
    }
    // Across peers: the exporter restarted, how long until the importer's
    // peering is ACTIVE again (counted from the exporter being ready).
    let peering = match (servers.api_dc.as_mut(), args.across_peers) {
        (Some(b), true) => {
            let per_change = peer_bytes / args.changes.max(1) as f64;
            b.server.kill9().await?;
            let down = Instant::now() + Duration::from_secs(30);
            let state_is = |want: &'static str| {
                let client = client.clone();
                async move {
                    client
                        .peering_read("cluster-b")
                        .await
                        .is_ok_and(|p| p.state == want)
                }
            };
            while !state_is("FAILING").await {
                anyhow::ensure!(Instant::now() < down, "A never saw B down");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            b.server.respawn().await?;
            b.wait_ready().await?;
            let ready = Instant::now();
            while !state_is("ACTIVE").await {
                anyhow::ensure!(
                    ready.elapsed() < Duration::from_secs(60),
                    "A never came back ACTIVE"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some((per_change, ready.elapsed()))
        }
        _ => None,
    };
    drop(servers);
    Ok(FanoutResult {
        peering,
        streams: n,
        mode,
        connect_secs,
        rss_per_stream_kib: rss_after.saturating_sub(rss_before) as f64 / n as f64,
        changes,
    })
}

pub async fn fanout(args: FanoutArgs) -> Result<()> {
    let mut results = Vec::new();
    for &n in &args.streams {
        for &mode in &args.modes {
            eprintln!("xds-fanout: {n} streams, {mode:?}...");
            results.push(fanout_one(&args, n, mode).await?);
        }
    }
    if args.across_datacenters {
        println!("Sidecars in dc1, their upstream api in dc2 (mode none); the change is written to dc2.");
    }
    if args.across_peers {
        println!("Sidecars in cluster A import api from peer B; the change is a new mesh gateway in B.");
    }
    println!(
        "| streams | mode | all connected and configured | change -> stream p50 | p99 | last stream | server RSS per idle stream |"
    );
    println!("|--:|---|--:|--:|--:|--:|--:|");
    for r in &results {
        // The worst of the timed changes, so one lucky write does not flatter.
        let p50 = r.changes.iter().map(|c| c.0).max().unwrap_or_default();
        let p99 = r.changes.iter().map(|c| c.1).max().unwrap_or_default();
        let last = r.changes.iter().map(|c| c.2).max().unwrap_or_default();
        if let Some((bytes, back)) = r.peering {
            eprintln!(
                "{:?}: the exporter sent {bytes:.0} stream bytes per change; after its restart the importer was ACTIVE again in {:.0} ms",
                r.mode,
                back.as_secs_f64() * 1e3
            );
        }
        println!(
            "| {} | {:?} | {:.1} s | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} KiB |",
            r.streams,
            r.mode,
            r.connect_secs,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3,
            r.rss_per_stream_kib
        );
    }
    Ok(())
}
