//! Envoy building blocks both translations (sidecar and mesh gateway) are
//! made of, so that a cluster, its endpoints and a TCP hop look the same
//! whichever kind of proxy they are built for.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::Duration;
use envoy_types::util::pack_any;

use crate::model::MeshEndpoint;

const CONNECT_TIMEOUT_SECS: i64 = 5;

/// Everything dynamic comes over the one ADS stream the proxy already has.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub(crate) fn socket(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub(crate) fn connect_timeout() -> Duration {
    Duration {
        seconds: CONNECT_TIMEOUT_SECS,
        nanos: 0,
    }
}

pub(crate) fn lb_endpoint(address: &str, port: u16) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(address, port)),
            ..Default::default()
        })),
        health_status: HealthStatus::Healthy as i32,
        ..Default::default()
    }
}

/// A cluster whose endpoints come by EDS over ADS, under its own name (the
/// ClusterLoadAssignment of the same name). No transport socket: callers
/// that originate TLS add theirs.
pub(crate) fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(connect_timeout()),
        ..Default::default()
    }
}

/// The healthy (passing or warning) ones of `endpoints`, in their given
/// order, as the load assignment of `cluster`; critical ones leave EDS
/// rather than being sent with an unhealthy status, so Envoy never tries them.
pub(crate) fn load_assignment(cluster: &str, endpoints: &[MeshEndpoint]) -> ClusterLoadAssignment {
    let lb_endpoints = endpoints
        .iter()
        .filter(|e| e.healthy)
        .map(|e| lb_endpoint(&e.address, e.port))
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn network_filter<T: prost::Name + prost::Message>(name: &str, cfg: T) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(cfg))),
    }
}

/// A TCP proxy to `cluster`. An empty `cluster` is still encoded as a set
/// oneof (Envoy requires the specifier); it is what a preceding
/// `sni_cluster` filter overrides per connection.
pub(crate) fn tcp_proxy_to(cluster: &str, stat_prefix: &str) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        TcpProxy {
            stat_prefix: stat_prefix.to_string(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
            ..Default::default()
        },
    )
}
