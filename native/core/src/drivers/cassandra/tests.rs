use scylla::frame::response::result::{CollectionType, ColumnType, NativeType};
use scylla::value::{CqlDate, CqlTimestamp, CqlValue};

use super::request::{self, Opts};
use super::values::{decode, encode};
use super::*;

fn conn(pairs: Vec<(&str, Term)>) -> Term {
    Term::map_of(pairs)
}

fn read(term: &Term) -> Result<CassandraConfig> {
    CassandraConfig::read(&Node::new(
        "outgoing_pools.cassandra.default.connection",
        term,
    ))
}

fn config_error(term: &Term) -> String {
    match read(term) {
        Err(Error::Config(msg)) => msg,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn defaults_are_mongooseims() {
    let c = read(&conn(vec![])).expect("defaults");
    assert_eq!(
        c.servers,
        vec![Server {
            host: "localhost".into(),
            port: 9042
        }]
    );
    assert_eq!(c.keyspace, "mongooseim");
    assert!(c.auth.is_none() && c.tls.is_none());
}

#[test]
fn servers_keyspace_and_auth_are_read() {
    let plain = conn(vec![
        ("username", Term::from("mim")),
        ("password", Term::from("pw")),
    ]);
    let c = read(&conn(vec![
        (
            "servers",
            Term::List(vec![
                conn(vec![("host", Term::from("10.0.0.1"))]),
                Term::tuple(vec![Term::charlist("10.0.0.2"), Term::Int(9142)]),
            ]),
        ),
        ("keyspace", Term::atom("big_mongooseim")),
        ("auth", conn(vec![("plain", plain)])),
    ]))
    .expect("valid");
    assert_eq!(c.servers[0].port, 9042);
    assert_eq!(
        (c.servers[1].host.as_str(), c.servers[1].port),
        ("10.0.0.2", 9142)
    );
    assert_eq!(c.keyspace, "big_mongooseim");
    let (user, password) = c.auth.expect("auth");
    assert_eq!((user.as_str(), password.expose()), ("mim", "pw"));
    // cqerl's form, from seed 000's configs.
    let legacy = Term::tuple(vec![
        Term::atom("cqerl_auth_plain_handler"),
        Term::List(vec![Term::tuple(vec![Term::from("u"), Term::from("p")])]),
    ]);
    let c = read(&conn(vec![("auth", legacy)])).expect("legacy auth");
    assert_eq!(c.auth.map(|(u, _)| u), Some("u".to_string()));
}

#[test]
fn bad_options_name_their_path_and_hide_secrets() {
    let msg = config_error(&conn(vec![("keyspace", Term::from("a-b"))]));
    assert!(
        msg.starts_with("outgoing_pools.cassandra.default.connection.keyspace: expected"),
        "{msg}"
    );
    let msg = config_error(&conn(vec![("servers", Term::List(vec![]))]));
    assert!(msg.contains("connection.servers"), "{msg}");
    let plain = conn(vec![("username", Term::from("u"))]);
    let msg = config_error(&conn(vec![("auth", conn(vec![("plain", plain)]))]));
    assert!(
        msg.contains("connection.auth.plain.password: required"),
        "{msg}"
    );
    let plain = conn(vec![
        ("username", Term::from("u")),
        ("password", Term::Int(7)),
    ]);
    let msg = config_error(&conn(vec![("auth", conn(vec![("plain", plain)]))]));
    assert!(
        msg.contains("auth.plain.password") && !msg.contains('7'),
        "{msg}"
    );
    let msg = config_error(&conn(vec![("password", Term::from("hunter2"))]));
    assert!(msg.contains("connection.password: unknown option") && !msg.contains("hunter2"));
    let msg = config_error(&conn(vec![
        ("tls", conn(vec![])),
        ("ssl", Term::List(vec![])),
    ]));
    assert!(msg.contains("set tls or ssl, not both"), "{msg}");
}

#[test]
fn tls_sends_no_alpn() {
    let c = read(&conn(vec![("tls", conn(vec![]))])).expect("tls");
    assert!(c.tls.expect("tls").alpn_protocols.is_empty());
}

fn native(t: NativeType) -> ColumnType<'static> {
    ColumnType::Native(t)
}

fn bytes(term: Term, ty: &ColumnType) -> Option<Vec<u8>> {
    encode(&term, ty).expect("encodes")
}

#[test]
fn values_encode_as_cqerl_encodes_them() {
    assert_eq!(bytes(Term::atom("null"), &native(NativeType::Int)), None);
    assert_eq!(
        bytes(Term::Int(-2), &native(NativeType::Int)),
        Some(vec![0xFF, 0xFF, 0xFF, 0xFE])
    );
    assert_eq!(
        bytes(Term::Float(3.9), &native(NativeType::BigInt)),
        Some(3i64.to_be_bytes().to_vec())
    );
    assert_eq!(
        bytes(Term::charlist("é"), &native(NativeType::Text)),
        Some("é".as_bytes().to_vec())
    );
    assert_eq!(
        bytes(Term::atom("true"), &native(NativeType::Boolean)),
        Some(vec![1])
    );
    assert_eq!(
        bytes(Term::Int(128), &native(NativeType::Varint)),
        Some(vec![0, 128])
    );
    assert_eq!(
        bytes(Term::Int(-129), &native(NativeType::Varint)),
        Some(vec![0xFF, 0x7F])
    );
    let uuid = "01020304-0506-0708-090a-0b0c0d0e0f10";
    assert_eq!(
        bytes(Term::from(uuid), &native(NativeType::Uuid)),
        Some((1..=16).collect::<Vec<u8>>())
    );
    let date = Term::tuple(vec![Term::Int(1970), Term::Int(1), Term::Int(2)]);
    assert_eq!(
        bytes(date, &native(NativeType::Date)),
        Some(((1u32 << 31) + 1).to_be_bytes().to_vec())
    );
    let inet = Term::tuple(vec![
        Term::Int(127),
        Term::Int(0),
        Term::Int(0),
        Term::Int(1),
    ]);
    assert_eq!(
        bytes(inet, &native(NativeType::Inet)),
        Some(vec![127, 0, 0, 1])
    );
    let set = ColumnType::Collection {
        frozen: false,
        typ: CollectionType::Set(Box::new(native(NativeType::Text))),
    };
    assert_eq!(
        bytes(Term::List(vec![Term::from("a")]), &set),
        Some(vec![0, 0, 0, 1, 0, 0, 0, 1, b'a'])
    );
    let map = ColumnType::Collection {
        frozen: false,
        typ: CollectionType::Map(
            Box::new(native(NativeType::Text)),
            Box::new(native(NativeType::Int)),
        ),
    };
    let pairs = Term::List(vec![Term::tuple(vec![Term::from("k"), Term::atom("null")])]);
    assert_eq!(
        bytes(pairs, &map),
        Some(vec![0, 0, 0, 1, 0, 0, 0, 1, b'k', 0xFF, 0xFF, 0xFF, 0xFF])
    );
}

#[test]
fn wrong_values_are_refused_with_what_was_expected() {
    let refused = |t: Term, ty: ColumnType| encode(&t, &ty).expect_err("refused");
    assert!(refused(Term::Int(1 << 40), native(NativeType::Int)).contains("32-bit"));
    assert!(refused(Term::Int(1), native(NativeType::Blob)).contains("a binary"));
    assert!(refused(Term::bin(vec![1, 2]), native(NativeType::Uuid)).contains("16-byte"));
    assert!(refused(Term::from("é"), native(NativeType::Ascii)).contains("ASCII"));
    assert!(refused(Term::bin(vec![0xFF]), native(NativeType::Text)).contains("UTF-8"));
    let date = Term::tuple(vec![Term::Int(2023), Term::Int(2), Term::Int(29)]);
    assert!(refused(date, native(NativeType::Date)).contains("date"));
}

#[test]
fn values_decode_as_cqerl_decodes_them() {
    assert_eq!(decode(None).as_atom(), Some("null"));
    assert!(matches!(decode(Some(CqlValue::Text("t".into()))), Term::Bin(b) if b == b"t"));
    assert!(matches!(
        decode(Some(CqlValue::Timestamp(CqlTimestamp(5)))),
        Term::Int(5)
    ));
    let Term::Tuple(d) = decode(Some(CqlValue::Date(CqlDate((1 << 31) + 59)))) else {
        panic!("a date is a tuple")
    };
    assert!(matches!(
        d.as_slice(),
        [Term::Int(1970), Term::Int(3), Term::Int(1)]
    ));
    let Term::Map(m) = decode(Some(CqlValue::Map(vec![(
        CqlValue::Int(1),
        CqlValue::Boolean(true),
    )]))) else {
        panic!("a map is a map")
    };
    assert!(matches!(m.as_slice(), [(Term::Int(1), Term::Atom(t))] if t == "true"));
}

#[test]
fn requests_are_checked_on_the_callers_thread() {
    let params = Term::map_of(vec![("user_jid", Term::from("a@b"))]);
    let ok = Term::tuple(vec![
        Term::atom("read"),
        Term::from("SELECT 1"),
        params,
        Term::Map(vec![]),
    ]);
    let Ok(Request::Read { opts, params, .. }) = request::parse(&ok) else {
        panic!("a read")
    };
    assert_eq!(opts, Opts::default());
    assert_eq!(params[0].0, "user_jid");
    let bad = |t: Term| match request::parse(&t) {
        Err(Error::BadRequest(m)) => m,
        _ => panic!("refused"),
    };
    let opts = Term::map_of(vec![("batch_size", Term::Int(0))]);
    let write = Term::tuple(vec![
        Term::atom("write"),
        Term::from("INSERT"),
        Term::List(vec![]),
        opts,
    ]);
    assert!(bad(write).contains("batch_size"));
    let rows = Term::List(vec![Term::Int(1)]);
    let write = Term::tuple(vec![
        Term::atom("write"),
        Term::from("INSERT"),
        rows,
        Term::Map(vec![]),
    ]);
    assert!(bad(write).starts_with("row 1:"));
    let empty = Term::tuple(vec![
        Term::atom("read"),
        Term::from(" "),
        Term::List(vec![]),
        Term::Map(vec![]),
    ]);
    assert!(bad(empty).contains("CQL text"));
}
