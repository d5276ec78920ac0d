//! The translation for a mesh gateway (WAN-federation style): it routes
//! mesh connections on their TLS SNI alone and never terminates TLS, so the
//! mTLS session stays end to end between the two sidecars and the gateway
//! needs no certificate. Pure like [`crate::sidecar`]: same input, same
//! resources and versions.
//!
//! - SNI of a remote datacenter (`*.<dc>.internal.<td>`): on to that
//!   datacenter's gateways, one cluster per datacenter.
//! - SNI of this datacenter: `sni_cluster` makes the SNI the cluster name,
//!   one cluster per local service, named by its SNI.

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::sni_cluster::v3::SniCluster;
use envoy_types::util::pack_any;

use crate::common::{eds_cluster, load_assignment, network_filter, socket, tcp_proxy_to};
use crate::model::{Gateway, MeshEndpoint, MeshSnapshot, RemoteDatacenter};
use crate::names::{self, CLUSTER, ENDPOINT, LISTENER};
use crate::resources::{ProxyResources, Resource};
use crate::sidecar::Diagnostic;

/// Every resource of one mesh gateway: its LAN (and WAN) listener, a
/// cluster per remote datacenter and per local service, and their
/// endpoints. No secrets: it holds no key.
pub fn build(gw: &Gateway, mesh: &MeshSnapshot) -> (ProxyResources, Vec<Diagnostic>) {
    let mut out = ProxyResources {
        index: mesh.index,
        ..Default::default()
    };
    let mut diags = Vec::new();
    // Every name the gateway matches or routes on contains the trust
    // domain; without one there is nothing correct to build.
    if mesh.trust_domain.is_empty() {
        diags.push(diagnostic(
            gw,
            "no trust domain yet: the CA is not initialized; nothing is built".into(),
        ));
        return (out, diags);
    }

    for (dc, remote) in remote_datacenters(mesh) {
        if !remote.gateways.iter().any(|e| e.healthy) {
            diags.push(diagnostic(
                gw,
                format!("datacenter {dc}: no healthy mesh gateway; connections to it fail until one is"),
            ));
        }
        let name = names::datacenter_cluster(dc, &mesh.trust_domain);
        insert_cluster(&mut out, &name, &remote.gateways);
    }
    for (service, eps) in &mesh.endpoints {
        let name = names::sni(service, &mesh.datacenter, &mesh.trust_domain);
        insert_cluster(&mut out, &name, eps);
    }

    let chains = filter_chains(mesh);
    for (name, address, port) in listener_addresses(gw) {
        out.insert(
            LISTENER,
            Resource::new(name.clone(), listener(name, address, port, chains.clone())),
        );
    }
    (out, diags)
}

fn diagnostic(gw: &Gateway, message: String) -> Diagnostic {
    Diagnostic {
        proxy_id: gw.proxy_id.clone(),
        message,
    }
}

/// The other datacenters, by name (the map's order, which keeps versions
/// stable). The local one is skipped should it show up among them: its
/// traffic is routed by `sni_cluster`, never sent back out.
fn remote_datacenters(mesh: &MeshSnapshot) -> impl Iterator<Item = (&String, &RemoteDatacenter)> {
    mesh.remote.iter().filter(|(dc, _)| **dc != mesh.datacenter)
}

/// A plain TCP cluster (the bytes are TLS already, originated by the
/// sidecar) and its healthy endpoints.
fn insert_cluster(out: &mut ProxyResources, name: &str, endpoints: &[MeshEndpoint]) {
    out.insert(CLUSTER, Resource::new(name, eds_cluster(name)));
    out.insert(ENDPOINT, Resource::new(name, load_assignment(name, endpoints)));
}

/// The LAN listener, and the WAN one when the gateway has a distinct WAN
/// address (the same address twice would be a bind conflict in Envoy).
fn listener_addresses(gw: &Gateway) -> Vec<(String, &str, u16)> {
    let lan = (gw.lan_address.as_str(), gw.lan_port);
    let mut out = vec![(names::gateway_lan_listener(lan.0, lan.1), lan.0, lan.1)];
    if let Some((address, port)) = &gw.wan
        && (address.as_str(), *port) != lan
    {
        out.push((names::gateway_wan_listener(address, *port), address, *port));
    }
    out
}

fn listener(name: String, address: &str, port: u16, filter_chains: Vec<FilterChain>) -> Listener {
    Listener {
        name,
        address: Some(socket(address, port)),
        // Reads the ClientHello's SNI for the chain match, without
        // terminating anything.
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                TlsInspector::default(),
            ))),
            ..Default::default()
        }],
        filter_chains,
        ..Default::default()
    }
}

/// One chain per remote datacenter, then the local one. None has a
/// transport socket: TLS passes through. SNIs matching no chain (another
/// trust domain, no SNI at all) are closed by Envoy.
fn filter_chains(mesh: &MeshSnapshot) -> Vec<FilterChain> {
    let td = &mesh.trust_domain;
    let mut chains: Vec<FilterChain> = remote_datacenters(mesh)
        .map(|(dc, _)| {
            chain(
                dc,
                td,
                vec![tcp_proxy_to(
                    &names::datacenter_cluster(dc, td),
                    &format!("mesh_gateway_remote.{dc}"),
                )],
            )
        })
        .collect();
    // The SNI is the local service's cluster name; the empty tcp_proxy
    // cluster is what sni_cluster overrides for each connection.
    chains.push(chain(
        &mesh.datacenter,
        td,
        vec![
            network_filter("envoy.filters.network.sni_cluster", SniCluster::default()),
            tcp_proxy_to("", "mesh_gateway_local"),
        ],
    ));
    chains
}

/// A chain taking every SNI of datacenter `dc`.
fn chain(dc: &str, trust_domain: &str, filters: Vec<Filter>) -> FilterChain {
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names: vec![names::datacenter_server_name(dc, trust_domain)],
            ..Default::default()
        }),
        filters,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
