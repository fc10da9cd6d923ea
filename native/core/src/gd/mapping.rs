//! `mod_global_distrib_mapping`: lookups through the cache, writes to the
//! table, the set of entries this node owns, and the refresher that keeps
//! them alive.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use crate::engine::pool::AnyPool;
use crate::error::{Error, Result};
use crate::gd::cache::MappingCache;
use crate::gd::config::GdConfig;
use crate::gd::jid::Jid;
use crate::gd::metrics::Metrics;
use crate::gd::store::{Owned, RefreshReport, Store};
use crate::gd::GdError;
use crate::runtime;
use crate::term::Term;

/// The shortest pause between two refreshes (`refresh_after = 0`).
const MIN_REFRESH_PAUSE: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Local {
    /// Session keys of this node and the stamps they were written with.
    jids: HashMap<Vec<u8>, Option<u64>>,
    domains: HashSet<Vec<u8>>,
    public_domains: HashSet<Vec<u8>>,
}

pub struct Mapping {
    pub config: GdConfig,
    store: Store,
    cache: MappingCache,
    pub metrics: Metrics,
    local: Mutex<Local>,
    endpoints: Vec<Vec<u8>>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Mapping {
    /// Builds the mapping on `pool` for Erlang node `node`; nothing is
    /// written yet (see [`start`](Mapping::start)).
    pub fn new(config: GdConfig, node: &str, pool: Arc<dyn AnyPool>) -> Mapping {
        let store = Store::new(pool, &config.local_host, node, config.redis.expire_after);
        let cache = MappingCache::new(&config.cache);
        let endpoints = config
            .connections
            .advertised_endpoints
            .iter()
            .map(|e| e.to_redis())
            .collect();
        Mapping {
            config,
            store,
            cache,
            metrics: Metrics::default(),
            local: Mutex::new(Local::default()),
            endpoints,
            refresher: Mutex::new(None),
        }
    }

    /// Writes this node's entries once, then refreshes them every
    /// `refresh_after` seconds until [`stop`](Mapping::stop).
    pub async fn start(
        config: GdConfig,
        node: &str,
        pool: Arc<dyn AnyPool>,
    ) -> std::result::Result<Arc<Mapping>, GdError> {
        let mapping = Arc::new(Mapping::new(config, node, pool));
        mapping.refresh().await?;
        mapping.start_refresher();
        Ok(mapping)
    }

    fn start_refresher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let pause = Duration::from_secs(self.config.redis.refresh_after).max(MIN_REFRESH_PAUSE);
        let task = runtime::handle().spawn(async move {
            loop {
                tokio::time::sleep(pause).await;
                let Some(mapping) = weak.upgrade() else {
                    return;
                };
                match mapping.refresh().await {
                    Ok(r) => log::debug!("gd mapping refreshed: {r:?}"),
                    Err(e) => log::warn!("gd mapping refresh failed: {e}"),
                }
            }
        });
        if let Ok(mut slot) = self.refresher.lock() {
            if let Some(old) = slot.replace(task) {
                old.abort();
            }
        }
    }

    /// Stops the refresher; entries in Redis expire on their own.
    pub fn stop(&self) {
        if let Some(task) = self.refresher.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }

    pub fn local_host(&self) -> &[u8] {
        &self.store.local_host
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cache(&self) -> &MappingCache {
        &self.cache
    }

    fn owned(&self) -> Owned {
        let Ok(local) = self.local.lock() else {
            return Owned::default();
        };
        let sorted = |s: &HashSet<Vec<u8>>| {
            let mut v: Vec<_> = s.iter().cloned().collect();
            v.sort();
            v
        };
        Owned {
            jids: local.jids.iter().map(|(k, s)| (k.clone(), *s)).collect(),
            domains: sorted(&local.domains),
            public_domains: sorted(&local.public_domains),
            endpoints: self.endpoints.clone(),
        }
    }

    /// Takes `keys` as sessions of this node without writing them (the
    /// next refresh does); for tests and benchmarks.
    pub fn adopt(&self, keys: impl IntoIterator<Item = Vec<u8>>) {
        self.with_local(|l| l.jids.extend(keys.into_iter().map(|k| (k, None))));
    }

    pub fn owned_jids(&self) -> usize {
        self.local.lock().map(|l| l.jids.len()).unwrap_or(0)
    }

    /// One refresh of what this node owns. Sessions it claimed get their
    /// stamps; a session that closed while the refresh was writing (and
    /// whose owner record another close replaced) is deleted again.
    pub async fn refresh(&self) -> Result<RefreshReport> {
        let mut report = self.store.refresh(&self.owned(), now_secs()).await?;
        let mut gone = vec![];
        if let Ok(mut l) = self.local.lock() {
            for (key, stamp) in &report.written {
                match l.jids.get_mut(key) {
                    Some(slot @ None) => *slot = Some(*stamp),
                    Some(Some(s)) if s == stamp => {}
                    _ => gone.push((key.clone(), *stamp)),
                }
            }
        }
        if !gone.is_empty() {
            self.store.delete_sessions(&gone).await?;
        }
        report.written.clear();
        Ok(report)
    }

    fn with_local(&self, f: impl FnOnce(&mut Local)) {
        if let Ok(mut l) = self.local.lock() {
            f(&mut l)
        }
    }

    // ---- lookups -------------------------------------------------------

    /// The host of a JID: the full JID first, then the bare one.
    pub async fn for_jid(&self, jid: &Jid) -> Result<Option<Vec<u8>>> {
        self.timed(async {
            let full = jid.to_binary();
            if let Some(host) = self.lookup_jid(&full).await? {
                return Ok(Some(host));
            }
            if jid.resource.is_empty() {
                return Ok(None);
            }
            self.lookup_jid(&jid.bare().to_binary()).await
        })
        .await
    }

    /// This datacenter's own host is cached only for a session of this
    /// node: an entry naming it otherwise is stale or about to change, and
    /// a cached copy would outlive the change.
    async fn lookup_jid(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(hit) = self.cache.jid(key).await {
            return Ok(hit);
        }
        self.metrics.miss();
        let found = self.store.get(key).await?;
        let ours = found.as_deref() == Some(self.local_host());
        if !ours || self.has_session(key) {
            self.cache.store_jid(key, found.clone()).await;
        }
        Ok(found)
    }

    fn has_session(&self, key: &[u8]) -> bool {
        self.local
            .lock()
            .map(|l| l.jids.contains_key(key))
            .unwrap_or(false)
    }

    pub async fn for_domain(&self, domain: &[u8]) -> Result<Option<Vec<u8>>> {
        self.timed(async {
            if let Some(hit) = self.cache.domain(domain).await {
                return Ok(hit);
            }
            self.metrics.miss();
            let found = self.store.get(domain).await?;
            self.cache.store_domain(domain, found.clone()).await;
            Ok(found)
        })
        .await
    }

    async fn timed<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.metrics.fetch();
        let started = Instant::now();
        let out = f.await;
        self.metrics
            .fetches_time
            .record(started.elapsed().as_micros() as u64);
        out
    }

    // ---- writes ----------------------------------------------------------

    /// A session opened here: full and bare JID point at this datacenter,
    /// as the newest session of the JID. When Redis fails, the refresher
    /// claims the keys later.
    pub async fn insert_for_jid(&self, jid: &Jid) -> Result<()> {
        let keys = jid.keys();
        let host = self.local_host().to_vec();
        let claimed = self.store.claim_new(&keys).await;
        let stamps = match &claimed {
            Ok(stamps) => stamps.iter().map(|s| Some(*s)).collect(),
            Err(_) => vec![None; keys.len()],
        };
        self.with_local(|l| l.jids.extend(keys.iter().cloned().zip(stamps)));
        for k in &keys {
            self.cache.store_jid(k, Some(host.clone())).await;
        }
        claimed.map(drop)
    }

    /// Only the local cache learns where `jid` is (no table write).
    pub async fn cache_jid(&self, jid: &Jid, host: &[u8]) {
        for k in jid.keys() {
            self.cache.store_jid(&k, Some(host.to_vec())).await;
        }
    }

    /// A session closed here: its entries go unless a newer session
    /// (stamp 0: one never written) owns them.
    pub async fn delete_for_jid(&self, jid: &Jid) -> Result<()> {
        let keys = jid.keys();
        let mut sessions = vec![];
        self.with_local(|l| {
            for k in &keys {
                let stamp = l.jids.remove(k).flatten().unwrap_or(0);
                sessions.push((k.clone(), stamp));
            }
        });
        let result = self.store.delete_sessions(&sessions).await;
        for k in &keys {
            self.cache.remove_jid(k).await;
        }
        result
    }

    /// `insert_for_domain/3`: the cache maps `domain` to `host`; the table
    /// gets this datacenter's entry (and the public set unless hidden).
    pub async fn insert_for_domain(&self, domain: &[u8], host: &[u8], hidden: bool) -> Result<()> {
        self.with_local(|l| {
            l.domains.insert(domain.to_vec());
            if hidden {
                l.public_domains.remove(domain);
            } else {
                l.public_domains.insert(domain.to_vec());
            }
        });
        self.cache.store_domain(domain, Some(host.to_vec())).await;
        self.store.put_domain(domain, hidden).await
    }

    pub async fn cache_domain(&self, domain: &[u8], host: &[u8]) {
        self.cache.store_domain(domain, Some(host.to_vec())).await;
    }

    pub async fn delete_for_domain(&self, domain: &[u8]) -> Result<()> {
        self.with_local(|l| {
            l.domains.remove(domain);
            l.public_domains.remove(domain);
        });
        let result = self.store.delete_domain(domain).await;
        self.cache.remove_domain(domain).await;
        result
    }

    /// Forgets what the cache holds for `jid`: its JID entries when it is on
    /// the global host, else its domain's entry.
    pub async fn clear_cache(&self, jid: &Jid) {
        if jid.server == self.config.global_host.as_bytes() {
            for k in jid.keys() {
                self.cache.remove_jid(&k).await;
            }
        } else {
            self.cache.remove_domain(&jid.server).await;
        }
    }

    /// The call the NIF decoded, run; the Erlang-shaped answer.
    pub async fn run(&self, call: Call) -> Term {
        let host = |h: Option<Vec<u8>>| match h {
            Some(h) => Term::ok(Term::Bin(h)),
            None => Term::atom("error"),
        };
        let done = |r: Result<()>| match r {
            Ok(()) => Term::atom("ok"),
            Err(e) => e.to_term(),
        };
        let list = |r: Result<Vec<Vec<u8>>>| match r {
            Ok(items) => Term::ok(Term::List(items.into_iter().map(Term::Bin).collect())),
            Err(e) => e.to_term(),
        };
        let sorted_list = |r: Result<Vec<Vec<u8>>>| {
            list(r.map(|mut items| {
                items.sort();
                items
            }))
        };
        match call {
            Call::ForJid(j) => self.for_jid(&j).await.map_or_else(|e| e.to_term(), host),
            Call::ForDomain(d) => self.for_domain(&d).await.map_or_else(|e| e.to_term(), host),
            Call::InsertForJid(j) => done(self.insert_for_jid(&j).await),
            Call::CacheJid(j, h) => {
                self.cache_jid(&j, &h).await;
                Term::atom("ok")
            }
            Call::DeleteForJid(j) => done(self.delete_for_jid(&j).await),
            Call::InsertForDomain(d, h, hidden) => {
                let h = h.unwrap_or_else(|| self.local_host().to_vec());
                done(self.insert_for_domain(&d, &h, hidden).await)
            }
            Call::CacheDomain(d, h) => {
                self.cache_domain(&d, &h).await;
                Term::atom("ok")
            }
            Call::DeleteForDomain(d) => done(self.delete_for_domain(&d).await),
            Call::ClearCache(j) => {
                self.clear_cache(&j).await;
                Term::atom("ok")
            }
            Call::AllDomains => list(self.store.all_of("domains").await),
            Call::PublicDomains => list(self.store.all_of("public_domains").await),
            Call::Hosts => sorted_list(self.store.hosts().await),
            Call::Nodes(h) => sorted_list(self.store.nodes(&h).await),
            Call::Endpoints(h) => match self.store.endpoints(&h).await {
                Ok(eps) => Term::ok(Term::List(
                    eps.iter().filter_map(|e| endpoint_term(e)).collect(),
                )),
                Err(e) => e.to_term(),
            },
            Call::Refresh => match self.refresh().await {
                Ok(r) => Term::ok(Term::Map(vec![
                    (Term::atom("jids"), Term::Int(r.jids as i64)),
                    (Term::atom("skipped"), Term::Int(r.skipped as i64)),
                    (Term::atom("domains"), Term::Int(r.domains as i64)),
                    (Term::atom("round_trips"), Term::Int(r.round_trips as i64)),
                    (
                        Term::atom("expired_nodes"),
                        Term::List(r.expired_nodes.into_iter().map(Term::Bin).collect()),
                    ),
                ])),
                Err(e) => e.to_term(),
            },
            Call::CacheSizes => Term::ok(Term::Map(vec![
                (
                    Term::atom("jids"),
                    Term::Int(self.cache.jid_count().await as i64),
                ),
                (
                    Term::atom("domains"),
                    Term::Int(self.cache.domain_count().await as i64),
                ),
            ])),
        }
    }
}

/// `HOST#PORT` → `{HostBinary, Port}`.
fn endpoint_term(e: &[u8]) -> Option<Term> {
    let at = e.iter().rposition(|&b| b == b'#')?;
    let port = std::str::from_utf8(&e[at + 1..])
        .ok()?
        .parse::<i64>()
        .ok()?;
    Some(Term::tuple(vec![
        Term::Bin(e[..at].to_vec()),
        Term::Int(port),
    ]))
}

/// A request from Erlang, checked before it is queued.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    ForJid(Jid),
    ForDomain(Vec<u8>),
    InsertForJid(Jid),
    CacheJid(Jid, Vec<u8>),
    DeleteForJid(Jid),
    /// Domain, host (default: this datacenter), hidden.
    InsertForDomain(Vec<u8>, Option<Vec<u8>>, bool),
    CacheDomain(Vec<u8>, Vec<u8>),
    DeleteForDomain(Vec<u8>),
    ClearCache(Jid),
    AllDomains,
    PublicDomains,
    Hosts,
    Nodes(Vec<u8>),
    Endpoints(Vec<u8>),
    Refresh,
    CacheSizes,
}

impl Call {
    pub fn parse(op: &str, args: &[Term]) -> Result<Call> {
        let bad = || {
            Error::BadRequest(format!(
                "mod_global_distrib_mapping: bad arguments for {op}: {}",
                Term::List(args.to_vec()).describe()
            ))
        };
        let bin = |t: &Term| match t {
            Term::Bin(b) if !b.is_empty() => Ok(b.clone()),
            _ => Err(bad()),
        };
        let boolean = |t: &Term| match t.as_atom() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err(bad()),
        };
        Ok(match (op, args) {
            ("for_jid", [j]) => Call::ForJid(Jid::from_term(j)?),
            ("for_domain", [d]) => Call::ForDomain(bin(d)?),
            ("insert_for_jid", [j]) => Call::InsertForJid(Jid::from_term(j)?),
            ("cache_jid", [j, h]) => Call::CacheJid(Jid::from_term(j)?, bin(h)?),
            ("delete_for_jid", [j]) => Call::DeleteForJid(Jid::from_term(j)?),
            ("insert_for_domain", [d]) => Call::InsertForDomain(bin(d)?, None, false),
            ("insert_for_domain", [d, hidden]) => {
                Call::InsertForDomain(bin(d)?, None, boolean(hidden)?)
            }
            ("insert_for_domain", [d, h, hidden]) => {
                Call::InsertForDomain(bin(d)?, Some(bin(h)?), boolean(hidden)?)
            }
            ("cache_domain", [d, h]) => Call::CacheDomain(bin(d)?, bin(h)?),
            ("delete_for_domain", [d]) => Call::DeleteForDomain(bin(d)?),
            ("clear_cache", [j]) => Call::ClearCache(Jid::from_term(j)?),
            ("all_domains", []) => Call::AllDomains,
            ("public_domains", []) => Call::PublicDomains,
            ("hosts", []) => Call::Hosts,
            ("nodes", [h]) => Call::Nodes(bin(h)?),
            ("endpoints", [h]) => Call::Endpoints(bin(h)?),
            ("refresh", []) => Call::Refresh,
            ("cache_sizes", []) => Call::CacheSizes,
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
