//! Leaf certificates for the services this server's proxies front. They
//! are not replicated: any server holding the CA's key can sign, so each
//! keeps a cache, renews every leaf at 60 to 80% of its TTL (with jitter,
//! so renewals do not bunch up) and re-issues all of them when the active
//! root changes. Signing goes through a token bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::Rng;
use tribune_certs::{CertError, Leaf, sign_leaf};

use crate::catalog::mesh::CaState;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LeafError {
    #[error("the CA is not initialized yet")]
    NoCa,
    #[error("leaf signing is rate-limited ({0}/s): try again shortly")]
    RateLimited(u32),
    #[error("signing a leaf: {0}")]
    Sign(#[from] CertError),
}

/// A leaf with what a proxy presents: the leaf, then the datacenter's
/// intermediate (in a secondary), then the cross-signed active root while
/// an older root is still trusted.
#[derive(Clone, Debug)]
pub(crate) struct IssuedLeaf {
    pub leaf: Leaf,
    pub chain_pem: String,
    pub renew_at_unix: i64,
}

struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) struct LeafCache {
    leaves: Mutex<HashMap<String, Arc<IssuedLeaf>>>,
    bucket: Mutex<Bucket>,
    rate: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LeafCache {
    pub(crate) fn new(sign_rate: u32) -> Self {
        LeafCache {
            leaves: Mutex::default(),
            bucket: Mutex::new(Bucket {
                rate: f64::from(sign_rate),
                tokens: f64::from(sign_rate),
                at: Instant::now(),
            }),
            rate: sign_rate,
        }
    }

    /// A fresh leaf for `service`, signed by the datacenter's signer (not cached).
    pub(crate) fn sign(
        &self,
        ca: &CaState,
        datacenter: &str,
        service: &str,
        now: i64,
    ) -> Result<IssuedLeaf, LeafError> {
        let signer = ca.signer().ok_or(LeafError::NoCa)?;
        if !lock(&self.bucket).take() {
            return Err(LeafError::RateLimited(self.rate));
        }
        let id = tribune_certs::service_spiffe_id(&ca.trust_domain, datacenter, service);
        let ttl = ca.leaf_ttl_secs as i64;
        let leaf = sign_leaf(signer, &id, ttl, now)?;
        let chain_pem = format!("{}{}", leaf.cert_pem, ca.chain_after_leaf());
        let share = rand::thread_rng().gen_range(0.6..0.8);
        let renew_at_unix = leaf.not_before_unix + 60 + ((ttl as f64) * share) as i64;
        Ok(IssuedLeaf {
            leaf,
            chain_pem,
            renew_at_unix,
        })
    }

    /// The cached leaf for `service`, re-issued when it is due, when the
    /// signer changed (a root rotation, a new intermediate), or when the
    /// chain it is presented with changed.
    pub(crate) fn get(
        &self,
        ca: &CaState,
        datacenter: &str,
        service: &str,
        now: i64,
    ) -> Result<Arc<IssuedLeaf>, LeafError> {
        let signer = ca.signer().ok_or(LeafError::NoCa)?;
        let cached = lock(&self.leaves).get(service).cloned();
        if let Some(l) = &cached {
            let chain_unchanged =
                l.chain_pem.get(l.leaf.cert_pem.len()..) == Some(ca.chain_after_leaf().as_str());
            let fresh = l.leaf.root_id == signer.id && now < l.renew_at_unix && chain_unchanged;
            if fresh {
                return Ok(l.clone());
            }
        }
        match self.sign(ca, datacenter, service, now) {
            Ok(l) => {
                let l = Arc::new(l);
                lock(&self.leaves).insert(service.to_string(), l.clone());
                Ok(l)
            }
            // Rate-limited: keep serving the old leaf while it is valid.
            Err(LeafError::RateLimited(r)) => match cached.filter(|l| now < l.leaf.not_after_unix) {
                Some(l) => Ok(l),
                None => Err(LeafError::RateLimited(r)),
            },
            Err(e) => Err(e),
        }
    }

    /// When the next cached leaf is due for renewal.
    pub(crate) fn next_renewal(&self) -> Option<i64> {
        lock(&self.leaves).values().map(|l| l.renew_at_unix).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::mesh::CaRoot;

    fn ca(now: i64) -> CaState {
        let root = tribune_certs::new_root("abc.tribune", "Tribune CA 1", 10 * 365 * 86400, now).unwrap();
        CaState {
            cluster_id: "abc".into(),
            trust_domain: "abc.tribune".into(),
            leaf_ttl_secs: 3600,
            roots: vec![CaRoot {
                root,
                cross_signed_pem: None,
                rotated_out_unix: None,
            }],
            signing: None,
            create_index: 1,
            modify_index: 1,
        }
    }

    #[test]
    fn leaves_are_cached_and_renewed_at_60_to_80_percent_of_their_ttl() {
        let now = 1_800_000_000;
        let ca = ca(now);
        let cache = LeafCache::new(1000);
        let a = cache.get(&ca, "dc1", "web", now).unwrap();
        assert!(a.leaf.spiffe_id.ends_with("/dc/dc1/svc/web"));
        let issued = a.leaf.not_before_unix + 60;
        let share = (a.renew_at_unix - issued) as f64 / 3600.0;
        assert!((0.6..0.8).contains(&share), "renewal at {share} of the TTL");
        let again = cache.get(&ca, "dc1", "web", now + 60).unwrap();
        assert_eq!(a.leaf.serial_hex, again.leaf.serial_hex, "served from the cache");
        let renewed = cache.get(&ca, "dc1", "web", a.renew_at_unix).unwrap();
        assert_ne!(a.leaf.serial_hex, renewed.leaf.serial_hex, "renewed when due");
        assert_eq!(cache.next_renewal(), Some(renewed.renew_at_unix));
    }

    #[test]
    fn a_new_root_reissues_leaves_with_the_cross_signed_intermediate() {
        let now = 1_800_000_000;
        let mut ca = ca(now);
        let cache = LeafCache::new(1000);
        let old = cache.get(&ca, "dc1", "web", now).unwrap();
        let root2 = tribune_certs::new_root("abc.tribune", "Tribune CA 2", 10 * 365 * 86400, now).unwrap();
        let cross = tribune_certs::cross_sign(&root2, &ca.roots[0].root, now).unwrap();
        let old_root_pem = ca.roots[0].root.cert_pem.clone();
        ca.roots[0].rotated_out_unix = Some(now);
        ca.roots.push(CaRoot {
            root: root2.clone(),
            cross_signed_pem: Some(cross.clone()),
            rotated_out_unix: None,
        });
        let new = cache.get(&ca, "dc1", "web", now + 1).unwrap();
        assert_eq!(new.leaf.root_id, root2.id);
        assert_ne!(old.leaf.serial_hex, new.leaf.serial_hex);
        // A peer that only trusts the old root can verify the new leaf.
        tribune_certs::verify_chain(&new.chain_pem, &[], &[&old_root_pem], now + 1).unwrap();

        // Once the old root is pruned, the intermediate is dropped.
        ca.roots.remove(0);
        let pruned = cache.get(&ca, "dc1", "web", now + 2).unwrap();
        assert_eq!(pruned.chain_pem, pruned.leaf.cert_pem);
    }

    #[test]
    fn signing_is_rate_limited() {
        let now = 1_800_000_000;
        let ca = ca(now);
        let cache = LeafCache::new(2);
        cache.sign(&ca, "dc1", "a", now).unwrap();
        cache.sign(&ca, "dc1", "b", now).unwrap();
        assert!(matches!(
            cache.sign(&ca, "dc1", "c", now),
            Err(LeafError::RateLimited(2))
        ));
    }
}
