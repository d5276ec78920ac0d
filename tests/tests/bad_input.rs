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
                address: String::new(),
            });
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
