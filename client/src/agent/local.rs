//! The services a client agent owns, kept on its disk: one file per
//! instance, holding the registration as the app sent it. They survive a
//! restart, and anti-entropy puts them back on the servers if lost there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::api;

/// The owned registrations, by service ID.
pub struct LocalServices {
    dir: PathBuf,
    services: BTreeMap<String, api::RegisterRequest>,
    /// The token each registration came with, for later syncs.
    tokens: BTreeMap<String, String>,
}

fn file_name(id: &str) -> String {
    // IDs are validated by the servers, but a file name must be safe for
    // any string: hex says nothing about the ID and never clashes.
    let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.reg")
}

/// A registration's token file: the owner's alone, like its directory.
fn token_file(id: &str) -> String {
    file_name(id).replace(".reg", ".token")
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

impl LocalServices {
    /// Loads what `dir` holds (creating it).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut services = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "reg") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            match api::RegisterRequest::decode(bytes.as_slice()) {
                Ok(req) => {
                    let id = req.service.as_ref().map(|s| s.id.clone()).unwrap_or_default();
                    if !id.is_empty() {
                        services.insert(id, req);
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable local registration")
                }
            }
        }
        let tokens = services
            .keys()
            .filter_map(|id| {
                let t = std::fs::read_to_string(dir.join(token_file(id))).ok()?;
                Some((id.clone(), t.trim().to_string()))
            })
            .collect();
        Ok(LocalServices {
            dir: dir.to_path_buf(),
            services,
            tokens,
        })
    }

    /// Every owned registration.
    pub fn all(&self) -> &BTreeMap<String, api::RegisterRequest> {
        &self.services
    }

    /// The token `id` was registered with, if any.
    pub fn token_of(&self, id: &str) -> Option<&str> {
        self.tokens.get(id).map(String::as_str)
    }

    /// Stores `req` (its service ID filled in) and the token it came with
    /// durably.
    pub fn put(&mut self, req: api::RegisterRequest, token: Option<&str>) -> std::io::Result<()> {
        let id = req.service.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        let token_path = self.dir.join(token_file(&id));
        match token {
            Some(t) => {
                write_private(&token_path, t.as_bytes())?;
                self.tokens.insert(id.clone(), t.to_string());
            }
            None => {
                let _ = std::fs::remove_file(&token_path);
                self.tokens.remove(&id);
            }
        }
        write_private(&self.dir.join(file_name(&id)), &req.encode_to_vec())?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.services.insert(id, req);
        Ok(())
    }

    /// Forgets `id`; true when it was owned.
    pub fn remove(&mut self, id: &str) -> std::io::Result<bool> {
        if self.services.remove(id).is_none() {
            return Ok(false);
        }
        self.tokens.remove(id);
        let _ = std::fs::remove_file(self.dir.join(token_file(id)));
        match std::fs::remove_file(self.dir.join(file_name(id))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Instance IDs a registration owns: the service and its sidecar.
    pub fn owned_ids(req: &api::RegisterRequest) -> Vec<String> {
        let Some(s) = &req.service else { return Vec::new() };
        let mut v = vec![s.id.clone()];
        if req.sidecar.is_some() {
            v.push(tribune_ids::sidecar_id(&s.id));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_survive_a_reopen_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = LocalServices::open(dir.path()).unwrap();
        let req = api::RegisterRequest {
            service: Some(api::ServiceSpec {
                id: "web/1 ü".into(),
                name: "web".into(),
                port: 80,
                ..Default::default()
            }),
            ..Default::default()
        };
        l.put(req.clone(), Some("s3cret")).unwrap();
        l.put(
            api::RegisterRequest {
                service: Some(api::ServiceSpec {
                    id: "api-1".into(),
                    name: "api".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Some("other"),
        )
        .unwrap();
        assert!(l.remove("api-1").unwrap());
        assert!(!l.remove("api-1").unwrap());
        let again = LocalServices::open(dir.path()).unwrap();
        assert_eq!(again.all().len(), 1);
        assert_eq!(again.all().get("web/1 ü"), Some(&req));
        assert_eq!(
            again.token_of("web/1 ü"),
            Some("s3cret"),
            "the token survives a restart"
        );
        assert_eq!(again.token_of("api-1"), None);
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let mode = e.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "registrations and tokens are the owner's alone");
        }
        let dir_mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
    }
}
