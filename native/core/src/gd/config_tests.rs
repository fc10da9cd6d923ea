//! Tests of `gd::config`: defaults, every section, clear errors.

use super::*;

fn a(k: &str) -> Term {
    Term::atom(k)
}

fn map(pairs: Vec<(&str, Term)>) -> Term {
    Term::Map(pairs.into_iter().map(|(k, v)| (a(k), v)).collect())
}

fn base(extra: Vec<(&str, Term)>) -> Term {
    let mut pairs = vec![
        ("global_host", Term::from("global.test")),
        ("local_host", Term::from("dc1.test")),
    ];
    pairs.extend(extra);
    map(pairs)
}

fn served() -> Vec<String> {
    vec!["global.test".into(), "dc1.test".into()]
}

fn err(opts: Term) -> String {
    GdConfig::read(&opts, &served()).unwrap_err().to_string()
}

#[test]
fn defaults_follow_seed_004() {
    let c = GdConfig::read(&base(vec![]), &served()).unwrap();
    assert_eq!(c.message_ttl, 4);
    assert_eq!(c.hosts_refresh_interval, 3000);
    assert_eq!(c.redis.pool, "global_distrib");
    assert_eq!(c.redis.expire_after, 120);
    assert_eq!(c.redis.refresh_after, 60);
    assert_eq!(c.cache, CacheOptions::default());
    assert!(c.cache.cache_missed);
    assert_eq!(c.cache.jid_lifetime_seconds, 5);
    assert_eq!(c.cache.domain_lifetime_seconds, 600);
    assert_eq!(c.cache.max_jids, 10_000);
    assert_eq!(c.connections.connections_per_endpoint, 1);
    assert_eq!(c.connections.endpoint_refresh_interval, 60);
    assert_eq!(c.connections.endpoint_refresh_interval_when_empty, 3);
    assert_eq!(c.connections.disabled_gc_interval, 60);
    assert_eq!(
        c.connections.endpoints,
        vec![Endpoint {
            host: "dc1.test".into(),
            port: 5555
        }]
    );
    assert_eq!(c.connections.advertised_endpoints, c.connections.endpoints);
    assert!(c.connections.tls.is_none());
    assert!(c.bounce.enabled);
    assert_eq!(c.bounce.resend_after_ms, 200);
    assert_eq!(c.bounce.max_retries, 4);
}

#[test]
fn every_section_is_read() {
    let opts = base(vec![
        ("message_ttl", Term::Int(5)),
        (
            "connections",
            map(vec![
                (
                    "endpoints",
                    Term::List(vec![
                        Term::tuple(vec![Term::from("127.0.0.1"), Term::Int(5556)]),
                        map(vec![("host", Term::from("::1")), ("port", Term::Int(5557))]),
                    ]),
                ),
                (
                    "advertised_endpoints",
                    Term::List(vec![Term::tuple(vec![
                        Term::tuple(vec![
                            Term::Int(10),
                            Term::Int(0),
                            Term::Int(0),
                            Term::Int(1),
                        ]),
                        Term::Int(6000),
                    ])]),
                ),
                ("connections_per_endpoint", Term::Int(30)),
                (
                    "tls",
                    map(vec![
                        ("certfile", Term::from("priv/dc1.pem")),
                        ("cacertfile", Term::from("priv/ca.pem")),
                    ]),
                ),
            ]),
        ),
        (
            "redis",
            map(vec![
                ("pool", a("gd")),
                ("expire_after", Term::Int(10)),
                ("refresh_after", Term::Int(0)),
            ]),
        ),
        (
            "cache",
            map(vec![
                ("cache_missed", a("false")),
                ("max_jids", Term::Int(0)),
            ]),
        ),
        ("bounce", map(vec![("enabled", a("false"))])),
    ]);
    let c = GdConfig::read(&opts, &served()).unwrap();
    assert_eq!(c.message_ttl, 5);
    assert_eq!(c.connections.endpoints.len(), 2);
    assert_eq!(c.connections.endpoints[1].to_redis(), b"::1#5557".to_vec());
    assert_eq!(
        c.connections.advertised_endpoints[0].to_redis(),
        b"10.0.0.1#6000".to_vec()
    );
    assert_eq!(c.connections.connections_per_endpoint, 30);
    assert_eq!(c.connections.tls.unwrap().ciphers, "TLSv1.2:TLSv1.3");
    assert_eq!(c.redis.pool, "gd");
    assert_eq!(c.redis.expire_after, 10);
    assert_eq!(c.redis.refresh_after, 0);
    assert!(!c.cache.cache_missed);
    assert_eq!(c.cache.max_jids, 0);
    assert!(!c.bounce.enabled);
}

#[test]
fn errors_name_the_path() {
    assert_eq!(
        err(base(vec![("bogus", Term::Int(1))])),
        "modules.mod_global_distrib.bogus: unknown option; expected one of global_host, local_host, \
         message_ttl, hosts_refresh_interval, connections, redis, cache, bounce"
    );
    assert_eq!(
        err(base(vec![(
            "cache",
            map(vec![("max_jids", Term::Int(-1))])
        )])),
        "modules.mod_global_distrib.cache.max_jids: expected a non-negative integer, got -1"
    );
    assert_eq!(
        err(base(vec![(
            "redis",
            map(vec![("expire_after", Term::Int(0))])
        )])),
        "modules.mod_global_distrib.redis.expire_after: expected a positive integer, got 0"
    );
    assert_eq!(
        err(base(vec![(
            "cache",
            map(vec![("cache_missed", Term::from("yes"))])
        )])),
        "modules.mod_global_distrib.cache.cache_missed: expected a boolean, got <<\"yes\">>"
    );
    assert!(
        err(base(vec![("redis", map(vec![("typo", Term::Int(0))]))]))
            .starts_with("modules.mod_global_distrib.redis.typo: unknown option")
    );
    assert_eq!(
        err(base(vec![(
            "connections",
            map(vec![("endpoints", Term::List(vec![map(vec![("host", Term::from("h"))])]))])
        )])),
        "modules.mod_global_distrib.connections.endpoints[0].port: required, expected an integer between 1 and 65535"
    );
    assert_eq!(
        err(map(vec![("local_host", Term::from("dc1.test"))])),
        "modules.mod_global_distrib.global_host: required, expected a string"
    );
    assert!(err(base(vec![("message_ttl", Term::from("4"))])).contains("message_ttl: expected"));
}

#[test]
fn hosts_must_be_served() {
    let e = GdConfig::read(&base(vec![]), &["global.test".to_string()]).unwrap_err();
    assert_eq!(e.kind(), "check_host_failed");
    assert!(
        e.to_string()
            .contains("local_host: dc1.test is not a member"),
        "{e}"
    );
    let e = GdConfig::read(&base(vec![]), &[]).unwrap_err();
    assert_eq!(e.kind(), "check_host_failed");
    assert!(e.to_string().contains("global_host"), "{e}");
}

#[test]
fn the_erlang_side_gets_the_validated_options_with_defaults() {
    let c = GdConfig::read(&base(vec![]), &served()).unwrap();
    let Term::Map(pairs) = c.to_term() else {
        panic!("not a map")
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| *key == a(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("local_host"), Some(Term::from("dc1.test")));
    assert_eq!(get("message_ttl"), Some(Term::Int(4)));
    let endpoint = Term::tuple(vec![Term::charlist("dc1.test"), Term::Int(5555)]);
    assert_eq!(get("endpoints"), Some(Term::List(vec![endpoint])));
    assert_eq!(get("tls"), Some(a("undefined")));
    let bounce = map(vec![
        ("enabled", a("true")),
        ("resend_after_ms", Term::Int(200)),
        ("max_retries", Term::Int(4)),
    ]);
    assert_eq!(get("bounce"), Some(bounce));
    // 0 connections per endpoint means one, as in MongooseIM.
    let zero = base(vec![(
        "connections",
        map(vec![("connections_per_endpoint", Term::Int(0))]),
    )]);
    let c = GdConfig::read(&zero, &served()).unwrap();
    assert_eq!(c.connections.connections_per_endpoint, 1);
    let many = base(vec![(
        "connections",
        map(vec![("connections_per_endpoint", Term::Int(1001))]),
    )]);
    assert!(err(many).contains("connections.connections_per_endpoint"));
}

#[test]
fn socket_addresses_are_ips_in_any_erlang_form() {
    let addr = |t: Term| socket_addr(&Node::new("endpoints[1]", &t));
    let ip4 = Term::tuple(vec![
        Term::Int(127),
        Term::Int(0),
        Term::Int(0),
        Term::Int(1),
    ]);
    for (host, port) in [
        (ip4, 0),
        (Term::from("::1"), 5555),
        (Term::charlist("10.0.0.2"), 65535),
    ] {
        let parsed = addr(Term::tuple(vec![host.clone(), Term::Int(port)]));
        assert_eq!(parsed.map(|a| a.port()), Ok(port as u16), "{host:?}");
    }
    for bad in [
        Term::tuple(vec![Term::from("example.com"), Term::Int(1)]),
        Term::tuple(vec![Term::from("127.0.0.1"), Term::Int(70000)]),
        Term::tuple(vec![Term::tuple(vec![Term::Int(256)]), Term::Int(1)]),
        Term::from("127.0.0.1"),
    ] {
        let e = addr(bad.clone()).unwrap_err().to_string();
        assert!(e.starts_with("endpoints[1]"), "{bad:?}: {e}");
    }
}
