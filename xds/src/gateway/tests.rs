use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use prost::Message;

use super::*;
use crate::names::SECRET;
use crate::sidecar::tests::{eds_addresses, ep, mesh, names_of};

const TD: &str = "1234.tribune";

fn gateway() -> Gateway {
    Gateway {
        proxy_id: "mesh-gateway-1".into(),
        service: "mesh-gateway".into(),
        lan_address: "10.0.0.1".into(),
        lan_port: 8443,
        wan: Some(("198.51.100.10".into(), 443)),
    }
}

/// `mesh()` (dc1, with api) federated with dc2 (one healthy gateway, one
/// critical) and dc3 (its only gateway critical). dc1 also shows up among
/// the remotes, as a copy of the federation's catalog may list it.
fn federation() -> MeshSnapshot {
    let mut m = mesh();
    m.endpoints
        .insert("web".into(), vec![ep("web-1", "10.0.1.1", 21000, true)]);
    m.local_gateways = vec![ep("gw-1", "10.0.0.1", 8443, true)];
    let gateways = |eps: Vec<MeshEndpoint>| RemoteDatacenter {
        gateways: eps,
        ..Default::default()
    };
    m.remote = [
        ("dc1", gateways(vec![ep("gw-1", "198.51.100.10", 443, true)])),
        (
            "dc2",
            gateways(vec![
                ep("dc2-gw-1", "198.51.100.21", 443, true),
                ep("dc2-gw-2", "198.51.100.22", 443, false),
            ]),
        ),
        ("dc3", gateways(vec![ep("dc3-gw-1", "198.51.100.31", 443, false)])),
    ]
    .into_iter()
    .map(|(dc, r)| (dc.to_string(), r))
    .collect();
    m
}

const LAN: &str = "default:10.0.0.1:8443";
const WAN: &str = "wan:198.51.100.10:443";

fn listener_of(r: &ProxyResources, name: &str) -> Listener {
    Listener::decode(&*r.of_type(LISTENER).unwrap()[name].body.value).unwrap()
}

fn cluster_of(r: &ProxyResources, name: &str) -> Cluster {
    Cluster::decode(&*r.of_type(CLUSTER).unwrap()[name].body.value).unwrap()
}

fn server_names(c: &FilterChain) -> Vec<String> {
    c.filter_chain_match.clone().unwrap().server_names
}

fn tcp_proxy_of(f: &Filter) -> TcpProxy {
    assert_eq!(f.name, "envoy.filters.network.tcp_proxy");
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        panic!("typed config")
    };
    TcpProxy::decode(&*any.value).unwrap()
}

#[test]
fn listeners_inspect_tls_and_send_each_remote_datacenter_to_its_gateways() {
    let (r, _) = build(&gateway(), &federation());
    let l = listener_of(&r, LAN);
    assert_eq!(l.listener_filters.len(), 1);
    let inspector = &l.listener_filters[0];
    assert_eq!(inspector.name, "envoy.filters.listener.tls_inspector");
    let Some(listener_filter::ConfigType::TypedConfig(any)) = &inspector.config_type else {
        panic!("typed config")
    };
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
    );

    // dc2 and dc3, sorted; dc1 is local and only gets the last chain.
    assert_eq!(l.filter_chains.len(), 3);
    for (chain, dc) in l.filter_chains.iter().zip(["dc2", "dc3"]) {
        assert_eq!(server_names(chain), [format!("*.{dc}.internal.{TD}")]);
        assert_eq!(chain.filters.len(), 1);
        let tcp = tcp_proxy_of(&chain.filters[0]);
        assert_eq!(
            tcp.cluster_specifier,
            Some(tcp_proxy::ClusterSpecifier::Cluster(format!(
                "{dc}.internal.{TD}"
            )))
        );
        assert_eq!(tcp.stat_prefix, format!("mesh_gateway_remote.{dc}"));
    }
}

#[test]
fn the_local_chain_lets_sni_cluster_pick_the_service() {
    let (r, _) = build(&gateway(), &federation());
    let l = listener_of(&r, LAN);
    let local = l.filter_chains.last().unwrap();
    assert_eq!(server_names(local), [format!("*.dc1.internal.{TD}")]);
    let names: Vec<&str> = local.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.network.sni_cluster",
            "envoy.filters.network.tcp_proxy"
        ]
    );
    // Decoding gives `Some` only if the empty oneof was on the wire.
    assert_eq!(
        tcp_proxy_of(&local.filters[1]).cluster_specifier,
        Some(tcp_proxy::ClusterSpecifier::Cluster(String::new()))
    );
}

#[test]
fn sni_names_fall_under_their_datacenter_chain() {
    let sni = names::sni("api", "dc1", TD);
    let wildcard = names::datacenter_server_name("dc1", TD);
    assert!(
        sni.ends_with(wildcard.trim_start_matches('*')),
        "{sni} vs {wildcard}"
    );
    assert_eq!(wildcard, format!("*.{}", names::datacenter_cluster("dc1", TD)));
}

#[test]
fn tls_is_never_terminated() {
    let (r, _) = build(&gateway(), &federation());
    assert!(r.of_type(SECRET).is_none(), "a gateway holds no key");
    for name in [LAN, WAN] {
        for chain in listener_of(&r, name).filter_chains {
            assert!(chain.transport_socket.is_none(), "{name}");
        }
    }
    for name in names_of(&r, CLUSTER) {
        let c = cluster_of(&r, &name);
        assert!(c.transport_socket.is_none(), "{name}");
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            ))
        );
        assert!(c.eds_cluster_config.is_some(), "{name}");
    }
}

#[test]
fn each_datacenter_and_local_service_gets_a_cluster_and_its_endpoints() {
    let (r, _) = build(&gateway(), &federation());
    let expected = [
        format!("api.default.dc1.internal.{TD}"),
        format!("dc2.internal.{TD}"),
        format!("dc3.internal.{TD}"),
        format!("web.default.dc1.internal.{TD}"),
    ];
    assert_eq!(names_of(&r, CLUSTER), expected);
    assert_eq!(names_of(&r, ENDPOINT), expected);
    // Local services: their healthy sidecars only (api-2 is critical).
    assert_eq!(eds_addresses(&r, &expected[0]), [("127.0.0.1".into(), 21001)]);
    assert_eq!(eds_addresses(&r, &expected[3]), [("10.0.1.1".into(), 21000)]);
}

#[test]
fn a_critical_remote_gateway_leaves_eds() {
    let (r, diags) = build(&gateway(), &federation());
    assert_eq!(
        eds_addresses(&r, &format!("dc2.internal.{TD}")),
        [("198.51.100.21".into(), 443)]
    );
    // dc3 has no healthy gateway: said so, its chain and cluster still built.
    assert!(eds_addresses(&r, &format!("dc3.internal.{TD}")).is_empty());
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].proxy_id, "mesh-gateway-1");
    assert!(diags[0].message.contains("datacenter dc3"), "{diags:?}");
}

#[test]
fn the_wan_listener_exists_only_when_its_address_differs() {
    let m = federation();
    let (r, _) = build(&gateway(), &m);
    assert_eq!(names_of(&r, LISTENER), [LAN, WAN]);
    let (lan, wan) = (listener_of(&r, LAN), listener_of(&r, WAN));
    assert_eq!(lan.address, Some(socket("10.0.0.1", 8443)));
    assert_eq!(wan.address, Some(socket("198.51.100.10", 443)));
    assert_eq!(lan.listener_filters, wan.listener_filters);
    assert_eq!(lan.filter_chains, wan.filter_chains);

    let mut gw = gateway();
    gw.wan = None;
    assert_eq!(names_of(&build(&gw, &m).0, LISTENER), [LAN]);
    gw.wan = Some(("10.0.0.1".into(), 8443));
    assert_eq!(names_of(&build(&gw, &m).0, LISTENER), [LAN]);
    gw.wan = Some(("10.0.0.1".into(), 9443));
    assert_eq!(names_of(&build(&gw, &m).0, LISTENER), [LAN, "wan:10.0.0.1:9443"]);
}

#[test]
fn versions_are_deterministic_and_endpoints_change_only_eds() {
    let (a, _) = build(&gateway(), &federation());
    let (b, _) = build(&gateway(), &federation());
    assert_eq!(a, b, "same input, same output");

    let mut m = federation();
    m.remote.get_mut("dc3").unwrap().gateways[0].healthy = true;
    let (c, _) = build(&gateway(), &m);
    let dc3 = format!("dc3.internal.{TD}");
    assert_ne!(
        a.of_type(ENDPOINT).unwrap()[&dc3].version,
        c.of_type(ENDPOINT).unwrap()[&dc3].version
    );
    assert_eq!(a.of_type(CLUSTER), c.of_type(CLUSTER));
    assert_eq!(a.of_type(LISTENER), c.of_type(LISTENER));
}

#[test]
fn without_a_trust_domain_nothing_is_built() {
    let mut m = federation();
    m.trust_domain.clear();
    let (r, diags) = build(&gateway(), &m);
    assert!(r.by_type.is_empty());
    assert_eq!(r.index, m.index);
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.contains("trust domain"), "{diags:?}");
}
