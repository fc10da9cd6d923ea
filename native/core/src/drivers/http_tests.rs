//! Tests of `http`.

use super::*;
use crate::config::{PoolSettings, PoolType};
use crate::engine::pool::{AnyPool, Pool};
use crate::engine::reply::oneshot;
use crate::engine::strategy::Choice;
use crate::tls::{suite_name, OPENSSL_SUITE_NAMES};
use rustls_pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATH: &str = "outgoing_pools.http.default.connection";

fn kv(k: &str, v: Term) -> (Term, Term) {
    (Term::atom(k), v)
}

fn read(conn: Term) -> Result<HttpConfig> {
    HttpConfig::read(&Node::new(PATH, &conn))
}

fn config_error(conn: Term) -> String {
    match read(conn) {
        Err(Error::Config(m)) => m,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = read(Term::Map(vec![])).unwrap();
    assert_eq!(c.base, "http://localhost");
    assert_eq!(c.path_prefix, "/");
    assert_eq!(c.request_timeout, Duration::from_millis(2000));
    assert_eq!(
        c.tls.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn map_and_legacy_proplist() {
    let c = read(Term::Map(vec![
        kv("host", Term::from("https://server.com:879")),
        kv("path_prefix", Term::from("/api/auth/")),
        kv("request_timeout", Term::Int(5000)),
        kv(
            "tls",
            Term::Map(vec![kv("verify_mode", Term::atom("none"))]),
        ),
    ]))
    .unwrap();
    assert_eq!(c.base, "https://server.com:879");
    assert_eq!(c.path_prefix, "/api/auth/");
    assert_eq!(c.request_timeout, Duration::from_millis(5000));
    // Legacy tuples: `server`, charlists, the default port dropped.
    let charlist = |s: &str| Term::List(s.chars().map(|c| Term::Int(c as i64)).collect());
    let c = read(Term::List(vec![
        Term::tuple(vec![Term::atom("server"), charlist("http://my_server:80/")]),
        Term::tuple(vec![Term::atom("path_prefix"), charlist("/x")]),
    ]))
    .unwrap();
    assert_eq!(c.base, "http://my_server");
    assert_eq!(c.path_prefix, "/x");
}

#[test]
fn errors_name_the_path() {
    let e = config_error(Term::Map(vec![kv("request_timeout", Term::Int(-1))]));
    assert_eq!(
        e,
        "outgoing_pools.http.default.connection.request_timeout: expected a positive integer, got -1"
    );
    let e = config_error(Term::Map(vec![kv("hots", Term::from("http://a"))]));
    assert!(
        e.starts_with("outgoing_pools.http.default.connection.hots: unknown option"),
        "{e}"
    );
    let e = config_error(Term::Map(vec![kv("host", Term::from("ftp://a.com"))]));
    assert!(
        e.starts_with(
            "outgoing_pools.http.default.connection.host: expected \"http[s]://name[:port]\""
        ),
        "{e}"
    );
    let e = config_error(Term::Map(vec![kv("host", Term::from("http://a.com/api"))]));
    assert!(e.contains("path_prefix"), "{e}");
    let e = config_error(Term::Map(vec![
        kv("host", Term::from("http://a")),
        kv("server", Term::from("http://b")),
    ]));
    assert!(e.contains("connection.server: set either host"), "{e}");
    let e = config_error(Term::Map(vec![kv("path_prefix", Term::Int(3))]));
    assert!(
        e.contains("connection.path_prefix: expected a string"),
        "{e}"
    );
}

#[test]
fn credentials_in_host_stay_out_of_errors() {
    let e = config_error(Term::Map(vec![kv(
        "host",
        Term::from("https://admin:hunter2@a.com"),
    )]));
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("user information"), "{e}");
}

#[test]
fn tls_options_are_validated() {
    let tls = |pairs: Vec<(Term, Term)>| Term::Map(vec![kv("tls", Term::Map(pairs))]);
    let e = config_error(tls(vec![kv("verify", Term::atom("true"))]));
    assert!(
        e.starts_with(&format!("{PATH}.tls.verify: unknown option")),
        "{e}"
    );
    let e = config_error(tls(vec![kv("verify_peer", Term::from("yes"))]));
    assert!(e.contains("tls.verify_peer: expected a boolean"), "{e}");
    let e = config_error(tls(vec![kv("verify_mode", Term::atom("selfsigned_peer"))]));
    assert!(e.contains("not supported by rustls"), "{e}");
    let e = config_error(tls(vec![
        kv("verify_peer", Term::atom("true")),
        kv("cacertfile", Term::from("/nonexistent/ca.pem")),
    ]));
    assert!(
        e.starts_with(&format!(
            "{PATH}.tls.cacertfile: cannot read \"/nonexistent/ca.pem\""
        )),
        "{e}"
    );
    let e = config_error(tls(vec![kv("ciphers", Term::from("HIGH:!aNULL"))]));
    assert!(e.contains("cannot honour the cipher \"HIGH\""), "{e}");
    let e = config_error(tls(vec![kv(
        "versions",
        Term::List(vec![Term::from("tlsv1")]),
    )]));
    assert!(e.contains("tls.versions: expected a list holding"), "{e}");
    let e = config_error(tls(vec![kv("keyfile", Term::from("/tmp/k.pem"))]));
    assert!(e.contains("tls.certfile: required"), "{e}");
    let e = config_error(tls(vec![
        kv("server_name_indication", Term::atom("false")),
        kv("server_name_indication_host", Term::from("a.com")),
    ]));
    assert!(
        e.contains("tls.server_name_indication_host: can only be set"),
        "{e}"
    );
    let e = config_error(tls(vec![kv("password", Term::Int(1234))]));
    assert_eq!(
        e,
        format!("{PATH}.tls.password: expected a string, got an integer")
    );
}

#[test]
fn tls_choices_reach_rustls() {
    let tls = |pairs: Vec<(Term, Term)>| {
        read(Term::Map(vec![kv("tls", Term::Map(pairs))]))
            .unwrap()
            .tls
    };
    let c = tls(vec![
        kv(
            "ciphers",
            Term::from("ECDHE-RSA-AES128-GCM-SHA256:TLS13_AES_128_GCM_SHA256"),
        ),
        kv(
            "versions",
            Term::List(vec![Term::from("tlsv1.2"), Term::from("tlsv1.3")]),
        ),
    ]);
    let names: Vec<_> = c
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(suite_name)
        .collect();
    assert_eq!(
        names,
        [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS13_AES_128_GCM_SHA256"
        ]
    );
    assert!(c.enable_sni);
    let c = tls(vec![
        kv(
            "server_name_indication",
            Term::Map(vec![kv("enabled", Term::atom("false"))]),
        ),
        kv("dhfile", Term::from("dh.pem")),
    ]);
    assert!(!c.enable_sni);
    // Every suite rustls offers has an OpenSSL name in the table.
    for suite in rustls::crypto::ring::ALL_CIPHER_SUITES {
        let name = suite_name(suite);
        assert!(
            OPENSSL_SUITE_NAMES.iter().any(|(_, iana)| *iana == name),
            "{name}"
        );
    }
}

#[test]
fn client_certificate_files() {
    let dir = std::env::temp_dir().join(format!("mn_http_tls_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    let both_file = dir.join("both.pem");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&both_file, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
    let path = |p: &std::path::Path| Term::from(p.to_string_lossy().to_string());
    let with = |pairs: Vec<(Term, Term)>| read(Term::Map(vec![kv("tls", Term::Map(pairs))]));
    let c = with(vec![
        kv("certfile", path(&cert_file)),
        kv("keyfile", path(&key_file)),
    ])
    .unwrap();
    assert!(c.tls.client_auth_cert_resolver.has_certs());
    let c = with(vec![kv("certfile", path(&both_file))]).unwrap();
    assert!(c.tls.client_auth_cert_resolver.has_certs());
    let e = with(vec![kv("certfile", path(&cert_file))]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{PATH}.tls.certfile: no unencrypted private key")),
        "{e}"
    );
    let e = with(vec![
        kv("verify_peer", Term::atom("true")),
        kv("cacertfile", path(&key_file)),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("no certificate found"), "{e}");
    // A CA file is read only when it is used.
    with(vec![kv("cacertfile", path(&key_file))]).unwrap();
    with(vec![
        kv("verify_peer", Term::atom("true")),
        kv("cacertfile", path(&cert_file)),
    ])
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn path_joining() {
    assert_eq!(join_path("/", "auth"), "/auth");
    assert_eq!(join_path("/", "/auth"), "/auth");
    assert_eq!(join_path("/api/", "/users?x=1"), "/api/users?x=1");
    assert_eq!(join_path("/api", "/users"), "/api/users");
    assert_eq!(join_path("/api", "users"), "/apiusers");
    assert_eq!(join_path("api/", "x"), "/api/x");
    assert_eq!(join_path("", ""), "/");
    assert_eq!(join_path("/", ""), "/");
}

fn driver(conn: Term) -> HttpDriver {
    HttpDriver::new(read(conn).unwrap(), 2).unwrap()
}

fn request(method: &str, path: &str, headers: Vec<Term>, body: &str) -> Term {
    Term::tuple(vec![
        Term::atom("request"),
        Term::from(method),
        Term::from(path),
        Term::List(headers),
        Term::from(body),
    ])
}

#[tokio::test]
async fn requests_are_parsed() {
    let d = driver(Term::Map(vec![
        kv("host", Term::from("http://127.0.0.1:8080")),
        kv("path_prefix", Term::from("/api/")),
    ]));
    let r = d
        .parse(request(
            "post",
            "/users?token=secret",
            vec![Term::tuple(vec![Term::from("X-A"), Term::from("1")])],
            "body",
        ))
        .unwrap();
    assert_eq!(r.method, Method::POST);
    assert_eq!(
        r.url.as_str(),
        "http://127.0.0.1:8080/api/users?token=secret"
    );
    assert_eq!(r.headers.get("x-a").unwrap(), "1");
    assert_eq!(r.body, b"body");
    assert_eq!(r.describe(), "POST http://127.0.0.1:8080/api/users");
    for bad in [
        Term::atom("get"),
        Term::tuple(vec![Term::atom("request"), Term::from("GET")]),
        request("GE T", "/", vec![], ""),
        request("GET", "/", vec![Term::from("x")], ""),
        request(
            "GET",
            "/",
            vec![Term::tuple(vec![Term::from("a b"), Term::from("1")])],
            "",
        ),
        request(
            "GET",
            "/",
            vec![Term::tuple(vec![Term::from("a"), Term::from("1\n")])],
            "",
        ),
        Term::tuple(vec![
            Term::atom("request"),
            Term::from("GET"),
            Term::Map(vec![]),
            Term::List(vec![]),
            Term::from(""),
        ]),
    ] {
        let e = d.parse(bad).err().unwrap();
        assert_eq!(e.kind(), "bad_request", "{e}");
    }
    // Header values (credentials) stay out of the message.
    let secret = Term::tuple(vec![
        Term::from("authorization"),
        Term::from("Bearer s3cr3t\n"),
    ]);
    for bad in [
        request("GET", "/", vec![secret.clone()], ""),
        request("GET", "/", vec![Term::tuple(vec![secret.clone()])], ""),
    ] {
        let e = d.parse(bad).err().unwrap().to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}

/// A one-shot HTTP/1.1 server: answers each connection's first request
/// with `answer` after `delay`, and reports what it received.
async fn server(
    answer: &'static str,
    delay: Duration,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
                tokio::time::sleep(delay).await;
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (port, rx)
}

async fn pool(conn: Term) -> std::sync::Arc<Pool<HttpDriver>> {
    let opts = Term::Map(vec![kv("workers", Term::Int(2))]);
    let settings = PoolSettings::read(PoolType::Http, &Node::new("p", &opts)).unwrap();
    let driver = HttpDriver::new(read(conn).unwrap(), settings.workers).unwrap();
    Pool::start(driver, settings).await.unwrap()
}

async fn call(p: &std::sync::Arc<Pool<HttpDriver>>, req: Term) -> Term {
    let (reply, rx) = oneshot();
    p.submit(Choice::Strategy, req, reply).unwrap();
    rx.await.unwrap()
}

fn error_kind(t: &Term) -> String {
    match t {
        Term::Tuple(e) if e[0] == Term::atom("error") => match &e[1] {
            Term::Tuple(r) => format!("{:?}", r[0]),
            other => panic!("{other:?}"),
        },
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn answers_and_failures() {
    let (port, mut seen) = server(
        "HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\nx-b: 2\r\nconnection: close\r\n\r\nnope",
        Duration::ZERO,
    )
    .await;
    let p = pool(Term::Map(vec![kv(
        "host",
        Term::from(format!("http://127.0.0.1:{port}")),
    )]))
    .await;
    let answer = call(&p, request("GET", "/x", vec![], "")).await;
    let Term::Tuple(ok) = &answer else {
        panic!("{answer:?}")
    };
    assert_eq!(ok[0], Term::atom("ok"), "{answer:?}");
    let Term::Tuple(parts) = &ok[1] else {
        panic!("{answer:?}")
    };
    assert_eq!(parts[0], Term::from("404"));
    assert!(
        matches!(&parts[1], Term::List(h) if h.contains(&Term::tuple(vec![Term::from("x-b"), Term::from("2")])))
    );
    assert_eq!(parts[2], Term::from("nope"));
    assert!(seen
        .recv()
        .await
        .unwrap()
        .starts_with("GET /x HTTP/1.1\r\n"));
    p.stop();

    // Nothing listens: refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = pool(Term::Map(vec![kv(
        "host",
        Term::from(format!("http://127.0.0.1:{closed_port}")),
    )]))
    .await;
    let answer = call(&p, request("GET", "/?secret=1", vec![], "")).await;
    assert_eq!(error_kind(&answer), "connection_refused", "{answer:?}");
    assert!(!format!("{answer:?}").contains("secret"), "{answer:?}");
    p.stop();

    // Too slow: request_timeout, and the worker stays usable.
    let (slow, _seen) = server(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    let p = pool(Term::Map(vec![
        kv("host", Term::from(format!("http://127.0.0.1:{slow}"))),
        kv("request_timeout", Term::Int(100)),
    ]))
    .await;
    let answer = call(&p, request("GET", "/", vec![], "")).await;
    assert_eq!(error_kind(&answer), "request_timeout", "{answer:?}");
    let answer = call(&p, request("GET", "/", vec![], "")).await;
    assert_eq!(error_kind(&answer), "request_timeout", "{answer:?}");
    p.stop();

    // A TLS handshake with something that does not speak TLS.
    let (plain, _seen) = server("HTTP/1.1 200 OK\r\n\r\n", Duration::ZERO).await;
    let p = pool(Term::Map(vec![kv(
        "host",
        Term::from(format!("https://127.0.0.1:{plain}")),
    )]))
    .await;
    let answer = call(&p, request("GET", "/", vec![], "")).await;
    assert_eq!(error_kind(&answer), "tls_error", "{answer:?}");
    p.stop();
}

/// A TLS server offering h2 through ALPN, answering every stream with
/// 201 "over h2"; reports each accepted connection and each request.
async fn h2_server() -> (u16, String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = acceptor.accept(sock).await.unwrap();
                let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
                let _ = tx.send(format!("connection alpn={:?}", alpn.map(String::from_utf8)));
                let mut conn = h2::server::handshake(tls).await.unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let _ = tx.send(format!("{:?} {}", req.version(), req.uri().path()));
                    let response = http::Response::builder()
                        .status(201)
                        .header("x-proto", "h2")
                        .body(())
                        .unwrap();
                    let mut send = respond.send_response(response, false).unwrap();
                    send.send_data(bytes::Bytes::from_static(b"over h2"), true)
                        .unwrap();
                }
            });
        }
    });
    (port, ca.pem(), rx)
}

#[tokio::test]
async fn http2_where_offered() {
    let (port, ca_pem, mut seen) = h2_server().await;
    let ca_file = std::env::temp_dir().join(format!("mn_http_h2_ca_{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    let p = pool(Term::Map(vec![
        kv("host", Term::from(format!("https://127.0.0.1:{port}"))),
        kv(
            "tls",
            Term::Map(vec![
                kv("verify_peer", Term::atom("true")),
                kv(
                    "cacertfile",
                    Term::from(ca_file.to_string_lossy().to_string()),
                ),
            ]),
        ),
    ]))
    .await;
    let expected = Term::ok(Term::tuple(vec![
        Term::from("201"),
        Term::List(vec![Term::tuple(vec![
            Term::from("x-proto"),
            Term::from("h2"),
        ])]),
        Term::from("over h2"),
    ]));
    assert_eq!(call(&p, request("GET", "/one", vec![], "")).await, expected);
    // Two at once, multiplexed on the same connection.
    let (a, b) = tokio::join!(
        call(&p, request("GET", "/two", vec![], "")),
        call(&p, request("POST", "/three", vec![], "x"))
    );
    assert_eq!((a, b), (expected.clone(), expected));
    p.stop();
    std::fs::remove_file(&ca_file).ok();
    let mut events = vec![];
    while let Ok(e) = seen.try_recv() {
        events.push(e);
    }
    events[2..].sort();
    assert_eq!(
        events,
        [
            "connection alpn=Some(Ok(\"h2\"))",
            "HTTP/2.0 /one",
            "HTTP/2.0 /three",
            "HTTP/2.0 /two"
        ]
    );
}
