//! Tests of `gd::mapping` against the Redis on 127.0.0.1:6379, database 9.
//! Every test has a local host and JIDs of its own, so tests run in
//! parallel without touching each other's keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::config::{Node, PoolSettings, PoolType};
use crate::drivers::redis::{RedisConfig, RedisDriver};
use crate::engine::pool::Pool;
use crate::gd::config::CacheOptions;
use crate::gd::store::{node_key, nodes_key, owner_key, REFRESH_BATCH};

const DB: i64 = 9;
const NODE: &str = "mongooseim@gdtest";

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

async fn pool() -> Arc<dyn AnyPool> {
    let opts = Term::Map(vec![(Term::atom("workers"), Term::Int(4))]);
    let settings = PoolSettings::read(PoolType::Redis, &Node::new("p", &opts)).unwrap();
    let conn = Term::Map(vec![(Term::atom("database"), Term::Int(DB))]);
    let driver = RedisDriver::new(
        RedisConfig::read(&Node::new("p.connection", &conn)).unwrap(),
        5000,
    )
    .unwrap();
    Arc::new(Pool::start(driver, settings).await.unwrap())
}

struct Dc {
    m: Arc<Mapping>,
    global: String,
    local: String,
}

fn config(global: &str, local: &str, cache: CacheOptions, expire_after: u64) -> GdConfig {
    let opts = Term::Map(vec![
        (Term::atom("global_host"), Term::from(global)),
        (Term::atom("local_host"), Term::from(local)),
        (
            Term::atom("redis"),
            Term::Map(vec![(
                Term::atom("expire_after"),
                Term::Int(expire_after as i64),
            )]),
        ),
        (
            Term::atom("connections"),
            Term::Map(vec![(
                Term::atom("advertised_endpoints"),
                Term::List(vec![Term::tuple(vec![
                    Term::from("10.0.0.1"),
                    Term::Int(5555),
                ])]),
            )]),
        ),
    ]);
    let mut c = GdConfig::read(&opts, &[global.to_string(), local.to_string()]).unwrap();
    c.cache = cache;
    c
}

async fn dc_with(name: &str, cache: CacheOptions, expire_after: u64) -> Dc {
    let id = unique(name);
    let global = format!("global-{id}.test");
    let local = format!("dc1-{id}.test");
    let m = Mapping::start(
        config(&global, &local, cache, expire_after),
        NODE,
        pool().await,
    )
    .await
    .unwrap();
    Dc { m, global, local }
}

async fn dc(name: &str) -> Dc {
    dc_with(name, CacheOptions::default(), 120).await
}

impl Dc {
    /// Stops the refresher and takes this test's host out of the shared
    /// `hosts` set and nodes hash, so database 9 does not grow run by run.
    async fn finish(&self) {
        self.m.stop();
        self.q(&[b"SREM", b"hosts", self.local.as_bytes()]).await;
        self.q(&[b"DEL", &nodes_key(self.local.as_bytes())]).await;
    }

    fn jid(&self, user: &str, resource: &str) -> Jid {
        Jid::new(user, &self.global, resource)
    }

    async fn q(&self, args: &[&[u8]]) -> Term {
        self.m
            .store()
            .q(args.iter().map(|a| a.to_vec()).collect())
            .await
            .unwrap()
    }

    async fn ttl(&self, key: &[u8]) -> i64 {
        match self.q(&[b"TTL", key]).await {
            Term::Bin(b) => String::from_utf8(b).unwrap().parse().unwrap(),
            other => panic!("TTL answered {other:?}"),
        }
    }

    async fn members(&self, key: &[u8]) -> Vec<Vec<u8>> {
        match self.q(&[b"SMEMBERS", key]).await {
            Term::List(items) => {
                let mut v: Vec<Vec<u8>> = items
                    .into_iter()
                    .map(|t| match t {
                        Term::Bin(b) => b,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                v.sort();
                v
            }
            other => panic!("SMEMBERS answered {other:?}"),
        }
    }

    fn key(&self, kind: &str) -> Vec<u8> {
        node_key(self.local.as_bytes(), NODE.as_bytes(), kind)
    }
}

fn bin(s: &str) -> Term {
    Term::from(s)
}

#[tokio::test]
async fn gd_session_keys_match_the_contract() {
    let dc = dc("layout").await;
    let jid = dc.jid("alice", "phone");
    dc.m.insert_for_jid(&jid).await.unwrap();
    let full = format!("alice@{}/phone", dc.global);
    let bare = format!("alice@{}", dc.global);
    for key in [&full, &bare] {
        assert_eq!(dc.q(&[b"TYPE", key.as_bytes()]).await, bin("string"));
        assert_eq!(dc.q(&[b"GET", key.as_bytes()]).await, bin(&dc.local));
        let ttl = dc.ttl(key.as_bytes()).await;
        assert!((118..=120).contains(&ttl), "{key}: TTL {ttl}");
    }
    // The start wrote the node's entries: hosts, nodes hash, endpoints.
    let hosts = dc.members(b"hosts").await;
    assert!(hosts.contains(&dc.local.as_bytes().to_vec()));
    let nodes = nodes_key(dc.local.as_bytes());
    assert_eq!(dc.q(&[b"TYPE", &nodes]).await, bin("hash"));
    let Term::Bin(stamp) = dc.q(&[b"HGET", &nodes, NODE.as_bytes()]).await else {
        panic!("no stamp")
    };
    let stamp: u64 = String::from_utf8(stamp).unwrap().parse().unwrap();
    assert!(stamp.abs_diff(now_secs()) <= 2);
    assert_eq!(
        dc.key("endpoints"),
        format!("{}#{NODE}#{{endpoints}}", dc.local).into_bytes()
    );
    assert_eq!(dc.q(&[b"TYPE", &dc.key("endpoints")]).await, bin("set"));
    assert_eq!(
        dc.members(&dc.key("endpoints")).await,
        vec![b"10.0.0.1#5555".to_vec()]
    );
    assert!((118..=120).contains(&dc.ttl(&dc.key("endpoints")).await));
    assert_eq!(
        dc.m.run(Call::Endpoints(dc.local.as_bytes().to_vec()))
            .await,
        Term::ok(Term::List(vec![Term::tuple(vec![
            bin("10.0.0.1"),
            Term::Int(5555)
        ])]))
    );
    assert_eq!(
        dc.m.run(Call::Endpoints(b"unknown.test".to_vec())).await,
        Term::ok(Term::List(vec![]))
    );
    dc.finish().await;
}

#[tokio::test]
async fn gd_domains_hidden_and_public() {
    let dc = dc("domains").await;
    let public = format!("muc.{}", dc.global);
    let hidden = format!("hidden.{}", dc.global);
    dc.m.insert_for_domain(public.as_bytes(), dc.local.as_bytes(), false)
        .await
        .unwrap();
    dc.m.insert_for_domain(hidden.as_bytes(), dc.local.as_bytes(), true)
        .await
        .unwrap();
    let mut both = vec![hidden.as_bytes().to_vec(), public.as_bytes().to_vec()];
    both.sort();
    assert_eq!(dc.members(&dc.key("domains")).await, both);
    assert_eq!(
        dc.members(&dc.key("public_domains")).await,
        vec![public.as_bytes().to_vec()]
    );
    for d in [&public, &hidden] {
        assert_eq!(dc.q(&[b"GET", d.as_bytes()]).await, bin(&dc.local));
        assert!((118..=120).contains(&dc.ttl(d.as_bytes()).await));
    }
    let Term::Tuple(all) = dc.m.run(Call::AllDomains).await else {
        panic!()
    };
    let Term::List(all) = &all[1] else { panic!() };
    assert!(all.contains(&bin(&public)) && all.contains(&bin(&hidden)));
    let Term::Tuple(public_all) = dc.m.run(Call::PublicDomains).await else {
        panic!()
    };
    let Term::List(public_all) = &public_all[1] else {
        panic!()
    };
    assert!(public_all.contains(&bin(&public)) && !public_all.contains(&bin(&hidden)));
    // A fresh lookup of a domain goes to Redis once, then to the cache.
    assert_eq!(
        dc.m.run(Call::ForDomain(public.as_bytes().to_vec())).await,
        Term::ok(bin(&dc.local))
    );
    dc.m.delete_for_domain(hidden.as_bytes()).await.unwrap();
    assert_eq!(
        dc.members(&dc.key("domains")).await,
        vec![public.as_bytes().to_vec()]
    );
    assert_eq!(
        dc.q(&[b"GET", hidden.as_bytes()]).await,
        Term::atom("undefined")
    );
    assert_eq!(
        dc.m.run(Call::ForDomain(hidden.as_bytes().to_vec())).await,
        Term::atom("error")
    );
    dc.finish().await;
}

#[tokio::test]
async fn gd_refresh_extends_ttl_and_cleans_up() {
    let dc = dc("refresh").await;
    let jid = dc.jid("bob", "pc");
    dc.m.insert_for_jid(&jid).await.unwrap();
    let domain = format!("svc.{}", dc.global);
    dc.m.insert_for_domain(domain.as_bytes(), dc.local.as_bytes(), false)
        .await
        .unwrap();
    let full = jid.to_binary();
    dc.q(&[b"EXPIRE", &full, b"5"]).await;
    dc.q(&[b"EXPIRE", domain.as_bytes(), b"5"]).await;
    // Stale members in every per-node set; an expired and a live node.
    for kind in ["endpoints", "domains", "public_domains"] {
        dc.q(&[b"SADD", &dc.key(kind), b"stale#1"]).await;
    }
    let nodes = nodes_key(dc.local.as_bytes());
    let old = (now_secs() - 121).to_string();
    let fresh = (now_secs() - 10).to_string();
    dc.q(&[b"HSET", &nodes, b"dead@node", old.as_bytes()]).await;
    dc.q(&[b"HSET", &nodes, b"live@node", fresh.as_bytes()])
        .await;

    let report = dc.m.refresh().await.unwrap();
    assert_eq!(report.jids, 2);
    assert_eq!(report.domains, 1);
    assert_eq!(report.expired_nodes, vec![b"dead@node".to_vec()]);
    assert_eq!(report.round_trips, 3);

    assert!(dc.ttl(&full).await >= 118);
    assert!(dc.ttl(domain.as_bytes()).await >= 118);
    assert_eq!(
        dc.members(&dc.key("endpoints")).await,
        vec![b"10.0.0.1#5555".to_vec()]
    );
    assert_eq!(
        dc.members(&dc.key("domains")).await,
        vec![domain.as_bytes().to_vec()]
    );
    assert_eq!(
        dc.members(&dc.key("public_domains")).await,
        vec![domain.as_bytes().to_vec()]
    );
    for kind in ["endpoints", "domains", "public_domains"] {
        assert!((118..=120).contains(&dc.ttl(&dc.key(kind)).await), "{kind}");
    }
    let Term::List(keys) = dc.q(&[b"HKEYS", &nodes]).await else {
        panic!()
    };
    assert!(keys.contains(&bin("live@node")) && keys.contains(&bin(NODE)));
    assert!(!keys.contains(&bin("dead@node")));
    // A key that vanished (Redis restarted) is written again.
    dc.q(&[b"DEL", &full]).await;
    dc.m.refresh().await.unwrap();
    assert_eq!(dc.q(&[b"GET", &full]).await, bin(&dc.local));
    dc.finish().await;
}

#[tokio::test]
async fn gd_refresh_never_overwrites_another_datacenter() {
    let dc = dc("stale").await;
    let jid = dc.jid("carol", "r1");
    dc.m.insert_for_jid(&jid).await.unwrap();
    let full = jid.to_binary();
    dc.q(&[b"SET", &full, b"dc2.test", b"EX", b"100"]).await;
    let report = dc.m.refresh().await.unwrap();
    assert_eq!((report.jids, report.skipped), (1, 1));
    assert_eq!(dc.q(&[b"GET", &full]).await, bin("dc2.test"));
    dc.finish().await;
}

#[tokio::test]
async fn gd_delete_only_removes_our_keys() {
    let dc = dc("delete").await;
    let mine = dc.jid("dave", "a");
    let theirs = dc.jid("erin", "b");
    dc.m.insert_for_jid(&mine).await.unwrap();
    dc.m.insert_for_jid(&theirs).await.unwrap();
    for k in theirs.keys() {
        dc.q(&[b"SET", &k, b"dc2.test"]).await;
    }
    dc.m.delete_for_jid(&mine).await.unwrap();
    dc.m.delete_for_jid(&theirs).await.unwrap();
    for k in mine.keys() {
        assert_eq!(dc.q(&[b"EXISTS", &k]).await, bin("0"));
    }
    for k in theirs.keys() {
        assert_eq!(dc.q(&[b"GET", &k]).await, bin("dc2.test"));
    }
    // Neither is refreshed any more.
    assert_eq!(dc.m.owned_jids(), 0);
    let domain = format!("other.{}", dc.global);
    dc.q(&[b"SET", domain.as_bytes(), b"dc2.test"]).await;
    dc.m.delete_for_domain(domain.as_bytes()).await.unwrap();
    assert_eq!(dc.q(&[b"GET", domain.as_bytes()]).await, bin("dc2.test"));
    dc.finish().await;
}

#[tokio::test]
async fn gd_lookup_full_then_bare_and_metrics() {
    let dc = dc("lookup").await;
    let jid = dc.jid("frank", "tablet");
    dc.q(&[b"SET", &jid.bare().to_binary(), b"dc2.test"]).await;
    let m = &dc.m.metrics;
    assert_eq!(
        dc.m.for_jid(&jid).await.unwrap(),
        Some(b"dc2.test".to_vec())
    );
    assert_eq!((m.fetches(), m.misses()), (1, 2));
    // Both answers are cached now: no more Redis reads.
    assert_eq!(
        dc.m.for_jid(&jid).await.unwrap(),
        Some(b"dc2.test".to_vec())
    );
    assert_eq!((m.fetches(), m.misses()), (2, 2));
    assert_eq!(m.fetches_time.count(), 2);
    let unknown = dc.jid("nobody", "");
    assert_eq!(dc.m.for_jid(&unknown).await.unwrap(), None);
    assert_eq!((m.fetches(), m.misses()), (3, 3));
    let Term::Map(pairs) = m.to_term() else {
        panic!()
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == &Term::atom(k))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        get("mod_global_distrib_mapping_fetches_count"),
        Term::Int(3)
    );
    assert_eq!(
        get("mod_global_distrib_mapping_cache_misses_count"),
        Term::Int(3)
    );
    let hist = get("mod_global_distrib_mapping_fetches_time");
    assert_eq!(hist.get("count"), Some(&Term::Int(3)));
    assert!(hist.get("max").is_some() && hist.get("mean").is_some());
    dc.finish().await;
}

#[tokio::test]
async fn gd_cache_missed_on_and_off() {
    for cache_missed in [true, false] {
        let cache = CacheOptions {
            cache_missed,
            ..CacheOptions::default()
        };
        let dc = dc_with("missed", cache, 120).await;
        let jid = dc.jid("gina", "");
        assert_eq!(dc.m.for_jid(&jid).await.unwrap(), None);
        dc.q(&[b"SET", &jid.to_binary(), b"dc2.test"]).await;
        let second = dc.m.for_jid(&jid).await.unwrap();
        if cache_missed {
            assert_eq!(second, None, "a cached miss hides the new entry");
            assert_eq!(dc.m.metrics.misses(), 1);
        } else {
            assert_eq!(second, Some(b"dc2.test".to_vec()));
            assert_eq!(dc.m.metrics.misses(), 2);
        }
        dc.finish().await;
    }
}

#[tokio::test]
async fn gd_cache_lifetimes() {
    let cache = CacheOptions {
        jid_lifetime_seconds: 1,
        domain_lifetime_seconds: 2,
        ..CacheOptions::default()
    };
    let dc = dc_with("lifetime", cache, 120).await;
    let jid = dc.jid("hank", "");
    let domain = format!("pubsub.{}", dc.global);
    dc.m.insert_for_jid(&jid).await.unwrap();
    dc.m.insert_for_domain(domain.as_bytes(), dc.local.as_bytes(), false)
        .await
        .unwrap();
    dc.q(&[b"SET", &jid.to_binary(), b"dc2.test"]).await;
    dc.q(&[b"SET", domain.as_bytes(), b"dc2.test"]).await;
    let local = Some(dc.local.as_bytes().to_vec());
    let remote = Some(b"dc2.test".to_vec());
    assert_eq!(dc.m.for_jid(&jid).await.unwrap(), local);
    assert_eq!(dc.m.for_domain(domain.as_bytes()).await.unwrap(), local);
    assert_eq!(dc.m.metrics.misses(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        dc.m.for_jid(&jid).await.unwrap(),
        remote,
        "JID entry expired"
    );
    assert_eq!(
        dc.m.for_domain(domain.as_bytes()).await.unwrap(),
        local,
        "domain still cached"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(dc.m.for_domain(domain.as_bytes()).await.unwrap(), remote);
    assert_eq!(dc.m.metrics.misses(), 2);
    // clear_cache drops a global-host JID's entries, or a subdomain's.
    dc.m.cache_jid(&jid, b"dc3.test").await;
    assert_eq!(
        dc.m.for_jid(&jid).await.unwrap(),
        Some(b"dc3.test".to_vec())
    );
    dc.m.clear_cache(&jid).await;
    assert_eq!(dc.m.for_jid(&jid).await.unwrap(), remote);
    dc.m.cache_domain(domain.as_bytes(), b"dc3.test").await;
    dc.m.clear_cache(&Jid::new("", &domain, "")).await;
    assert_eq!(dc.m.for_domain(domain.as_bytes()).await.unwrap(), remote);
    dc.finish().await;
}

#[tokio::test]
async fn gd_cache_capacity_and_zero_lifetime() {
    let cache = CacheOptions {
        max_jids: 10,
        ..CacheOptions::default()
    };
    let dc = dc_with("capacity", cache, 120).await;
    for i in 0..200 {
        dc.m.cache_jid(&dc.jid(&format!("u{i}"), ""), b"dc2.test")
            .await;
    }
    assert!(dc.m.cache().jid_count().await <= 10);
    dc.finish().await;

    let off = CacheOptions {
        jid_lifetime_seconds: 0,
        ..CacheOptions::default()
    };
    let dc = dc_with("nocache", off, 120).await;
    let jid = dc.jid("ivan", "");
    dc.m.cache_jid(&jid, b"dc3.test").await;
    assert_eq!(dc.m.cache().jid_count().await, 0);
    assert_eq!(dc.m.for_jid(&jid).await.unwrap(), None);
    assert_eq!(dc.m.for_jid(&jid).await.unwrap(), None);
    assert_eq!(dc.m.metrics.misses(), 2);
    dc.finish().await;
}

#[tokio::test]
async fn gd_refresh_is_pipelined() {
    let dc = dc("pipeline").await;
    let n = 2 * REFRESH_BATCH + 5;
    let jids: Vec<Jid> = (0..n).map(|i| dc.jid(&format!("p{i}"), "")).collect();
    dc.m.adopt(jids.iter().map(|j| j.to_binary()));
    let report = dc.m.refresh().await.unwrap();
    assert_eq!(report.jids, n);
    assert_eq!(report.round_trips, 2 + 3);
    for j in [&jids[0], &jids[n / 2], &jids[n - 1]] {
        assert_eq!(dc.q(&[b"GET", &j.to_binary()]).await, bin(&dc.local));
        assert!(dc.ttl(&j.to_binary()).await >= 118);
    }
    dc.finish().await;
}

/// Another datacenter on the same global host and Redis.
async fn peer_of(dc: &Dc, name: &str) -> Dc {
    let local = format!("{name}-{}", dc.local);
    let m = Mapping::start(
        config(&dc.global, &local, CacheOptions::default(), 120),
        NODE,
        pool().await,
    )
    .await
    .unwrap();
    Dc {
        m,
        global: dc.global.clone(),
        local,
    }
}

/// The owner record beside `key`: (stamp, host).
async fn owner(dc: &Dc, key: &[u8]) -> Option<(u64, String)> {
    match dc.q(&[b"GET", &owner_key(key)]).await {
        Term::Bin(b) => {
            let text = String::from_utf8(b).unwrap();
            let (stamp, host) = text.split_once(' ').unwrap();
            Some((stamp.parse().unwrap(), host.to_string()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn gd_owner_record_beside_the_entry() {
    let dc = dc("owner").await;
    let jid = dc.jid("olive", "r");
    dc.m.insert_for_jid(&jid).await.unwrap();
    let bare = jid.bare().to_binary();
    let owner_key_bytes = owner_key(&bare);
    assert_eq!(owner_key_bytes, [b"{", &bare[..], b"}#owner"].concat());
    assert_eq!(owner_key(b"a{tag}b"), b"a{tag}b#owner".to_vec());
    let (stamp, host) = owner(&dc, &bare).await.unwrap();
    assert_eq!(host, dc.local);
    assert!(
        stamp.abs_diff(now_secs() * 1_000_000) < 5_000_000,
        "{stamp}"
    );
    assert!((118..=120).contains(&dc.ttl(&owner_key_bytes).await));
    // A second session of the user is newer still.
    dc.m.insert_for_jid(&dc.jid("olive", "s")).await.unwrap();
    assert!(owner(&dc, &bare).await.unwrap().0 > stamp);
    dc.m.delete_for_jid(&jid).await.unwrap();
    dc.finish().await;
}

/// Hole 1 of issue 23, step by step: a refresh that read its sessions
/// before a close writes after it; the closed session stays deleted.
#[tokio::test]
async fn gd_refresh_in_flight_never_resurrects() {
    let dc = dc("inflight").await;
    let jid = dc.jid("paula", "r");
    dc.m.insert_for_jid(&jid).await.unwrap();
    let in_flight = dc.m.owned();
    dc.m.delete_for_jid(&jid).await.unwrap();
    let report = dc.m.store().refresh(&in_flight, now_secs()).await.unwrap();
    assert_eq!((report.jids, report.skipped), (0, 2));
    for k in jid.keys() {
        assert_eq!(dc.q(&[b"EXISTS", &k]).await, bin("0"));
    }
    // The user logs in here again: the new session takes the entry.
    dc.m.insert_for_jid(&jid).await.unwrap();
    dc.m.refresh().await.unwrap();
    assert_eq!(dc.q(&[b"GET", &jid.to_binary()]).await, bin(&dc.local));
    dc.m.delete_for_jid(&jid).await.unwrap();
    dc.finish().await;
}

/// The stale datacenter's refresh and late delete never touch the newer
/// session's entry, in either order.
#[tokio::test]
async fn gd_stale_refresh_and_delete_leave_the_newer_session() {
    let old = dc("move-old").await;
    let new = peer_of(&old, "new").await;
    let bare = old.jid("quinn", "");
    let on_old = old.jid("quinn", "a");
    let on_new = new.jid("quinn", "b");
    old.m.insert_for_jid(&on_old).await.unwrap();
    let in_flight = old.m.owned();
    new.m.insert_for_jid(&on_new).await.unwrap();
    let report = old.m.refresh().await.unwrap();
    assert_eq!(report.skipped, 1);
    old.m.store().refresh(&in_flight, now_secs()).await.unwrap();
    old.m.delete_for_jid(&on_old).await.unwrap();
    old.m.store().refresh(&in_flight, now_secs()).await.unwrap();
    assert_eq!(old.q(&[b"GET", &bare.to_binary()]).await, bin(&new.local));
    assert_eq!(old.q(&[b"EXISTS", &on_old.to_binary()]).await, bin("0"));
    new.m.delete_for_jid(&on_new).await.unwrap();
    new.finish().await;
    old.finish().await;
}

/// Hole 2 of issue 23: the entries vanish mid-move (expiry, an empty
/// Redis); the stale datacenter refreshes first and writes itself; the
/// newer session's refresh takes the entry back.
#[tokio::test]
async fn gd_newer_session_reclaims_an_entry_written_while_empty() {
    let old = dc("vanish-old").await;
    let new = peer_of(&old, "new").await;
    let bare = old.jid("rosa", "").to_binary();
    old.m.insert_for_jid(&old.jid("rosa", "a")).await.unwrap();
    new.m.insert_for_jid(&new.jid("rosa", "b")).await.unwrap();
    old.q(&[b"DEL", &bare, &owner_key(&bare)]).await;
    old.m.refresh().await.unwrap();
    assert_eq!(old.q(&[b"GET", &bare]).await, bin(&old.local));
    new.m.refresh().await.unwrap();
    assert_eq!(old.q(&[b"GET", &bare]).await, bin(&new.local));
    old.m.refresh().await.unwrap();
    assert_eq!(old.q(&[b"GET", &bare]).await, bin(&new.local));
    // A stock datacenter's plain SET (no owner record of its own) is left
    // alone by both.
    old.q(&[b"SET", &bare, b"stock.test"]).await;
    old.m.refresh().await.unwrap();
    new.m.refresh().await.unwrap();
    assert_eq!(old.q(&[b"GET", &bare]).await, bin("stock.test"));
    new.finish().await;
    old.finish().await;
}

#[tokio::test]
async fn gd_calls_parse_and_refuse() {
    let jid = Term::tuple(vec![bin("u"), bin("g.test"), bin("r")]);
    assert_eq!(
        Call::parse("for_jid", std::slice::from_ref(&jid)).unwrap(),
        Call::ForJid(Jid::new("u", "g.test", "r"))
    );
    let record = Term::tuple(vec![
        Term::atom("jid"),
        bin("U"),
        bin("G.test"),
        bin("R"),
        bin("u"),
        bin("g.test"),
        bin("R"),
    ]);
    assert_eq!(
        Call::parse("delete_for_jid", &[record]).unwrap(),
        Call::DeleteForJid(Jid::new("u", "g.test", "R"))
    );
    assert_eq!(
        Call::parse("insert_for_domain", &[bin("d"), Term::atom("true")]).unwrap(),
        Call::InsertForDomain(b"d".to_vec(), None, true)
    );
    for (op, args) in [
        ("for_jid", vec![bin("not a tuple")]),
        ("for_domain", vec![Term::Int(1)]),
        ("insert_for_domain", vec![bin("d"), bin("h"), bin("x")]),
        ("nonsense", vec![]),
    ] {
        assert_eq!(Call::parse(op, &args).unwrap_err().kind(), "bad_request");
    }
    assert_eq!(
        Jid::new("u", "s", "r").keys(),
        vec![b"u@s/r".to_vec(), b"u@s".to_vec()]
    );
    assert_eq!(Jid::new("", "s", "").keys(), vec![b"s".to_vec()]);
    assert_eq!(
        Jid::new("", "s", "r").keys(),
        vec![b"s/r".to_vec(), b"s".to_vec()]
    );
}
