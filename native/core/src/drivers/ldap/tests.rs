use super::request::filter_text;
use super::*;

fn s(text: &str) -> Term {
    answer::charlist(text.as_bytes())
}

fn t(items: Vec<Term>) -> Term {
    Term::tuple(items)
}

fn eq(attr: &str, value: &str) -> Term {
    t(vec![
        Term::atom("equalityMatch"),
        t(vec![
            Term::atom("AttributeValueAssertion"),
            s(attr),
            s(value),
        ]),
    ])
}

fn substrings(attr: &str, parts: &[(&str, &str)]) -> Term {
    let parts = parts
        .iter()
        .map(|(k, v)| t(vec![Term::atom(k), s(v)]))
        .collect();
    t(vec![
        Term::atom("substrings"),
        t(vec![
            Term::atom("SubstringFilter"),
            s(attr),
            Term::List(parts),
        ]),
    ])
}

#[test]
fn filters_as_rfc4515_text() {
    assert_eq!(filter_text(&eq("uid", "alice")).unwrap(), "(uid=alice)");
    assert_eq!(
        filter_text(&eq("cn", "a*(b)\\c\u{e9}")).unwrap(),
        "(cn=a\\2a\\28b\\29\\5cc\\c3\\a9)"
    );
    let and = t(vec![
        Term::atom("and"),
        Term::List(vec![
            t(vec![Term::atom("present"), s("mail")]),
            t(vec![Term::atom("not"), eq("uid", "bob")]),
        ]),
    ]);
    assert_eq!(filter_text(&and).unwrap(), "(&(mail=*)(!(uid=bob)))");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("initial", "al")], "(cn=al*)"),
        (&[("any", "li")], "(cn=*li*)"),
        (&[("final", "ce")], "(cn=*ce)"),
        (
            &[("initial", "a"), ("any", "l"), ("final", "e")],
            "(cn=a*l*e)",
        ),
        (&[("initial", "a"), ("final", "e")], "(cn=a*e)"),
    ];
    for (parts, text) in cases {
        assert_eq!(filter_text(&substrings("cn", parts)).unwrap(), text);
    }
    let ge = t(vec![
        Term::atom("greaterOrEqual"),
        t(vec![
            Term::atom("AttributeValueAssertion"),
            s("employeeNumber"),
            s("2"),
        ]),
    ]);
    assert_eq!(filter_text(&ge).unwrap(), "(employeeNumber>=2)");
    let ext = t(vec![
        Term::atom("extensibleMatch"),
        t(vec![
            Term::atom("MatchingRuleAssertion"),
            s("caseExactMatch"),
            s("cn"),
            s("Alice"),
            Term::atom("true"),
        ]),
    ]);
    assert_eq!(filter_text(&ext).unwrap(), "(cn:dn:caseExactMatch:=Alice)");
}

#[test]
fn passwords_stay_out_of_errors() {
    let requests = [
        t(vec![
            Term::atom("simple_bind"),
            Term::List(vec![s("uid=a"), Term::Int(31337)]),
        ]),
        t(vec![
            Term::atom("modify_password"),
            Term::List(vec![s("uid=a"), Term::Int(31337)]),
        ]),
    ];
    for r in requests {
        let e = LdapRequest::parse(r).err().unwrap().to_string();
        assert!(
            e.contains("password: expected a string") && !e.contains("31337"),
            "{e}"
        );
    }
}

#[test]
fn malformed_filters_are_refused() {
    let bad = [
        t(vec![Term::atom("equals"), s("x")]),
        t(vec![Term::atom("present"), s("bad attr")]),
        substrings("cn", &[("any", "a"), ("initial", "b")]),
        substrings("cn", &[]),
        Term::atom("present"),
    ];
    for f in bad {
        let e = filter_text(&f).unwrap_err();
        assert_eq!(e.kind(), "bad_request", "{e}");
    }
}

fn config(pairs: Vec<(&str, Term)>) -> Result<LdapConfig> {
    let map = Term::Map(pairs.into_iter().map(|(k, v)| (Term::atom(k), v)).collect());
    LdapConfig::read(&Node::new("outgoing_pools.ldap.default.connection", &map))
}

#[test]
fn config_defaults_and_errors() {
    let c = config(vec![]).unwrap();
    assert_eq!(c.servers, vec!["localhost".to_string()]);
    assert_eq!(
        (c.port, c.root_dn.as_str(), c.tls.is_some()),
        (389, "", false)
    );
    let c = config(vec![("encrypt", Term::from("tls"))]).unwrap();
    assert_eq!((c.port, c.tls.is_some()), (636, true));
    let c = config(vec![
        ("tls", Term::Map(vec![])),
        ("root_dn", Term::from("cn=x")),
    ])
    .unwrap();
    assert_eq!((c.port, c.root_dn.as_str()), (636, "cn=x"));
    let err = |pairs| config(pairs).unwrap_err().to_string();
    assert_eq!(
        err(vec![("port", Term::Int(0))]),
        "outgoing_pools.ldap.default.connection.port: expected an integer between 1 and 65535, got 0"
    );
    assert!(err(vec![("servers", Term::List(vec![]))])
        .contains("connection.servers: expected a non-empty list"));
    assert!(err(vec![("encrypt", Term::from("starttls"))])
        .contains("connection.encrypt: expected one of none, tls"));
    assert!(err(vec![
        ("encrypt", Term::from("none")),
        ("tls", Term::Map(vec![]))
    ])
    .contains("connection.tls: TLS options are set but encrypt is \"none\""));
    assert!(err(vec![
        ("rootdn", Term::from("a")),
        ("root_dn", Term::from("b"))
    ])
    .contains("rootdn or root_dn"));
    assert!(err(vec![("connect_interval", Term::Int(0))])
        .contains("connection.connect_interval: expected an integer between 1 and"));
    assert!(err(vec![("servers", s("localhost"))])
        .contains("connection.servers: expected a list of host names, got \"localhost\""));
    let e = err(vec![("password", Term::Int(42))]);
    assert!(
        e.contains("connection.password") && !e.contains("42"),
        "{e}"
    );
}

// Against the slapd scripts/setup.sh starts on 127.0.0.1:3389.

use crate::config::{PoolSettings, PoolType};
use crate::engine::lease::testing;
use crate::engine::pool::{AnyPool, Pool};
use crate::engine::reply::oneshot;
use crate::engine::strategy::Choice;

const ROOT: &str = "cn=admin,dc=example,dc=com";

/// The test server's options, `extra` first so that it overrides them.
fn server(extra: Vec<(&str, Term)>) -> Vec<(&str, Term)> {
    let mut pairs = extra;
    pairs.extend([
        ("servers", Term::List(vec![Term::from("127.0.0.1")])),
        ("port", Term::Int(3389)),
        ("rootdn", Term::from(ROOT)),
        ("password", Term::from("secret")),
    ]);
    pairs
}

async fn pool(pairs: Vec<(&str, Term)>, workers: i64) -> Result<Arc<Pool<LdapDriver>>> {
    let opts = Term::Map(vec![(Term::atom("workers"), Term::Int(workers))]);
    let settings = PoolSettings::read(PoolType::Ldap, &Node::new("p", &opts))?;
    Pool::start(LdapDriver::new(config(pairs)?, 5000), settings).await
}

async fn call(p: &Arc<Pool<LdapDriver>>, req: Term) -> Term {
    let (reply, rx) = oneshot();
    p.submit(Choice::Strategy, req, reply).unwrap();
    rx.await.unwrap()
}

fn req(f: &str, args: Vec<Term>) -> Term {
    t(vec![Term::atom(f), Term::List(args)])
}

fn bind(dn: &str, pw: &str) -> Term {
    req("simple_bind", vec![s(dn), s(pw)])
}

fn search_uid(uid: &str) -> Term {
    let opts = vec![
        t(vec![Term::atom("base"), s("ou=people,dc=example,dc=com")]),
        t(vec![Term::atom("filter"), eq("uid", uid)]),
        t(vec![Term::atom("attributes"), Term::List(vec![s("mail")])]),
    ];
    req("search", vec![Term::List(opts)])
}

fn entries(answer: &Term) -> &[Term] {
    match answer {
        Term::Tuple(ok) if ok[0] == Term::atom("ok") => match &ok[1] {
            Term::Tuple(r) => match &r[1] {
                Term::List(e) => e,
                _ => panic!("{answer:?}"),
            },
            _ => panic!("{answer:?}"),
        },
        _ => panic!("not a search result: {answer:?}"),
    }
}

#[tokio::test]
async fn binds_searches_and_keeps_its_identity() {
    let p = pool(server(vec![]), 1).await.unwrap();
    let alice = "uid=alice,ou=people,dc=example,dc=com";
    let found = call(&p, search_uid("alice")).await;
    let expected = t(vec![
        Term::atom("eldap_entry"),
        s(alice),
        Term::List(vec![t(vec![
            s("mail"),
            Term::List(vec![s("alice@example.com")]),
        ])]),
    ]);
    assert_eq!(entries(&found), &[expected]);
    assert_eq!(call(&p, bind(alice, "alicepw")).await, Term::atom("ok"));
    assert_eq!(
        call(&p, bind(alice, "wrong")).await,
        Term::error(Term::atom("invalidCredentials"))
    );
    // The failed bind left the connection anonymous; the pool binds back
    // as the root DN before searching.
    assert_eq!(entries(&call(&p, search_uid("bob")).await).len(), 1);
    // On a lease: a user's bind, then the reset binds back.
    let (reply, rx) = oneshot();
    p.lease(Choice::Strategy, testing::keep, reply).unwrap();
    let lease = testing::taken(rx.await.unwrap());
    assert_eq!(
        testing::call(&lease, bind(alice, "alicepw")).await,
        Term::atom("ok")
    );
    lease.release(true);
    let add = req(
        "add",
        vec![
            s("cn=rust-test,ou=groups,dc=example,dc=com"),
            Term::List(vec![
                t(vec![
                    s("objectClass"),
                    Term::List(vec![s("organizationalRole")]),
                ]),
                t(vec![s("cn"), Term::List(vec![s("rust-test")])]),
            ]),
        ],
    );
    let _ = call(
        &p,
        req(
            "delete",
            vec![s("cn=rust-test,ou=groups,dc=example,dc=com")],
        ),
    )
    .await;
    // Only the root DN may write: this passes only if the identity came back.
    assert_eq!(call(&p, add.clone()).await, Term::atom("ok"));
    assert_eq!(
        call(&p, add).await,
        Term::error(Term::atom("entryAlreadyExists"))
    );
    let delete = req(
        "delete",
        vec![s("cn=rust-test,ou=groups,dc=example,dc=com")],
    );
    assert_eq!(call(&p, delete.clone()).await, Term::atom("ok"));
    assert_eq!(
        call(&p, delete).await,
        Term::error(Term::atom("noSuchObject"))
    );
    p.stop();
}

#[tokio::test]
async fn failed_starts_say_why() {
    let e = pool(server(vec![("password", Term::from("not-the-one"))]), 1)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("connection.rootdn") && e.contains("invalidCredentials"),
        "{e}"
    );
    assert!(!e.contains("not-the-one"), "{e}");
    let e = pool(server(vec![("port", Term::Int(1))]), 1)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("ldap: ldap://127.0.0.1:1: "), "{e}");
    // Servers are tried in order: a dead first one does not stop the start.
    let two = Term::List(vec![Term::from("127.0.0.2"), Term::from("127.0.0.1")]);
    let p = pool(server(vec![("servers", two)]), 1).await.unwrap();
    assert_eq!(entries(&call(&p, search_uid("carol")).await).len(), 1);
    p.stop();
}
