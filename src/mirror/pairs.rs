//! The store side of the ID map: pairs learned here are written at once,
//! and a miss is looked up in the store before an ID is called unmapped.
//!
//! Must never: await the store on the proxy's hot path, or look up one
//! missing ID more than once per `MISS_TTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::idmap::{IdMap, Side};

/// The store side of the ID map: pairs this instance learns are written at
/// once (another instance may need them for the next request), and a miss
/// is looked up there before an ID is called unmapped.
pub(super) struct SharedPairs {
    pub(super) store: crate::store::SharedStore,
    /// Recent misses, not asked again for a while (an unmapped ID is usually asked for repeatedly).
    pub(super) misses: Mutex<HashMap<(String, String), Instant>>,
}

/// How long a miss in the store is believed.
const MISS_TTL: Duration = Duration::from_secs(5);

impl SharedPairs {
    pub(super) async fn store(&self) -> Option<&crate::store::Store> {
        self.store.get().await.ok()
    }

    /// Looks an ID up in the store; a pair found is added to `ids`.
    pub(super) async fn find(&self, ids: &IdMap, kind: &str, id: &str, known: Side) -> bool {
        let key = (kind.to_string(), id.to_string());
        {
            let mut misses = self.misses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            misses.retain(|_, at| at.elapsed() < MISS_TTL);
            if misses.contains_key(&key) {
                return false;
            }
        }
        let Some(store) = self.store().await else { return false };
        match store.id_pair_of(kind, id, known).await {
            Ok(Some(pair)) => ids.insert(&pair).is_ok(),
            _ => {
                let mut misses = self.misses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if misses.len() < 100_000 {
                    misses.insert(key, Instant::now());
                }
                false
            }
        }
    }
}
