//! The riak driver without a Riak: configuration, request encoding, answer
//! decoding, and whole exchanges with a scripted PBC peer on loopback.
//! (riak_SUITE runs every call against test/servers/riak_server.py.)

use std::time::Duration;

use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::pb::*;
use super::request::Expect;
use super::*;

fn config(pairs: Vec<(&str, Term)>) -> Result<RiakConfig> {
    let term = Term::map_of(pairs);
    RiakConfig::read(&Node::new("outgoing_pools.riak.default.connection", &term))
}

fn err(r: Result<RiakConfig>) -> String {
    match r {
        Err(Error::Config(msg)) => msg,
        Err(other) => panic!("not a config error: {other:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn config_defaults_and_errors() {
    let c = config(vec![]).unwrap();
    assert_eq!((c.address.as_str(), c.port), ("127.0.0.1", 8087));
    assert!(c.credentials.is_none() && c.tls.is_none());
    assert_eq!(
        err(config(vec![("port", Term::Int(0))])),
        "outgoing_pools.riak.default.connection.port: expected an integer between 1 and 65535, got 0"
    );
    assert!(err(config(vec![("host", Term::from("x"))]))
        .starts_with("outgoing_pools.riak.default.connection.host: unknown option"));
    let tls_alone = err(config(vec![("tls", Term::map_of(vec![]))]));
    assert!(tls_alone.contains("connection.tls: Riak uses TLS only to authenticate"));
    let creds = Term::map_of(vec![
        ("user", Term::from("u")),
        ("password", Term::from("canary-pw")),
    ]);
    let no_ca = err(config(vec![("credentials", creds.clone())]));
    assert!(no_ca.starts_with("outgoing_pools.riak.default.connection.tls.cacertfile: required"));
    assert!(!no_ca.contains("canary"));
    let no_user = err(config(vec![(
        "credentials",
        Term::map_of(vec![("password", Term::from("canary-pw"))]),
    )]));
    assert!(
        no_user.starts_with("outgoing_pools.riak.default.connection.credentials.user: required")
    );
    assert!(!no_user.contains("canary"));
}

#[test]
fn legacy_tuples_are_read() {
    let legacy = Term::List(vec![
        Term::tuple(vec![Term::atom("address"), Term::from("localhost")]),
        Term::tuple(vec![Term::atom("port"), Term::Int(8098)]),
        Term::tuple(vec![
            Term::atom("credentials"),
            Term::from("u"),
            Term::from("canary-pw"),
        ]),
    ]);
    let e = RiakConfig::read(&Node::new("p", &legacy))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(e, "p.tls.cacertfile: required, expected the CA certificate file: credentials force TLS, as Riak requires");
    let plain = Term::List(vec![Term::tuple(vec![Term::atom("port"), Term::Int(8098)])]);
    assert_eq!(
        RiakConfig::read(&Node::new("p", &plain)).unwrap().port,
        8098
    );
}

fn parse(t: Term) -> Result<RiakRequest> {
    RiakRequest::parse(&t)
}

fn bin(s: &str) -> Term {
    Term::bin(s.as_bytes())
}

fn undef() -> Term {
    Term::atom("undefined")
}

fn opt(k: &str, v: Term) -> Term {
    Term::tuple(vec![Term::atom(k), v])
}

#[test]
fn requests_are_encoded_as_riak_pb_says() {
    let content = Term::tuple(vec![
        Term::List(vec![
            opt("content_type", bin("text/plain")),
            opt(
                "indexes",
                Term::List(vec![Term::tuple(vec![bin("ts_int"), bin("5")])]),
            ),
        ]),
        bin("hello"),
    ]);
    let put = parse(Term::tuple(vec![
        Term::atom("put"),
        bin("t"),
        bin("b"),
        bin("k"),
        undef(),
        content,
        Term::List(vec![
            opt("return_body", Term::from(true)),
            opt("w", Term::Int(2)),
        ]),
    ]))
    .unwrap();
    assert_eq!(put.code, PUT_REQ);
    let m = RpbPutReq::decode(put.body.as_slice()).unwrap();
    assert_eq!(m.r#type.as_deref(), Some(&b"t"[..]));
    assert_eq!((m.key.as_deref(), m.vclock), (Some(&b"k"[..]), None));
    assert_eq!(m.content.value, b"hello");
    assert_eq!(m.content.indexes[0].key, b"ts_int");
    assert_eq!((m.return_body, m.w), (Some(true), Some(2)));

    let range = parse(Term::tuple(vec![
        Term::atom("index"),
        undef(),
        bin("b"),
        bin("ts_int"),
        Term::tuple(vec![Term::atom("range"), bin("1"), bin("9")]),
        Term::List(vec![opt("return_terms", Term::from(true))]),
    ]))
    .unwrap();
    let m = RpbIndexReq::decode(range.body.as_slice()).unwrap();
    assert_eq!(
        (m.qtype, m.range_min.as_deref()),
        (INDEX_RANGE, Some(&b"1"[..]))
    );
    // proto2's required fields go out even when zero: eq is qtype 0.
    let eq = parse(Term::tuple(vec![
        Term::atom("index"),
        undef(),
        bin("b"),
        bin("i_bin"),
        Term::tuple(vec![Term::atom("eq"), bin("x")]),
        Term::List(vec![]),
    ]))
    .unwrap();
    assert!(eq.body.windows(2).any(|w| w == [3 << 3, INDEX_EQ as u8]));

    let update = parse(Term::tuple(vec![
        Term::atom("dt_update"),
        bin("maps"),
        bin("b"),
        bin("k"),
        undef(),
        Term::atom("map"),
        Term::tuple(vec![
            Term::atom("update"),
            Term::List(vec![
                Term::tuple(vec![
                    Term::atom("update"),
                    Term::tuple(vec![bin("n"), Term::atom("register")]),
                    Term::tuple(vec![Term::atom("assign"), bin("v")]),
                ]),
                Term::tuple(vec![
                    Term::atom("remove"),
                    Term::tuple(vec![bin("old"), Term::atom("flag")]),
                ]),
            ]),
        ]),
        Term::List(vec![]),
    ]))
    .unwrap();
    let m = DtUpdateReq::decode(update.body.as_slice()).unwrap();
    let op = m.op.map_op.unwrap();
    assert_eq!(op.updates[0].register_op.as_deref(), Some(&b"v"[..]));
    assert_eq!(op.removes[0].r#type, FIELD_FLAG);
}

#[test]
fn bad_requests_are_refused() {
    let refused = |t: Term| match parse(t) {
        Err(Error::BadRequest(m)) => m,
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("accepted"),
    };
    assert!(refused(Term::atom("get")).starts_with("expected a request tuple"));
    let get =
        |b: Term, opts: Term| Term::tuple(vec![Term::atom("get"), undef(), b, bin("k"), opts]);
    assert_eq!(
        refused(get(bin(""), Term::List(vec![]))),
        "the bucket must not be empty"
    );
    assert_eq!(
        refused(get(bin("b"), Term::List(vec![opt("nope", Term::Int(1))]))),
        "unknown option nope"
    );
    assert!(refused(get(bin("b"), Term::List(vec![opt("r", bin("x"))])))
        .starts_with("option r: unexpected value"));
    assert!(refused(Term::tuple(vec![
        Term::atom("dt_update"),
        bin("t"),
        bin("b"),
        undef(),
        undef(),
        Term::atom("flag"),
        Term::atom("enable"),
        Term::List(vec![]),
    ]))
    .starts_with("the data type to update must be"));
}

#[test]
fn answers_keep_riakc_shapes() {
    let show = |t: Result<Term>| t.unwrap().describe();
    assert_eq!(show(answer(Expect::Get, &[])), "{error,notfound}");
    let two = RpbGetResp {
        content: vec![
            RpbContent {
                value: b"a".to_vec(),
                ..Default::default()
            },
            RpbContent {
                value: b"b".to_vec(),
                deleted: Some(false),
                ..Default::default()
            },
        ],
        vclock: Some(b"vc".to_vec()),
        unchanged: None,
    };
    assert_eq!(
        show(answer(Expect::Get, &two.encode_to_vec())),
        "{ok,<<\"...\">>,[{[],<<\"...\">>},{[{deleted,false}],<<\"...\">>}]}"
    );
    let e = |code| {
        RpbErrorResp {
            errmsg: b"boom".to_vec(),
            errcode: code,
        }
        .encode_to_vec()
    };
    assert_eq!(show(server_error(&e(0))), "{error,<<\"...\">>}");
    assert_eq!(show(server_error(&e(5))), "{error,{5,<<\"...\">>}}");
    let nf = DtFetchResp {
        context: None,
        r#type: DT_MAP,
        value: None,
    };
    assert_eq!(
        show(answer(Expect::DtFetch, &nf.encode_to_vec())),
        "{error,{notfound,map}}"
    );
}

/// For each request the peer reads, the frames it answers with (`None`:
/// it stays silent).
type Script = Vec<Option<Vec<Frame>>>;

/// A scripted peer on loopback.
async fn peer(script: Script) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        for step in script {
            if read_frame(&mut s).await.is_err() {
                return;
            }
            match step {
                Some(frames) => {
                    for (code, body) in frames {
                        write_frame(&mut s, code, &body).await.unwrap();
                    }
                }
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
        }
        s.shutdown().await.unwrap();
    });
    port
}

fn driver(port: u16, call_timeout_ms: u64) -> RiakDriver {
    let c = config(vec![("port", Term::Int(i64::from(port)))]).unwrap();
    RiakDriver::new(c, call_timeout_ms)
}

fn keys(ks: &[&str], done: Option<bool>) -> (u8, Vec<u8>) {
    let m = RpbListKeysResp {
        keys: ks.iter().map(|k| k.as_bytes().to_vec()).collect(),
        done,
    };
    (LIST_KEYS_RESP, m.encode_to_vec())
}

#[tokio::test]
async fn streamed_keys_are_gathered_then_a_stall_breaks_the_connection() {
    let list = vec![
        keys(&["a", "b"], None),
        keys(&["c"], None),
        keys(&[], Some(true)),
    ];
    let port = peer(vec![Some(list), None]).await;
    let d = driver(port, 200);
    let conn = d.connect(0).await.unwrap();
    let req = |d: &RiakDriver| {
        d.parse(Term::tuple(vec![
            Term::atom("list_keys"),
            undef(),
            bin("b"),
            Term::List(vec![]),
        ]))
        .unwrap()
    };
    let out = d.execute(conn.clone(), req(&d)).await;
    assert!(out.broken.is_none());
    assert_eq!(
        out.answer.describe(),
        "{ok,[<<\"...\">>,<<\"...\">>,<<\"...\">>]}"
    );
    let t0 = std::time::Instant::now();
    let out = d.execute(conn.clone(), req(&d)).await;
    assert!(matches!(out.broken, Some(Error::Timeout(_))));
    assert!(t0.elapsed() >= Duration::from_millis(700) && t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_connection_the_server_closes_while_idle_is_noticed() {
    let port = peer(vec![Some(vec![(DEL_RESP, vec![])])]).await;
    let d = driver(port, 1000);
    let conn = d.connect(0).await.unwrap();
    let del = d
        .parse(Term::tuple(vec![
            Term::atom("delete"),
            undef(),
            bin("b"),
            bin("k"),
            Term::List(vec![]),
        ]))
        .unwrap();
    assert_eq!(d.execute(conn.clone(), del).await.answer.describe(), "ok");
    // The peer's script is over: it closes, and the reader task notices.
    tokio::time::timeout(Duration::from_secs(2), d.closed(&conn))
        .await
        .unwrap();
    let refused = driver(1, 1000).connect(0).await.err().unwrap().to_string();
    assert!(refused.starts_with("riak 127.0.0.1:1: "), "{refused}");
}
