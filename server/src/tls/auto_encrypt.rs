//! A client agent's certificate (auto-encrypt): the agent makes a key and
//! a CSR, a server signs it after checking the agent token (`node:write`
//! on the agent's node), and the agent presents it to the servers' server
//! port from then on. Renewed after two thirds of its life; the servers'
//! roots come with it, so a rotation is trusted before it is needed.

use std::sync::Arc;
use std::time::Duration;

use tribune_certs::agent_request;
use tribune_client::Client;
use tribune_client::tls::{ServerCheck, TlsConnector, certified_key, certs_from_pem, client_config};

use super::AgentTls;
use crate::mesh::now_unix;

pub(crate) struct AutoEncrypt {
    pub tls: Arc<AgentTls>,
    pub node: String,
    pub token: Option<String>,
}

/// Keeps the agent's certificate current; `servers` tells where servers are.
pub(crate) async fn run(ctx: Arc<AutoEncrypt>, servers: impl Fn() -> Vec<String> + Send + 'static) {
    let mut renew_at = 0i64;
    let mut retry = Duration::from_millis(200);
    loop {
        if now_unix() < renew_at {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        match fetch(&ctx, servers()).await {
            Ok(next) => {
                renew_at = next;
                retry = Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!(error = %e, "auto-encrypt: no certificate from the servers yet");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Asks a server for a certificate; returns when to renew it.
async fn fetch(ctx: &AutoEncrypt, addrs: Vec<String>) -> anyhow::Result<i64> {
    if addrs.is_empty() {
        anyhow::bail!("no server is known yet (is --retry-join right?)");
    }
    // No client certificate on this call: it is how the agent gets one.
    let tls = TlsConnector::new(
        client_config(ctx.tls.trust.clone(), ServerCheck::AnyServer, None),
        None,
    );
    let mut client = Client::connect_any_with(&addrs, Some(&tls)).await?;
    if let Some(t) = &ctx.token {
        client = client.with_token(t)?;
    }
    let req = agent_request(&ctx.node)?;
    let resp = client.ca_sign_agent(&ctx.node, &req.csr_pem).await?;
    let roots = resp
        .roots_pem
        .iter()
        .map(|p| certs_from_pem(p, "CA root"))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    ctx.tls.trust.learn(resp.roots_index.max(1), roots);
    ctx.tls.identity.set(certified_key(&resp.cert_pem, &req.key_pem)?);
    let now = now_unix();
    let life = (resp.not_after_unix - now).max(30);
    tracing::info!(
        not_after = resp.not_after_unix,
        "auto-encrypt: this agent has a certificate"
    );
    Ok(now + life * 2 / 3)
}
