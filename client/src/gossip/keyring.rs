//! Gossip encryption keys: AES-256-GCM with a keyring, as Consul's
//! `encrypt` key and `consul keyring`.
//!
//! A keyring holds one or more 32-byte keys, given as base64 (the format of
//! `consul keygen`). Packets are sealed with the primary key and opened with
//! any installed key, so that a key can be rotated without a flag day:
//! install the new key everywhere, make it primary everywhere, then remove
//! the old one everywhere.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Length of a key once decoded: AES-256.
pub const KEY_LEN: usize = 32;
/// The format version: the first byte of every sealed packet, so that the
/// format can change later without being mistaken for this one.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes that sealing adds to a plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// What can go wrong with a key, a keyring or a sealed packet.
///
/// No variant carries key material: these errors end up in logs and in
/// answers to remote callers.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The key is not base64.
    #[error("the gossip key is not valid base64: {source}")]
    Base64 {
        /// Why.
        #[source]
        source: base64::DecodeError,
    },
    /// The key does not decode to 32 bytes.
    #[error("a gossip key must decode to {KEY_LEN} bytes (AES-256), this one decodes to {len} bytes")]
    KeyLength {
        /// The decoded length.
        len: usize,
    },
    /// The key is not in the keyring.
    #[error("the key is not installed in the gossip keyring")]
    NotInstalled,
    /// Removing the primary key would leave nothing to seal with.
    #[error("the primary gossip key cannot be removed: make another key primary first")]
    RemovePrimary,
    /// The agent runs without gossip encryption.
    #[error("gossip encryption is off on this agent: it must be started with a key to use a keyring")]
    NotEnabled,
    /// The packet is shorter than the sealing overhead.
    #[error("the packet is too short to be sealed ({len} bytes, a sealed packet has at least {OVERHEAD})")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The packet does not start with the version byte (often a plaintext
    /// packet from an agent without encryption).
    #[error("the packet is not sealed in a known format (version byte {version}, expected {VERSION})")]
    Version {
        /// The first byte found.
        version: u8,
    },
    /// Authentication failed with every key: another key, or tampering.
    #[error("none of the {keys} installed gossip keys opens the packet")]
    NoKeyOpens {
        /// How many keys were tried.
        keys: usize,
    },
    /// The keyring file cannot be read or written.
    #[error("cannot {op} the gossip keyring file {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The keyring file is not a JSON list of strings.
    #[error("the gossip keyring file {path} is not a JSON list of base64 keys: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The keyring file is an empty list.
    #[error("the gossip keyring file {path} holds no key")]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// One key of the keyring file is unusable.
    #[error("key #{index} of the gossip keyring file {path}: {source}")]
    BadKeyInFile {
        /// The file.
        path: PathBuf,
        /// Position of the key in the list, from 0.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<KeyringError>,
    },
}

#[derive(Clone)]
struct Key {
    raw: [u8; KEY_LEN],
    // Kept expanded: every packet in and out goes through it.
    cipher: Aes256Gcm,
}

impl Key {
    fn parse(b64: &str) -> Result<Key, KeyringError> {
        let bytes = BASE64
            .decode(b64.trim())
            .map_err(|source| KeyringError::Base64 { source })?;
        let raw: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyringError::KeyLength { len: bytes.len() })?;
        Ok(Key {
            raw,
            cipher: Aes256Gcm::new(&raw.into()),
        })
    }

    fn encoded(&self) -> String {
        BASE64.encode(self.raw)
    }
}

/// Gossip encryption keys, one of them primary.
#[derive(Clone)]
pub struct Keyring {
    // keys[0] is the primary; never empty.
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    // Keys are secrets: configs holding a keyring get logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A new random key, base64-encoded (as `consul keygen` prints).
    pub fn generate_key() -> String {
        let mut raw = [0u8; KEY_LEN];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::fill(&mut raw[..]);
        BASE64.encode(raw)
    }

    /// A keyring holding just `primary_b64`.
    pub fn new(primary_b64: &str) -> Result<Keyring, KeyringError> {
        Ok(Keyring {
            keys: vec![Key::parse(primary_b64)?],
        })
    }

    fn position(&self, key: &Key) -> Option<usize> {
        self.keys.iter().position(|k| k.raw == key.raw)
    }

    /// Adds a key, which opens packets from now on (installing a key
    /// already there does nothing).
    pub fn install(&mut self, key: &str) -> Result<(), KeyringError> {
        let key = Key::parse(key)?;
        if self.position(&key).is_none() {
            self.keys.push(key);
        }
        Ok(())
    }

    /// Makes an installed key the primary: it seals every packet from now
    /// on.
    pub fn use_key(&mut self, key: &str) -> Result<(), KeyringError> {
        let key = Key::parse(key)?;
        let at = self.position(&key).ok_or(KeyringError::NotInstalled)?;
        let key = self.keys.remove(at);
        self.keys.insert(0, key);
        Ok(())
    }

    /// Removes a key that is not the primary.
    pub fn remove(&mut self, key: &str) -> Result<(), KeyringError> {
        let key = Key::parse(key)?;
        match self.position(&key) {
            None => Err(KeyringError::NotInstalled),
            Some(0) => Err(KeyringError::RemovePrimary),
            Some(at) => {
                self.keys.remove(at);
                Ok(())
            }
        }
    }

    /// The installed keys, base64, the primary first.
    pub fn list(&self) -> Vec<String> {
        self.keys.iter().map(Key::encoded).collect()
    }

    /// The primary key, base64.
    pub fn primary(&self) -> String {
        self.keys[0].encoded()
    }

    /// Seals `plaintext` with the primary key: version byte, 12-byte random
    /// nonce, then ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random nonces, as memberlist does: agents share the key and keep
        // no common counter. The odds of a repeated nonce grow with the
        // packets sealed under one key (about n^2 / 2^97), which rotation
        // bounds.
        rand::fill(&mut nonce[..]);
        let sealed = self.keys[0]
            .cipher
            .encrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &[VERSION],
                },
            )
            // AES-GCM only refuses plaintexts over 64 GiB; gossip frames are
            // bounded to a few MiB.
            .expect("AES-GCM seals any plaintext under 64 GiB");
        let mut packet = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        packet.push(VERSION);
        packet.extend_from_slice(&nonce);
        packet.extend_from_slice(&sealed);
        packet
    }

    /// Opens a packet sealed by [`Keyring::seal`] with any installed key.
    pub fn open(&self, packet: &[u8]) -> Result<Vec<u8>, KeyringError> {
        if packet.len() < OVERHEAD {
            return Err(KeyringError::Truncated { len: packet.len() });
        }
        if packet[0] != VERSION {
            return Err(KeyringError::Version { version: packet[0] });
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&packet[1..1 + NONCE_LEN]);
        let nonce = Nonce::<Aes256Gcm>::from(nonce);
        let msg = &packet[1 + NONCE_LEN..];
        self.keys
            .iter()
            .find_map(|k| k.cipher.decrypt(&nonce, Payload { msg, aad: &[VERSION] }).ok())
            .ok_or(KeyringError::NoKeyOpens {
                keys: self.keys.len(),
            })
    }

    /// Reads a keyring file: a JSON list of base64 keys, the primary first.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let text = std::fs::read(path).map_err(|source| KeyringError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let encoded: Vec<String> = serde_json::from_slice(&text).map_err(|source| KeyringError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let mut keys: Vec<Key> = Vec::with_capacity(encoded.len());
        for (index, b64) in encoded.iter().enumerate() {
            let key = Key::parse(b64).map_err(|e| KeyringError::BadKeyInFile {
                path: path.to_path_buf(),
                index,
                source: Box::new(e),
            })?;
            if !keys.iter().any(|k| k.raw == key.raw) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(KeyringError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        Ok(Keyring { keys })
    }

    /// Writes the keyring file, readable by this user only. The file is
    /// replaced atomically, so that a crash leaves either the old keyring
    /// or the new one, never a torn file that would keep the agent out of
    /// its cluster.
    pub fn save(&self, path: &Path) -> Result<(), KeyringError> {
        let io_err = |op: &'static str| {
            move |source| KeyringError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        let json = serde_json::to_vec_pretty(&self.list()).map_err(|source| KeyringError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io_err("create the directory of"))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{:016x}", rand::random::<u64>()));
        let written = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut file = opts.open(&tmp)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("write")(e));
        }
        // The rename is durable only once the directory is synced; a
        // failure here leaves a complete file, so it is not an error.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_32_random_bytes() {
        let a = Keyring::generate_key();
        let b = Keyring::generate_key();
        assert_ne!(a, b);
        assert_eq!(BASE64.decode(&a).map(|k| k.len()).ok(), Some(KEY_LEN));
        assert!(Keyring::new(&a).is_ok());
    }

    #[test]
    fn seal_open_roundtrip() {
        let ring = Keyring::new(&Keyring::generate_key()).expect("key");
        let sealed = ring.seal(b"hello gossip");
        assert_eq!(sealed.len(), OVERHEAD + b"hello gossip".len());
        assert_eq!(sealed[0], VERSION);
        assert_ne!(&sealed[1 + NONCE_LEN..][..12], b"hello gossip");
        // A fresh nonce each time.
        assert_ne!(ring.seal(b"hello gossip"), sealed);
        assert_eq!(ring.open(&sealed).expect("opens"), b"hello gossip");
        assert_eq!(ring.open(&ring.seal(b"")).expect("opens empty"), b"");
    }

    #[test]
    fn wrong_key_plaintext_and_tampering_fail() {
        let ring = Keyring::new(&Keyring::generate_key()).expect("key");
        let other = Keyring::new(&Keyring::generate_key()).expect("key");
        let sealed = ring.seal(b"secret");
        assert!(matches!(
            other.open(&sealed),
            Err(KeyringError::NoKeyOpens { keys: 1 })
        ));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            ring.open(&tampered),
            Err(KeyringError::NoKeyOpens { .. })
        ));
        let mut wrong_version = sealed.clone();
        wrong_version[0] = 0;
        assert!(matches!(
            ring.open(&wrong_version),
            Err(KeyringError::Version { version: 0 })
        ));
        assert!(matches!(
            ring.open(b"short"),
            Err(KeyringError::Truncated { len: 5 })
        ));
        let plaintext = [0u8; 64];
        assert!(ring.open(&plaintext).is_err());
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Keyring::new("not base64!").expect_err("bad base64");
        assert!(matches!(e, KeyringError::Base64 { .. }), "{e}");
        let e = Keyring::new(&BASE64.encode([0u8; 16])).expect_err("short key");
        assert!(matches!(e, KeyringError::KeyLength { len: 16 }), "{e}");
        assert!(e.to_string().contains("16 bytes"), "{e}");
    }

    #[test]
    fn rotation_install_use_remove() {
        let old = Keyring::generate_key();
        let new = Keyring::generate_key();
        let mut ring = Keyring::new(&old).expect("key");
        let sealed_old = ring.seal(b"before");

        assert!(matches!(ring.use_key(&new), Err(KeyringError::NotInstalled)));
        assert!(matches!(ring.remove(&new), Err(KeyringError::NotInstalled)));
        ring.install(&new).expect("install");
        ring.install(&new).expect("install twice");
        assert_eq!(ring.list(), vec![old.clone(), new.clone()]);
        // Installed but not primary: opens, does not seal.
        let mut new_only = Keyring::new(&new).expect("key");
        assert!(new_only.open(&ring.seal(b"x")).is_err());

        ring.use_key(&new).expect("use");
        assert_eq!(ring.list(), vec![new.clone(), old.clone()]);
        assert_eq!(ring.primary(), new);
        assert_eq!(new_only.open(&ring.seal(b"x")).expect("new seals"), b"x");
        assert_eq!(ring.open(&sealed_old).expect("old still opens"), b"before");

        let e = ring.remove(&new).expect_err("primary");
        assert!(matches!(e, KeyringError::RemovePrimary));
        ring.remove(&old).expect("remove old");
        assert_eq!(ring.list(), vec![new.clone()]);
        assert!(matches!(
            ring.open(&sealed_old),
            Err(KeyringError::NoKeyOpens { keys: 1 })
        ));

        new_only.install(&old).expect("install");
        assert_eq!(new_only.list(), vec![new, old]);
    }

    #[test]
    fn debug_shows_no_key() {
        let key = Keyring::generate_key();
        let ring = Keyring::new(&key).expect("key");
        let shown = format!("{ring:?}");
        assert!(!shown.contains(&key), "{shown}");
    }

    #[test]
    fn save_load_roundtrip_private_and_atomic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("serf").join("local.keyring");
        let mut ring = Keyring::new(&Keyring::generate_key()).expect("key");
        ring.install(&Keyring::generate_key()).expect("install");
        ring.save(&path).expect("save");
        let loaded = Keyring::load(&path).expect("load");
        assert_eq!(loaded.list(), ring.list());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Saving again replaces the file and leaves no temporary behind.
        ring.use_key(&ring.list()[1].clone()).expect("use");
        ring.save(&path).expect("save again");
        assert_eq!(Keyring::load(&path).expect("load").list(), ring.list());
        let entries: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("local.keyring")]);
    }

    #[test]
    fn load_names_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring");
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyringError::Io { op: "read", .. })
        ));
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(Keyring::load(&path), Err(KeyringError::Parse { .. })));
        std::fs::write(&path, "[]").expect("write");
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyringError::EmptyFile { .. })
        ));
        let good = Keyring::generate_key();
        std::fs::write(&path, format!("[\"{good}\", \"AAAA\"]")).expect("write");
        let e = Keyring::load(&path).expect_err("bad second key");
        assert!(matches!(e, KeyringError::BadKeyInFile { index: 1, .. }), "{e}");
    }
}
