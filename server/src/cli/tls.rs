//! `tribune tls ca create`: the CA a cluster's agents (and, adopted at
//! bootstrap, its mesh) chain to, made before there is a cluster so that
//! servers can authenticate each other from their first vote.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum TlsSub {
    /// The certificate authority.
    Ca {
        #[command(subcommand)]
        cmd: CaSub,
    },
}

#[derive(Subcommand)]
pub(crate) enum CaSub {
    /// Writes tribune-agent-ca.pem and tribune-agent-ca-key.pem (0600): a
    /// new CA with a new cluster ID (its trust domain <id>.tribune).
    Create {
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// How long the CA lives, e.g. 87600h (the default, ten years).
        #[arg(long, default_value = "87600h")]
        ttl: String,
    },
}

pub(crate) const CA_FILE: &str = "tribune-agent-ca.pem";
pub(crate) const CA_KEY_FILE: &str = "tribune-agent-ca-key.pem";

pub(crate) fn run(cmd: TlsSub) -> anyhow::Result<()> {
    match cmd {
        TlsSub::Ca {
            cmd: CaSub::Create { dir, ttl },
        } => create_ca(&dir, &ttl),
    }
}

fn create_ca(dir: &Path, ttl: &str) -> anyhow::Result<()> {
    let ttl = humantime::parse_duration(ttl).map_err(|e| anyhow::anyhow!("--ttl {ttl:?}: {e}"))?;
    if ttl.as_secs() < 3600 {
        bail!("--ttl: a CA must live at least an hour");
    }
    let (cert_path, key_path) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            bail!("{} exists: remove it first, or use another --dir", p.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cluster_id = uuid::Uuid::new_v4().to_string();
    let td = tribune_certs::trust_domain(&cluster_id);
    let root = tribune_certs::new_root(&td, "Tribune CA 1", ttl.as_secs() as i64, crate::mesh::now_unix())?;
    std::fs::write(&cert_path, &root.cert_pem).with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(&key_path, &root.key_pem)?;
    println!("==> Saved {}", cert_path.display());
    println!(
        "==> Saved {} (keep it secret: it signs every certificate of the cluster)",
        key_path.display()
    );
    println!("    Trust domain: {td}");
    Ok(())
}

/// Writes a secret readable by its owner only, from its creation on.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
