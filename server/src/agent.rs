//! The composition root of a server agent: opens the stores, starts Raft,
//! the proposer and the listeners (server RPC, gRPC API plain and over TLS,
//! HTTP),
//! bootstraps the cluster, and stops it all gracefully on a signal.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tribune_client::gossip::{Gossip, GossipConfig, Member, Role};
use tribune_proto::server::federation_server::FederationServer;
use tribune_proto::server::replication_server::ReplicationServer;
use tribune_proto::server::server_rpc_server::ServerRpcServer;

use crate::api::catalog::CatalogCtx;
use crate::api::connect::ConnectCtx;
use crate::api::operator::OperatorCtx;
use crate::api::{ApiCore, Services};
use crate::catalog::command::{Command, Registration};
use crate::catalog::model::Node;
use crate::cluster::autopilot::Autopilot;
use crate::cluster::bootstrap::Bootstrap;
use crate::cluster::elections::Elections;
use crate::cluster::node_health::NodeHealth;
use crate::config::Settings;
use crate::consensus::{Leadership, Reads, Writer};
use crate::http::HttpCtx;
use crate::mesh::ca::CaDuties;
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::proposer::Proposer;
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{Raft, ServerNode, node_id_for};
use crate::rpc::peers::PeerClients;
use crate::rpc::raft_network::{Network, SNAPSHOT_CHUNK_BYTES};
use crate::rpc::service::LeaderContact;
use crate::rpc::service::ServerRpcService;

pub(crate) async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

pub(crate) fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting data dir {}", dir.display()))?;
    }
    Ok(())
}

/// This agent as it gossips itself.
pub(crate) fn gossip_member(
    settings: &Settings,
    role: Role,
    server_addr: String,
    grpc_addr: Option<SocketAddr>,
    wan_addr: Option<SocketAddr>,
) -> Member {
    Member {
        name: settings.node.clone(),
        gossip_addr: settings.serf_lan_addr,
        role,
        datacenter: settings.datacenter.clone(),
        server_addr,
        grpc_addr: grpc_addr.map(|a| a.to_string()).unwrap_or_default(),
        wan_addr,
        version: env!("CARGO_PKG_VERSION").into(),
        incarnation: 0,
    }
}

/// Accepted gRPC connections with Nagle's algorithm off. tonic sets
/// `TCP_NODELAY` only on listeners it binds itself.
pub(crate) fn grpc_incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A trigger, and a maker of futures that resolve once it fires: one per
/// listener, so that all of them drain together.
pub(crate) fn stop_signal() -> (
    watch::Sender<bool>,
    impl Fn() -> futures::future::BoxFuture<'static, ()>,
) {
    let (tx, rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = rx.clone();
        let f: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        f
    };
    (tx, stopped)
}

/// LAN gossip settings of any agent: encrypted with `--encrypt`, and the
/// keyring kept in `<data-dir>/serf/local.keyring` (which wins over
/// `--encrypt` on a restart, so an installed or rotated key survives).
pub(crate) fn gossip_config(settings: &Settings, data_dir: &Path) -> anyhow::Result<GossipConfig> {
    let keyring = match &settings.encrypt {
        Some(k) => Some(tribune_client::gossip::Keyring::new(k).context("--encrypt")?),
        None => None,
    };
    let serf = data_dir.join("serf");
    prepare_data_dir(&serf)?;
    Ok(GossipConfig {
        keyring,
        keyring_file: Some(serf.join("local.keyring")),
        ..GossipConfig::default()
    })
}

/// Runs a server agent until `shutdown` resolves.
pub(crate) async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (data_dir, _tmp): (PathBuf, Option<tempfile::TempDir>) = match &settings.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("tribune-dev-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    prepare_data_dir(&data_dir)?;

    let file_ca = load_file_ca(&settings.tls)?;
    let agent_tls = crate::tls::AgentTls::new(&settings.tls)?;
    let raft_listener = bind("server RPC", settings.server_addr).await?;
    let grpc_listener = match settings.grpc_addr {
        Some(a) => Some(bind("gRPC", a).await?),
        None => None,
    };
    let grpc_tls_listener = match settings.grpc_tls_addr {
        Some(a) => Some(bind("gRPC over TLS", a).await?),
        None => None,
    };
    let http_listener = bind("HTTP", settings.http_addr).await?;
    // Other servers dial the advertised address (a NAT, a proxy) when one is given.
    let raft_addr = settings
        .advertise_server_addr
        .unwrap_or(raft_listener.local_addr()?);
    let plain_grpc_addr = grpc_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let tls_grpc_addr = grpc_tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    // Where this server's API is named (Raft membership, status pages):
    // the plaintext port, else the TLS one.
    let grpc_addr = plain_grpc_addr
        .or(tls_grpc_addr)
        .context("both --grpc-addr and --grpc-tls-addr are off: a server needs one of them")?;
    let http_addr = http_listener.local_addr()?;
    let wan = crate::federation::wan::Wan::start(&settings, &data_dir, raft_addr, grpc_addr).await?;
    let gossip = Gossip::start(
        gossip_member(
            &settings,
            Role::Server,
            raft_addr.to_string(),
            plain_grpc_addr,
            Some(wan.gossip().me().gossip_addr),
        ),
        settings.retry_join.clone(),
        gossip_config(&settings, &data_dir)?,
    )
    .await?;

    tokio::spawn(wan.clone().join_local_servers(gossip.clone()));

    let metrics = Arc::new(Metrics::default());
    let log_store = LogStore::open(&data_dir)
        .context("opening the Raft log")?
        .with_append_histogram(metrics.log_append_seconds.clone());
    let log_reader = log_store.clone();
    let sm = StateMachineStore::open(&data_dir.join("snapshots"), settings.watch_history)
        .context("opening the state machine")?
        .with_apply_histogram(metrics.apply_seconds.clone());
    let state = sm.shared();

    let node_id = node_id_for(&settings.node);
    let config = openraft::Config {
        cluster_name: format!("tribune-{}", settings.datacenter),
        // openraft 0.9 also uses the heartbeat interval as the timeout of every
        // AppendEntries: it must leave room for a follower's fsync under load,
        // and each AppendEntries carries few entries (each a batch of writes).
        // A follower campaigns after the leader lease (= election_timeout_max)
        // plus its own randomized timeout, 0.75 to 1 s; a leader whose port
        // refuses connections is replaced sooner (`cluster::elections`).
        heartbeat_interval: 100,
        election_timeout_min: 250,
        election_timeout_max: 500,
        max_payload_entries: 8,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_threshold),
        max_in_snapshot_log_to_keep: settings.snapshot_keep_logs,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        // Per chunk: the follower writes it to disk before it answers, on
        // a machine that may be busy with writes.
        install_snapshot_timeout: 2_000,
        ..Default::default()
    }
    .validate()
    .context("raft settings")?;
    let source = Some(settings.server_addr.ip()).filter(|ip| !ip.is_unspecified());
    let peers = Arc::new(PeerClients::from_source(source).with_tls(agent_tls.server_port_connector(source)));
    let network = Network {
        peers: peers.clone(),
        rpc_seconds: Some(metrics.append_entries_rpc_seconds.clone()),
    };
    let raft = Raft::new(node_id, Arc::new(config), network, log_store, sm)
        .await
        .context("starting raft")?;
    let proposer = Proposer::start(raft.clone(), metrics.clone());

    // Each subsystem gets the handles it uses, and nothing else.
    let leadership = Leadership::new(raft.clone(), node_id);
    let writer = Writer::new(leadership.clone(), proposer.clone(), peers.clone());
    let reads = Reads::new(leadership.clone(), peers.clone(), state.clone());
    let leaves = Arc::new(crate::mesh::leaves::LeafCache::new(settings.mesh.sign_rate));
    let xds_streams: Arc<crate::mesh::status::StreamRegistry> = Arc::default();
    let leader_contact: Arc<LeaderContact> = Arc::default();
    let core = ApiCore {
        state: state.clone(),
        reads,
        writer: writer.clone(),
        metrics: metrics.clone(),
    };
    let ca = Arc::new(CaDuties {
        leadership: leadership.clone(),
        state: state.clone(),
        writer: writer.clone(),
        mesh: settings.mesh.clone(),
        secondary: settings.primary_datacenter != settings.datacenter,
        adopt: file_ca.clone(),
    });
    let autopilot = Arc::new(Autopilot {
        raft: raft.clone(),
        node_id,
        datacenter: settings.datacenter.clone(),
    });
    let hub = crate::mesh::hub::XdsHub::new(
        state.clone(),
        leaves.clone(),
        crate::mesh::hub::HubSettings {
            datacenter: settings.datacenter.clone(),
            default_allow: settings.mesh.default_allow,
            gateway_mode: settings.mesh.gateway_mode,
        },
    );
    tokio::spawn(hub.clone().run());
    tokio::spawn(crate::tls::issuer::run(Arc::new(
        crate::tls::issuer::ServerCertIssuer {
            tls: agent_tls.clone(),
            state: state.clone(),
            file_ca,
            node: settings.node.clone(),
            datacenter: settings.datacenter.clone(),
            ips: cert_ips(&settings, raft_addr, tls_grpc_addr),
            ttl_secs: settings.tls.cert_ttl_secs as i64,
        },
    )));
    tokio::spawn(crate::raft::compact_after_restore(raft.clone(), state.clone()));
    tokio::spawn(crate::mesh::ca::leader_duties(ca.clone()));
    tokio::spawn(crate::checks::run(
        settings.node.clone(),
        state.clone(),
        writer.clone(),
    ));
    tokio::spawn(crate::cluster::elections::run(
        Arc::new(Elections {
            raft: raft.clone(),
            node_id,
            peers: peers.clone(),
            leader_contact: leader_contact.clone(),
        }),
        log_reader.clone(),
    ));

    let (stop_tx, stopped) = stop_signal();

    let rpc_service = ServerRpcService {
        node_name: settings.node.clone(),
        raft: raft.clone(),
        proposer,
        log: log_reader,
        metrics: metrics.clone(),
        leader_contact,
    };
    tokio::spawn(wan.clone().measure_distances(peers.clone()));
    let primary = Arc::new(crate::federation::primary::Primary::new(
        settings.primary_datacenter.clone(),
        wan.clone(),
        peers.clone(),
    ));
    let replication: Arc<crate::federation::replication::ReplicationStatus> = Arc::default();
    tokio::spawn(crate::federation::replication::run(Arc::new(
        crate::federation::replication::IntentionReplication {
            primary: primary.clone(),
            state: state.clone(),
            leadership: leadership.clone(),
            writer: writer.clone(),
            status: replication.clone(),
        },
    )));
    tokio::spawn(crate::federation::ca::run(Arc::new(
        crate::federation::ca::CaReplication {
            primary: primary.clone(),
            datacenter: settings.datacenter.clone(),
            state: state.clone(),
            leadership: leadership.clone(),
            writer: writer.clone(),
            status: replication.clone(),
        },
    )));
    tokio::spawn(crate::federation::acl::run(Arc::new(
        crate::federation::acl::AclReplication {
            primary: primary.clone(),
            state: state.clone(),
            leadership: leadership.clone(),
            writer: writer.clone(),
            status: replication.clone(),
        },
    )));
    tokio::spawn(crate::federation::remote_mesh::run(Arc::new(
        crate::federation::remote_mesh::RemoteMeshes {
            wan: wan.clone(),
            peers: peers.clone(),
            state: state.clone(),
            leadership: leadership.clone(),
            writer: writer.clone(),
        },
    )));
    let peering = Arc::new(crate::peering::PeeringCtx {
        state: state.clone(),
        writer: writer.clone(),
        leadership: leadership.clone(),
        datacenter: settings.datacenter.clone(),
        links: Default::default(),
        tls_addr: tls_grpc_addr.map(|a| tls_addr_meta(&settings, a)),
        bytes: metrics.peering_bytes.clone(),
    });
    tokio::spawn(crate::peering::dialer::run(peering.clone()));
    let acl = crate::acl::Acl::new(
        settings.acl.clone(),
        settings.datacenter.clone(),
        state.clone(),
        (settings.primary_datacenter != settings.datacenter).then(|| replication.clone()),
    );
    let api_routes = crate::api::routes(Services {
        catalog: CatalogCtx {
            core: core.clone(),
            node_name: settings.node.clone(),
            advertise_ip: settings.bind.to_string(),
            datacenter: settings.datacenter.clone(),
            wan: wan.clone(),
        },
        core: core.clone(),
        connect: Arc::new(ConnectCtx {
            core: core.clone(),
            ca,
            leaves,
            datacenter: settings.datacenter.clone(),
            primary: primary.clone(),
            agent_cert_ttl_secs: settings.tls.cert_ttl_secs as i64,
        }),
        acl: Arc::new(crate::api::acl::AclCtx {
            core: core.clone(),
            data_dir: data_dir.clone(),
            primary: primary.clone(),
        }),
        operator: Arc::new(OperatorCtx {
            core,
            leadership: leadership.clone(),
            raft: raft.clone(),
            node_id,
            node_name: settings.node.clone(),
            datacenter: settings.datacenter.clone(),
            raft_addr: raft_addr.to_string(),
            grpc_addr: grpc_addr.to_string(),
            gossip: Some(gossip.clone()),
            wan: wan.gossip().clone(),
            primary,
            replication,
            autopilot: autopilot.clone(),
            peers: peers.clone(),
        }),
        hub,
        xds_streams: xds_streams.clone(),
        tokens: acl.clone(),
        gossip: gossip.clone(),
        peers: peers.clone(),
        peering,
    })?;
    // Requests for another datacenter leave before any service sees them.
    let forwarder = Arc::new(crate::federation::forward::Forwarder {
        wan: wan.clone(),
        peers: peers.clone(),
    });
    // Then every request is checked against its token (the ACL table).
    tokio::spawn(crate::acl::initial_management_token(
        settings.acl.clone(),
        leadership.clone(),
        state.clone(),
        writer.clone(),
    ));
    let api_routes = tonic::service::Routes::from(
        api_routes
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(acl, crate::acl::layer))
            .layer(axum::middleware::from_fn_with_state(
                forwarder,
                crate::federation::forward::route,
            )),
    );
    // The server port also serves the public API: requests forwarded from
    // other datacenters arrive there.
    let server_port_routes = api_routes
        .clone()
        .add_service(
            ServerRpcServer::new(rpc_service)
                .max_decoding_message_size(crate::rpc::MAX_MESSAGE)
                .max_encoding_message_size(crate::rpc::MAX_MESSAGE),
        )
        .add_service(FederationServer::new(crate::federation::remote_mesh::MeshViews {
            state: state.clone(),
            datacenter: settings.datacenter.clone(),
        }))
        .add_service(ReplicationServer::new(crate::federation::acl::AclStateService {
            state: state.clone(),
        }));
    let raft_server: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
        if agent_tls.mutual {
            // Mutual TLS: the peer's certificate decides what it may call.
            let routes = tonic::service::Routes::from(
                server_port_routes
                    .into_axum_router()
                    .layer(axum::middleware::from_fn(crate::acl::transport::layer)),
            );
            let config =
                tribune_client::tls::server_config(agent_tls.identity.clone(), Some(agent_tls.trust.clone()));
            Box::pin(
                tonic::transport::Server::builder()
                    .trace_fn(|req| tracing::info_span!("server_rpc", path = %req.uri().path()))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(
                        crate::tls::listener::incoming(raft_listener, config, "server RPC"),
                        stopped(),
                    ),
            )
        } else {
            Box::pin(
                tonic::transport::Server::builder()
                    .trace_fn(|req| tracing::info_span!("server_rpc", path = %req.uri().path()))
                    .add_routes(server_port_routes)
                    .serve_with_incoming_shutdown(grpc_incoming(raft_listener), stopped()),
            )
        };
    let api_server: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
        match grpc_listener {
            Some(l) => Box::pin(
                tonic::transport::Server::builder()
                    .trace_fn(|req| tracing::info_span!("grpc_request", path = %req.uri().path()))
                    .add_routes(api_routes.clone())
                    .serve_with_incoming_shutdown(grpc_incoming(l), stopped()),
            ),
            None => Box::pin(async { Ok(()) }),
        };
    let api_tls_server: futures::future::BoxFuture<'static, Result<(), tonic::transport::Error>> =
        match grpc_tls_listener {
            Some(l) => {
                let config = tribune_client::tls::server_config(agent_tls.identity.clone(), None);
                Box::pin(
                    tonic::transport::Server::builder()
                        .trace_fn(|req| tracing::info_span!("grpc_tls_request", path = %req.uri().path()))
                        .add_routes(api_routes)
                        .serve_with_incoming_shutdown(
                            crate::tls::listener::incoming(l, config, "gRPC TLS"),
                            stopped(),
                        ),
                )
            }
            None => Box::pin(async { Ok(()) }),
        };
    let http = Arc::new(HttpCtx {
        leadership: leadership.clone(),
        state: state.clone(),
        metrics: metrics.clone(),
        xds_streams,
        gossip: Some(gossip.clone()),
        wan: Some(wan.gossip().clone()),
        node_name: settings.node.clone(),
        node_id,
        datacenter: settings.datacenter.clone(),
        data_dir: data_dir.display().to_string(),
        grpc_addr: grpc_addr.to_string(),
        http_addr: http_addr.to_string(),
        raft_addr: raft_addr.to_string(),
    });
    let http_server = axum::serve(http_listener, crate::http::router(http)).with_graceful_shutdown(stopped());
    let servers = tokio::spawn(async move {
        let (a, b, c, d) = tokio::join!(raft_server, api_server, api_tls_server, http_server);
        a.context("server RPC listener")?;
        b.context("gRPC listener")?;
        c.context("gRPC TLS listener")?;
        d.context("HTTP listener")?;
        anyhow::Ok(())
    });

    if settings.bootstrap_expect == 1 {
        if !raft.is_initialized().await? {
            let me = ServerNode {
                name: settings.node.clone(),
                raft_addr: raft_addr.to_string(),
                grpc_addr: grpc_addr.to_string(),
            };
            tracing::info!(node = %me, "bootstrapping a new single-server cluster");
            raft.initialize(BTreeMap::from([(node_id, me)]))
                .await
                .context("bootstrapping raft")?;
        }
    } else {
        tokio::spawn(crate::cluster::bootstrap::run(
            Arc::new(Bootstrap {
                raft: raft.clone(),
                peers: peers.clone(),
                node_name: settings.node.clone(),
                node_id,
                datacenter: settings.datacenter.clone(),
            }),
            gossip.clone(),
            settings.bootstrap_expect as usize,
        ));
    }
    tokio::spawn(crate::cluster::node_health::run(
        Arc::new(NodeHealth {
            leadership: leadership.clone(),
            state: state.clone(),
            writer: writer.clone(),
            datacenter: settings.datacenter.clone(),
        }),
        gossip.clone(),
        settings.reconnect_timeout,
    ));
    tokio::spawn(crate::cluster::autopilot::run(
        autopilot,
        gossip.clone(),
        settings.dead_server_cleanup_after,
    ));

    print_banner(
        &settings,
        node_id,
        &data_dir,
        &Listening {
            raft: raft_addr,
            grpc: plain_grpc_addr,
            grpc_tls: tls_grpc_addr,
            server_port_tls: agent_tls.mutual,
            http: http_addr,
            lan_gossip: gossip.me().gossip_addr,
            wan_gossip: wan.gossip().me().gossip_addr,
        },
    );
    {
        let (leadership, writer, settings) = (leadership.clone(), writer.clone(), settings.clone());
        tokio::spawn(async move {
            match leadership.wait_leader(Duration::from_secs(24 * 3600)).await {
                Some((_, leader)) => {
                    println!("==> Ready: leader {}", leader.name);
                    register_self(&writer, &settings, tls_grpc_addr).await;
                }
                None => tracing::warn!("no leader elected within a day"),
            }
        });
    }

    shutdown.await;
    tracing::info!("shutting down");
    // A leader first makes sure a voter has every entry, so the one that
    // takes over has every acknowledged write.
    let successor = crate::cluster::transfer::prepare(&leadership, Duration::from_secs(3)).await;
    tokio::join!(gossip.leave(), wan.gossip().leave());
    let _ = stop_tx.send(true);
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not stop cleanly");
    }
    if let Some(addr) = successor {
        crate::cluster::transfer::nudge(&peers, &addr).await;
    }
    match tokio::time::timeout(Duration::from_secs(5), servers).await {
        Ok(Ok(res)) => res?,
        Ok(Err(e)) => tracing::warn!(error = %e, "listener task failed"),
        Err(_) => tracing::warn!("listeners did not drain within 5s"),
    }
    Ok(())
}

/// The CA of `--tls-ca-file` with its key (`--tls-ca-key-file`), when given.
fn load_file_ca(tls: &crate::tls::TlsSettings) -> anyhow::Result<Option<tribune_certs::RootCa>> {
    let (Some(cert), Some(key)) = (&tls.ca_file, &tls.ca_key_file) else {
        return Ok(None);
    };
    let read = |p: &PathBuf, flag: &str| {
        std::fs::read_to_string(p).with_context(|| format!("{flag}: reading {}", p.display()))
    };
    let ca = tribune_certs::signing_ca(&read(cert, "--tls-ca-file")?, &read(key, "--tls-ca-key-file")?)
        .context("--tls-ca-file and --tls-ca-key-file")?;
    crate::mesh::ca::cluster_id_of(&ca).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(ca))
}

/// The IPs a server's certificate names: every address it is dialled at
/// (loopback too when it listens on all of them).
fn cert_ips(s: &Settings, raft: SocketAddr, grpc_tls: Option<SocketAddr>) -> Vec<std::net::IpAddr> {
    let mut ips = Vec::new();
    for ip in [Some(s.bind), Some(raft.ip()), grpc_tls.map(|a| a.ip())]
        .into_iter()
        .flatten()
    {
        let ip = if ip.is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            ip
        };
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// Where peers reach this server's gRPC TLS port (its bind IP when it
/// listens on all of them).
fn tls_addr_meta(s: &Settings, a: SocketAddr) -> String {
    let ip = if a.ip().is_unspecified() { s.bind } else { a.ip() };
    SocketAddr::new(ip, a.port()).to_string()
}

/// The agent's own node appears in the catalog, as in Consul.
async fn register_self(writer: &Writer, s: &Settings, grpc_tls: Option<SocketAddr>) {
    // Peers reach this server's TLS port (peering tokens name it).
    let meta = grpc_tls
        .map(|a| (crate::peering::TLS_ADDR_META.to_string(), tls_addr_meta(s, a)))
        .into_iter()
        .collect();
    let cmd = Command::Register(Registration {
        node: Node {
            name: s.node.clone(),
            address: s.bind.to_string(),
            wan_address: String::new(),
            datacenter: s.datacenter.clone(),
            meta,
            create_index: 0,
            modify_index: 0,
        },
        services: Vec::new(),
        checks: Vec::new(),
        remove: Vec::new(),
    });
    if let Err(e) = writer.propose(cmd).await {
        tracing::warn!(error = %e, "could not register this agent's node");
    }
}

/// Where a server agent listens, for its banner.
struct Listening {
    raft: SocketAddr,
    grpc: Option<SocketAddr>,
    grpc_tls: Option<SocketAddr>,
    server_port_tls: bool,
    http: SocketAddr,
    lan_gossip: SocketAddr,
    wan_gossip: SocketAddr,
}

fn print_banner(s: &Settings, node_id: u64, data_dir: &Path, at: &Listening) {
    println!("==> Tribune agent running!");
    println!("         Version: {}", env!("CARGO_PKG_VERSION"));
    println!("            Node: {} (raft id {node_id})", s.node);
    println!("      Datacenter: {}", s.datacenter);
    println!(
        "          Server: true (bootstrap-expect {}){}",
        s.bootstrap_expect,
        if s.dev { ", dev mode" } else { "" }
    );
    println!(
        "        Data dir: {}{}",
        data_dir.display(),
        if s.dev { " (temporary)" } else { "" }
    );
    let off = || "off".to_string();
    println!(
        "      gRPC / xDS: {}",
        at.grpc.map(|a| a.to_string()).unwrap_or_else(off)
    );
    println!(
        "  gRPC / xDS TLS: {}",
        at.grpc_tls.map(|a| a.to_string()).unwrap_or_else(off)
    );
    println!("            HTTP: {}", at.http);
    println!(
        "      Server RPC: {}{}",
        at.raft,
        if at.server_port_tls { " (mutual TLS)" } else { "" }
    );
    println!("      LAN gossip: {}", at.lan_gossip);
    println!(
        "      WAN gossip: {} (primary datacenter {})",
        at.wan_gossip, s.primary_datacenter
    );
}
