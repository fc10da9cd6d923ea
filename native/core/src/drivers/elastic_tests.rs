use super::*;

fn read(conn: &Term) -> Result<ElasticConfig> {
    ElasticConfig::read(&Node::new(
        "outgoing_pools.elastic.default.connection",
        conn,
    ))
}

fn kv(k: &str, v: Term) -> (Term, Term) {
    (Term::atom(k), v)
}

#[test]
fn defaults_and_options() {
    let c = read(&Term::Map(vec![])).unwrap();
    assert_eq!(c.base.as_str(), "http://localhost:9200/");
    assert!(c.username.is_none());
    let c = read(&Term::Map(vec![
        kv("host", Term::from("::1")),
        kv("port", Term::Int(9201)),
        kv("tls", Term::Map(vec![])),
        kv("username", Term::from("u")),
        kv("password", Term::from("hunter2")),
    ]))
    .unwrap();
    assert_eq!(c.base.as_str(), "https://[::1]:9201/");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn bad_options_name_their_path() {
    let err = |conn| read(&Term::Map(conn)).unwrap_err().to_string();
    assert_eq!(
        err(vec![kv("port", Term::Int(0))]),
        "outgoing_pools.elastic.default.connection.port: expected an integer between 1 and 65535, got 0"
    );
    assert!(err(vec![kv("host", Term::from("http://x"))])
        .starts_with("outgoing_pools.elastic.default.connection.host: expected a host name"));
    let e = err(vec![kv("password", Term::from("hunter2"))]);
    assert!(e.contains("connection.username: required"), "{e}");
    assert!(!e.contains("hunter2"));
    assert!(err(vec![kv("pool", Term::Int(1))]).contains("connection.pool: unknown option"));
}

#[test]
fn version_picks_the_paths() {
    let root = |v: &str| serde_json::from_str::<Value>(v).unwrap();
    let typed = |v: &str| ServerInfo::from_root(&root(v)).map(|s| s.typed);
    assert_eq!(typed(r#"{"version":{"number":"6.8.23"}}"#), Some(true));
    assert_eq!(typed(r#"{"version":{"number":"5.6.0"}}"#), Some(true));
    assert_eq!(typed(r#"{"version":{"number":"7.17.1"}}"#), Some(false));
    assert_eq!(typed(r#"{"version":{"number":"8.15.0"}}"#), Some(false));
    assert_eq!(
        typed(r#"{"version":{"number":"1.3.0","distribution":"opensearch"}}"#),
        Some(false)
    );
    assert_eq!(typed(r#"{"tagline":"no version"}"#), None);
    assert_eq!(typed(r#"{"version":{"number":"x"}}"#), None);
}

#[test]
fn terms_and_json_round_trip() {
    let doc = Term::Map(vec![
        (Term::from("s"), Term::from("text")),
        (Term::atom("n"), Term::Int(-3)),
        (Term::from("f"), Term::Float(1.5)),
        (Term::from("b"), Term::atom("true")),
        (Term::from("z"), Term::atom("null")),
        (
            Term::from("l"),
            Term::List(vec![Term::Int(1), Term::atom("a")]),
        ),
        (
            Term::from("o"),
            Term::tuple(vec![Term::List(vec![Term::tuple(vec![
                Term::from("k"),
                Term::Int(1),
            ])])]),
        ),
    ]);
    let json = to_json(&doc, "document", 0).unwrap();
    assert_eq!(
        json.to_string(),
        r#"{"b":true,"f":1.5,"l":[1,"a"],"n":-3,"o":{"k":1},"s":"text","z":null}"#
    );
    let back = from_json(json);
    assert_eq!(
        back.get("s").and_then(Term::as_text).as_deref(),
        Some("text")
    );
    assert!(matches!(back.get("l"), Some(Term::List(l)) if l.len() == 2));
    let bad = |t: Term| to_json(&t, "query", 0).unwrap_err().to_string();
    assert!(bad(Term::tuple(vec![Term::Int(1), Term::Int(2)])).contains("tuple"));
    assert!(bad(Term::Map(vec![(Term::Int(1), Term::Int(2))])).contains("key in the query"));
    let mut deep = Term::Int(0);
    for _ in 0..600 {
        deep = Term::List(vec![deep]);
    }
    assert!(bad(deep).contains("deeper than 512"));
}
