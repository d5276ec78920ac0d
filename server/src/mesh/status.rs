//! Who is connected over ADS and how each stream's resource types stand:
//! versions sent, ACKs, and the last rejection. Served on HTTP at
//! `/v1/agent/xds`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tribune_xds::TypeStatus;

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TypeView {
    #[serde(rename = "type")]
    pub type_url: String,
    pub sent_version: String,
    pub acked: bool,
    pub nacks: u64,
    pub last_nack: Option<String>,
    pub resources: usize,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct StreamView {
    pub stream: u64,
    pub proxy_id: String,
    pub mode: &'static str,
    pub types: Vec<TypeView>,
}

#[derive(Default)]
pub(crate) struct StreamRegistry {
    next: AtomicU64,
    streams: Mutex<BTreeMap<u64, StreamView>>,
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, StreamView>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn open(&self, proxy_id: &str, mode: &'static str) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            StreamView {
                stream: id,
                proxy_id: proxy_id.to_string(),
                mode,
                types: Vec::new(),
            },
        );
        id
    }

    pub(crate) fn update(&self, id: u64, types: Vec<TypeStatus>) {
        if let Some(s) = self.lock().get_mut(&id) {
            s.types = types
                .into_iter()
                .map(|t| TypeView {
                    type_url: tribune_xds::names::short(&t.type_url).to_string(),
                    sent_version: t.sent_version,
                    acked: t.acked,
                    nacks: t.nacks,
                    last_nack: t.last_nack.map(|n| n.message),
                    resources: t.resources,
                })
                .collect();
        }
    }

    pub(crate) fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(crate) fn snapshot(&self) -> Vec<StreamView> {
        self.lock().values().cloned().collect()
    }
}
