//! `tribune peering ...`, `services export|unexport|exports` and the
//! `--peer` forms of `catalog services|service`.

use clap::Subcommand;

use super::commands::connect;
use super::output::{emit, table};
use super::{ClientArgs, Format};

#[derive(Subcommand)]
pub(crate) enum PeeringSub {
    /// On the accepting cluster: a token for the cluster to be known as NAME.
    GenerateToken {
        #[arg(long)]
        name: String,
    },
    /// On the dialing cluster: present a token; the peer is known as NAME.
    Establish {
        #[arg(long)]
        name: String,
        #[arg(long)]
        token: String,
    },
    /// Every peering and its state.
    List,
    /// One peering: state, counts, last heartbeat, last error.
    Read { name: String },
    /// Terminate a peering on both sides (again: remove its record).
    Delete { name: String },
}

fn when(unix: i64) -> String {
    if unix == 0 {
        return "-".into();
    }
    let ago = crate::mesh::now_unix() - unix;
    format!("{ago}s ago")
}

pub(crate) async fn run(c: &ClientArgs, cmd: PeeringSub) -> anyhow::Result<()> {
    let client = connect(c).await?;
    match cmd {
        PeeringSub::GenerateToken { name } => {
            let r = client.peering_generate_token(&name).await?;
            if c.format == Format::Json {
                return super::output::json(&r);
            }
            println!("{}", r.token);
            Ok(())
        }
        PeeringSub::Establish { name, token } => {
            let r = client.peering_establish(&name, &token).await?;
            emit(c.format, &r, || {
                println!("Established peering {name} ({}) at index {}", r.peer_id, r.index)
            })
        }
        PeeringSub::List => {
            let r = client.peering_list().await?;
            emit(c.format, &r, || {
                let rows: Vec<Vec<String>> = r
                    .peerings
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.state.clone(),
                            p.role.clone(),
                            p.imported_services.to_string(),
                            p.exported_services.to_string(),
                            when(p.last_heartbeat_unix),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "STATE", "ROLE", "IMPORTED", "EXPORTED", "LAST HEARTBEAT"],
                    &rows,
                );
            })
        }
        PeeringSub::Read { name } => {
            let p = client.peering_read(&name).await?;
            emit(c.format, &p, || {
                println!("Name:            {}", p.name);
                println!("ID:              {}", p.id);
                println!("State:           {}", p.state);
                println!("Role:            {}", p.role);
                println!("Peer:            {} ({})", p.peer_trust_domain, p.peer_datacenter);
                println!("Peer servers:    {}", p.peer_server_addresses.join(", "));
                println!("Imported:        {}", p.imported_services);
                println!(
                    "Exported:        {} {}",
                    p.exported_services,
                    p.exported.join(",")
                );
                println!("Last heartbeat:  {}", when(p.last_heartbeat_unix));
                println!(
                    "Last error:      {}",
                    if p.last_error.is_empty() {
                        "-"
                    } else {
                        &p.last_error
                    }
                );
            })
        }
        PeeringSub::Delete { name } => {
            let r = client.peering_delete(&name).await?;
            emit(c.format, &r, || {
                println!("Deleted peering {name} at index {}", r.index)
            })
        }
    }
}

/// `services export|unexport NAME --to-peer PEER`.
pub(crate) async fn export(c: &ClientArgs, service: &str, peer: &str, export: bool) -> anyhow::Result<()> {
    let r = connect(c).await?.peering_export(service, peer, export).await?;
    let verb = if export { "Exported" } else { "Unexported" };
    emit(c.format, &r, || {
        println!("{verb} {service} to peer {peer} at index {}", r.index)
    })
}

/// `services exports`: what is exported to which peer.
pub(crate) async fn exports(c: &ClientArgs) -> anyhow::Result<()> {
    let r = connect(c).await?.peering_list().await?;
    let rows: Vec<Vec<String>> = r
        .peerings
        .iter()
        .flat_map(|p| p.exported.iter().map(move |s| vec![s.clone(), p.name.clone()]))
        .collect();
    if c.format == Format::Json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!({ "service": r[0], "peer": r[1] }))
            .collect();
        return super::output::json(&v);
    }
    table(&["SERVICE", "PEER"], &rows);
    Ok(())
}

/// `catalog services --peer P` and `catalog service NAME --peer P`.
pub(crate) async fn imported(c: &ClientArgs, peer: &str, service: Option<&str>) -> anyhow::Result<()> {
    let services = connect(c)
        .await?
        .peering_imported(peer, service.unwrap_or(""))
        .await?;
    if c.format == Format::Json {
        return super::output::json(&services);
    }
    match service {
        None => {
            let rows: Vec<Vec<String>> = services
                .iter()
                .map(|s| {
                    let passing = s.instances.iter().filter(|i| i.health == "passing").count();
                    vec![s.name.clone(), s.instances.len().to_string(), passing.to_string()]
                })
                .collect();
            table(&["NAME", "INSTANCES", "PASSING"], &rows);
        }
        Some(_) => {
            let rows: Vec<Vec<String>> = services
                .iter()
                .flat_map(|s| {
                    s.instances.iter().map(|i| {
                        vec![
                            i.id.clone(),
                            i.node.clone(),
                            format!("{}:{}", i.address, i.port),
                            i.health.clone(),
                        ]
                    })
                })
                .collect();
            table(&["ID", "NODE", "ADDRESS", "HEALTH"], &rows);
        }
    }
    Ok(())
}
