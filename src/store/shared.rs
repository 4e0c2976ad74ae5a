//! One store connection pool for every reader of a running instance: the
//! admin API, the followers (modes, rollback, sweep, pairs), the reloader
//! and the mirror's ID lookups. The writer and its pruner keep pools of
//! their own, so a write never waits behind a report.
//!
//! Must never: open a second pool for the same instance, keep a failed
//! open (the next caller tries again; a pool that opened reconnects by
//! itself), or be closed by one of its callers (every other caller would
//! find it closed; it closes when the last handle is dropped).

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::{Store, StoreError, StoreOptions};

/// A store opened (and migrated) on first use and shared by every clone.
#[derive(Debug, Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    options: StoreOptions,
    store: OnceCell<Store>,
}

impl SharedStore {
    /// A handle that opens the store at `url` the first time it is asked for.
    pub fn new(url: &str, options: &StoreOptions) -> SharedStore {
        SharedStore {
            inner: Arc::new(Inner {
                url: url.to_string(),
                options: options.clone(),
                store: OnceCell::new(),
            }),
        }
    }

    /// The store, opening it if no caller has yet; an error is not kept.
    pub async fn get(&self) -> Result<&Store, StoreError> {
        let inner = &self.inner;
        inner
            .store
            .get_or_try_init(|| Store::open(&inner.url, &inner.options))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_shares_one_pool_and_a_failed_open_is_tried_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing_dir = dir.path().join("not-yet");
        let url = format!("sqlite://{}", missing_dir.join("store.db").display());
        let shared = SharedStore::new(&url, &StoreOptions::default());
        let clone = shared.clone();
        assert!(shared.get().await.is_err(), "its directory does not exist yet");
        std::fs::create_dir(&missing_dir).expect("create dir");
        let first = shared
            .get()
            .await
            .expect("a failed open is not kept: it opens once the directory exists");
        let second = clone.get().await.expect("the clone sees it");
        assert!(std::ptr::eq(first, second), "one store, one pool, for every clone");
        first
            .add_event("config_reload", &serde_json::json!({}), 1)
            .await
            .expect("the shared store writes");
    }
}
