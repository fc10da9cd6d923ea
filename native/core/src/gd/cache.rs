//! The local cache in front of the session table (moka): JIDs live
//! `jid_lifetime_seconds` with at most `max_jids` entries, domains live
//! `domain_lifetime_seconds`. With `cache_missed`, "not in the table" is
//! cached too. A lifetime (or `max_jids`) of 0 turns that cache off.

use std::time::Duration;

use moka::future::Cache;

use crate::gd::config::CacheOptions;

/// `None`: the table has no entry (a cached miss).
pub type Cached = Option<Vec<u8>>;

pub struct MappingCache {
    jids: Option<Cache<Vec<u8>, Cached>>,
    domains: Option<Cache<Vec<u8>, Cached>>,
    cache_missed: bool,
}

impl MappingCache {
    pub fn new(opts: &CacheOptions) -> MappingCache {
        let jids = (opts.jid_lifetime_seconds > 0 && opts.max_jids > 0).then(|| {
            Cache::builder()
                .max_capacity(opts.max_jids)
                .time_to_live(Duration::from_secs(opts.jid_lifetime_seconds))
                .build()
        });
        let domains = (opts.domain_lifetime_seconds > 0).then(|| {
            Cache::builder()
                .time_to_live(Duration::from_secs(opts.domain_lifetime_seconds))
                .build()
        });
        MappingCache {
            jids,
            domains,
            cache_missed: opts.cache_missed,
        }
    }

    /// `Some(entry)` on a hit (the entry may be a cached miss).
    pub async fn jid(&self, key: &[u8]) -> Option<Cached> {
        get(&self.jids, key).await
    }

    pub async fn domain(&self, key: &[u8]) -> Option<Cached> {
        get(&self.domains, key).await
    }

    /// Caches what the table answered; a miss only with `cache_missed`.
    pub async fn store_jid(&self, key: &[u8], value: Cached) {
        self.store(&self.jids, key, value).await
    }

    pub async fn store_domain(&self, key: &[u8], value: Cached) {
        self.store(&self.domains, key, value).await
    }

    pub async fn remove_jid(&self, key: &[u8]) {
        if let Some(c) = &self.jids {
            c.invalidate(key).await;
        }
    }

    pub async fn remove_domain(&self, key: &[u8]) {
        if let Some(c) = &self.domains {
            c.invalidate(key).await;
        }
    }

    /// Entries currently held (after pending evictions are applied).
    pub async fn jid_count(&self) -> u64 {
        match &self.jids {
            Some(c) => {
                c.run_pending_tasks().await;
                c.entry_count()
            }
            None => 0,
        }
    }

    pub async fn domain_count(&self) -> u64 {
        match &self.domains {
            Some(c) => {
                c.run_pending_tasks().await;
                c.entry_count()
            }
            None => 0,
        }
    }

    async fn store(&self, cache: &Option<Cache<Vec<u8>, Cached>>, key: &[u8], value: Cached) {
        if let Some(c) = cache {
            if value.is_some() || self.cache_missed {
                c.insert(key.to_vec(), value).await;
            }
        }
    }
}

async fn get(cache: &Option<Cache<Vec<u8>, Cached>>, key: &[u8]) -> Option<Cached> {
    match cache {
        Some(c) => c.get(key).await,
        None => None,
    }
}
