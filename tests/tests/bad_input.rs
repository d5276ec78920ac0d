//! Bad input gets a clear error naming the field, and loses nothing:
//! invalid fields, oversized requests, garbage bytes on every port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tribune_tests::{Agent, api, catalog_dump, instance};

#[tokio::test(flavor = "multi_thread")]
async fn each_invalid_field_is_named() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    c.register(instance("web", "web-1", 80)).await.unwrap();
    let before = catalog_dump(&c).await;

    let cases: Vec<(&str, api::RegisterRequest)> = vec![
        ("service.name", instance("Not_A_Label", "x", 80)),
        ("service.name", instance(&"a".repeat(64), "x", 80)),
        ("service.id", instance("web", &"i".repeat(129), 80)),
        ("service.id", instance("web", "has space", 80)),
        ("service.port", instance("web", "x", 0)),
        ("service.port", instance("web", "x", 65536)),
        ("service", api::RegisterRequest::default()),
        ("service.address", {
            let mut r = instance("web", "x", 80);
            r.service.as_mut().unwrap().address = "no such:thing".into();
            r
        }),
        ("service.tags", {
            let mut r = instance("web", "x", 80);
            r.service.as_mut().unwrap().tags = (0..65).map(|i| format!("t{i}")).collect();
            r
        }),
        ("service.meta", {
            let mut r = instance("web", "x", 80);
            r.service.as_mut().unwrap().meta = [("k".to_string(), "v".repeat(513))].into_iter().collect();
            r
        }),
        ("checks[0].http", {
            let mut r = instance("web", "x", 80);
            r.checks = vec![api::CheckDefinition {
                kind: Some(api::check_definition::Kind::Http("not-a-url".into())),
                ..Default::default()
            }];
            r
        }),
        ("checks[0].interval_ms", {
            let mut r = instance("web", "x", 80);
            r.checks = vec![api::CheckDefinition {
                kind: Some(api::check_definition::Kind::Tcp("127.0.0.1:80".into())),
                interval_ms: 10,
                ..Default::default()
            }];
            r
        }),
        ("sidecar.upstreams[0].local_bind_port", {
            let mut r = instance("web", "x", 80);
            r.sidecar = Some(api::SidecarSpec {
                port: 21000,
                upstreams: vec![api::Upstream {
                    destination_name: "api".into(),
                    local_bind_port: 0,
                    ..Default::default()
                }],
                ..Default::default()
            });
            r
        }),
        ("sidecar.upstreams[0].mesh_gateway_mode", {
            let mut r = instance("web", "x", 80);
            r.sidecar = Some(api::SidecarSpec {
                port: 21000,
                upstreams: vec![api::Upstream {
                    destination_name: "api".into(),
                    local_bind_port: 9191,
                    datacenter: "dc2".into(),
                    mesh_gateway_mode: 42,
                    ..Default::default()
                }],
                ..Default::default()
            });
            r
        }),
        ("service.wan_address", {
            // A mesh gateway must say where other datacenters reach it.
            let mut r = instance("gateway", "gw-1", 8443);
            r.service.as_mut().unwrap().kind = api::ServiceKind::MeshGateway as i32;
            r
        }),
        ("service.wan_address", {
            let mut r = instance("web", "x", 80);
            r.service.as_mut().unwrap().wan_address = "127.0.0.2".into();
            r
        }),
    ];
    for (field, req) in cases {
        let err = c.register(req).await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{field}: {err}");
        assert!(
            err.to_string().contains(field),
            "error for {field} does not name it: {err}"
        );
    }
    let err = c
        .update_ttl("", api::HealthStatus::Passing, "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("check_id"), "{err}");
    let err = c.get_service("UPPER", false).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));

    // The CLI says the same on stderr, with a non-zero exit.
    let out = agent.cli(&["services", "register", "--name", "web", "--port", "99999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("service.port"));
    let out = agent.cli(&[
        "services",
        "register",
        "--name",
        "web",
        "--port",
        "80",
        "--check-ttl",
        "soon",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ttl"));

    assert_eq!(
        catalog_dump(&c).await,
        before,
        "refused writes must change nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_request_is_refused() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let mut r = instance("web", "big", 80);
    r.service.as_mut().unwrap().tags = vec!["x".repeat(2 * 1024 * 1024)];
    let err = c.register(r).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Some(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
        ),
        "{err}"
    );
    assert!(err.to_string().contains("too large"), "{err}");
    c.register(instance("web", "small", 80)).await.unwrap();
}

fn throw_garbage(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_any_port_is_refused_without_harm() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    c.register(instance("web", "web-1", 80)).await.unwrap();
    // The leader gives the node its serf-health check right after start.
    let mut before = catalog_dump(&c).await;
    for _ in 0..100 {
        if before.to_string().contains("serf-health") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        before = catalog_dump(&c).await;
    }

    let mut noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    noise.extend_from_slice(b"\r\n\r\n");
    // LAN gossip: junk datagrams, and junk on its TCP side.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for chunk in noise.chunks(1024) {
        let _ = udp.send_to(chunk, ("127.0.0.1", agent.ports.serf));
    }
    for port in [
        agent.ports.grpc,
        agent.ports.server,
        agent.ports.http,
        agent.ports.serf,
    ] {
        throw_garbage(port, &noise);
        throw_garbage(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // An HTTP/2 preface followed by junk frames.
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2.extend_from_slice(&noise[..512]);
        throw_garbage(port, &h2);
    }
    let http = throw_garbage(agent.ports.http, b"\x16\x03\x01garbage\r\n\r\n");
    assert!(http.is_empty() || String::from_utf8_lossy(&http).starts_with("HTTP/1.1 400"));

    // Still serving, nothing lost, writes still work.
    assert_eq!(catalog_dump(&c).await, before);
    c.register(instance("web", "web-2", 81)).await.unwrap();
    assert_eq!(c.get_service("web", false).await.unwrap().instances.len(), 2);
}

/// Well-formed gRPC carrying malformed server-RPC messages reaches the
/// server port: each is refused with INVALID_ARGUMENT naming the field,
/// an unknown method is UNIMPLEMENTED, and Raft goes on untouched.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_server_rpc_messages_are_refused_without_harm() {
    use tribune_proto::server as rpc;
    use tribune_proto::server::server_rpc_client::ServerRpcClient;

    let agent = Agent::start(&[]);
    let c = agent.client().await;
    c.register(instance("web", "web-1", 80)).await.unwrap();
    let term = c.raft_peers().await.unwrap().term;

    let addr = format!("http://127.0.0.1:{}", agent.ports.server);
    let mut peer = ServerRpcClient::connect(addr.clone()).await.expect("connect");
    let e = peer
        .append_entries(rpc::AppendEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("vote: missing"), "{}", e.message());

    // A higher term than the leader's, with an entry whose payload is junk:
    // refused before Raft sees it, so the leader is not deposed.
    let e = peer
        .append_entries(rpc::AppendEntriesRequest {
            vote: Some(rpc::Vote {
                term: term + 100,
                node_id: 42,
                committed: true,
            }),
            entries: vec![rpc::Entry {
                log_id: Some(rpc::LogId {
                    term: term + 100,
                    node_id: 42,
                    index: 1_000,
                }),
                payload: b"{\"not\": \"a record\"}".to_vec(),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("entries.payload"), "{}", e.message());

    let e = peer
        .install_snapshot(rpc::InstallSnapshotRequest {
            vote: Some(rpc::Vote::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("meta: missing"), "{}", e.message());

    let e = peer
        .propose(rpc::ProposeRequest {
            command: vec![9, 9, 9],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("command"), "{}", e.message());

    // A method the service does not have: UNIMPLEMENTED, never another handler.
    let mut raw = tonic::client::Grpc::new(
        tonic::transport::Endpoint::from_shared(addr)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    raw.ready().await.unwrap();
    let e = raw
        .unary::<rpc::StatusRequest, rpc::StatusResponse, _>(
            tonic::Request::new(rpc::StatusRequest {}),
            "/tribune.server.v1.ServerRpc/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);

    assert_eq!(c.raft_peers().await.unwrap().term, term, "the leader was deposed");
    c.register(instance("web", "web-2", 81)).await.unwrap();
    assert_eq!(c.get_service("web", false).await.unwrap().instances.len(), 2);
}
