//! Tests of the transport over loopback: order, bad peers, limits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::{encode_data, gd_start};
use super::listener::{listen, Incoming, Sink, SinkFactory};
use super::*;

type Got = (String, Vec<u8>, Vec<u8>);

struct ToChannel(mpsc::UnboundedSender<Got>);

impl Sink for ToChannel {
    fn frame(&mut self, host: &str, _transfer: i64, key: &[u8], term: &[u8]) {
        let _ = self.0.send((host.to_string(), key.to_vec(), term.to_vec()));
    }
}

struct Factory(mpsc::UnboundedSender<Got>);

impl SinkFactory for Factory {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(ToChannel(self.0.clone()))
    }
}

async fn receiver(
    max_frame: usize,
) -> (
    listener::Listener,
    Arc<Metrics>,
    mpsc::UnboundedReceiver<Got>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let incoming = Arc::new(Incoming {
        tls: None,
        max_frame,
        sinks: Arc::new(Factory(tx)),
        metrics: metrics.clone(),
    });
    let l = listen("127.0.0.1:0".parse().unwrap(), incoming)
        .await
        .unwrap();
    (l, metrics, rx)
}

/// The stanzas (terms) a transport handed back, with their host.
struct HandedBack(mpsc::UnboundedSender<(String, Vec<u8>)>);

impl outgoing::Undeliverable for HandedBack {
    fn hand_back(&self, host: &str, frames: Vec<Vec<u8>>) -> BoxFuture<'static, ()> {
        for f in frames {
            let term = frame::parse_data(&f[4..]).unwrap().term.to_vec();
            let _ = self.0.send((host.to_string(), term));
        }
        Box::pin(async {})
    }
}

fn sender(per_endpoint: usize) -> Transport {
    sender_handing_back(per_endpoint).0
}

/// A transport, and what it hands back.
fn sender_handing_back(
    per_endpoint: usize,
) -> (Transport, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let dialer = Dialer {
        local_host: "dc1.example".into(),
        tls: None,
        metrics: Arc::new(Metrics::default()),
        queue: 10_000,
        undeliverable: Arc::new(HandedBack(tx)),
    };
    (Transport::new(dialer, per_endpoint), rx)
}

/// A loopback address nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A receiver on `addr` (a port given back before).
async fn receiver_on(addr: SocketAddr) -> (listener::Listener, mpsc::UnboundedReceiver<Got>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let incoming = Arc::new(Incoming {
        tls: None,
        max_frame: 1024,
        sinks: Arc::new(Factory(tx)),
        metrics: Arc::new(Metrics::default()),
    });
    (listen(addr, incoming).await.unwrap(), rx)
}

/// Sends `prefix-N` every 2 ms until `n` were refused; the accepted ones.
async fn send_until_refused(t: &Transport, host: &str, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let (mut accepted, mut refused) = (vec![], 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for i in 0.. {
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        let term = format!("{prefix}-{i}").into_bytes();
        match t.send(host, 0, b"k", &term) {
            Ok(()) => accepted.push(term),
            Err(_) => refused += 1,
        }
        if refused == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    accepted
}

/// The counter once it reached `expected`, or after 2 s of waiting for it.
async fn settled(counter: &std::sync::atomic::AtomicU64, expected: u64) -> u64 {
    for _ in 0..200 {
        if counter.load(Ordering::Relaxed) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counter.load(Ordering::Relaxed)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Got>) -> Got {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn messages_of_one_sender_arrive_in_order() {
    let (l, metrics, mut rx) = receiver(frame::DEFAULT_MAX_FRAME).await;
    let t = sender(4);
    t.set_endpoints("dc2.example", &[l.addr], &[]);
    assert_eq!(t.endpoints("dc2.example"), vec![l.addr]);
    for i in 0..1000u32 {
        t.send("dc2.example", 7, b"alice@dc1.example", &i.to_be_bytes())
            .unwrap();
    }
    for i in 0..1000u32 {
        let (host, key, term) = recv(&mut rx).await;
        assert_eq!(
            (host.as_str(), key.as_slice()),
            ("dc1.example", &b"alice@dc1.example"[..])
        );
        assert_eq!(term, i.to_be_bytes());
    }
    assert_eq!(
        metrics.incoming_first_packet_count.load(Ordering::Relaxed),
        1
    );
    // Counted once written, which may be after the receiver has them all.
    assert_eq!(
        settled(&t.metrics.outgoing_messages_count, 1000).await,
        1000
    );
}

#[tokio::test]
async fn a_dropped_listener_closes_its_connections() {
    let (l, metrics, mut rx) = receiver(1024).await;
    let mut peer = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    peer.write_all(&gd_start("dc1.example", "c1"))
        .await
        .unwrap();
    let mut frame = vec![];
    encode_data(&mut frame, 1, b"k", b"t").unwrap();
    peer.write_all(&frame).await.unwrap();
    recv(&mut rx).await;
    drop(l);
    let mut rest = vec![];
    let read = tokio::time::timeout(Duration::from_secs(2), peer.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed, not left open: {read:?}");
    // Counted once the connection's task ends, which may be after the close.
    assert_eq!(settled(&metrics.incoming_closed_count, 1).await, 1);
}

#[tokio::test]
async fn unknown_hosts_and_vanished_endpoints_fail_fast() {
    let t = sender(2);
    assert_eq!(
        t.send("nowhere", 1, b"k", b"t").unwrap_err().kind(),
        "no_connection"
    );
    let (l, _m, _rx) = receiver(1024).await;
    t.set_endpoints("dc2", &[l.addr], &[]);
    t.set_endpoints("dc2", &[], &[l.addr]);
    assert!(
        t.send("dc2", 1, b"k", b"t").is_err(),
        "a disabled endpoint takes nothing new"
    );
    t.set_endpoints("dc2", &[], &[]);
    assert!(t.send("dc2", 1, b"k", b"t").is_err());
    assert!(t.endpoints("dc2").is_empty());
}

#[tokio::test]
async fn garbage_oversized_and_cut_frames_close_only_their_connection() {
    let (l, metrics, mut rx) = receiver(1024).await;
    let bad_inputs: Vec<Vec<u8>> = vec![
        b"\x00\x00\x00\x05hello".to_vec(),
        {
            let mut v = gd_start("dc9", "c");
            v.extend_from_slice(&5000u32.to_be_bytes());
            v
        },
        {
            let mut v = gd_start("dc9", "c");
            v.extend_from_slice(&[0, 0, 0, 40, 1, 2]);
            v
        },
        {
            let mut v = gd_start("dc9", "c");
            v.extend_from_slice(&[0, 0, 0, 3, 1, 2, 3]);
            v
        },
    ];
    for bad in &bad_inputs {
        let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
        s.write_all(bad).await.unwrap();
        s.shutdown().await.unwrap();
    }
    let t = sender(1);
    t.set_endpoints("dc2", &[l.addr], &[]);
    t.send("dc2", 0, b"k", b"still fine").unwrap();
    assert_eq!(recv(&mut rx).await.2, b"still fine");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metrics.incoming_errored_count.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn unreachable_endpoint_refuses_at_once_then_recovers() {
    let (t, mut back) = sender_handing_back(1);
    let addr = closed_port();
    t.set_endpoints("dc3", &[addr], &[]);
    t.send("dc3", 0, b"k", b"handed back").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        match t.send("dc3", 0, b"k", b"refused") {
            Err(e) => break e,
            Ok(()) => {
                assert!(tokio::time::Instant::now() < deadline, "never refused");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(refused.kind(), "no_connection", "{refused}");
    assert!(t.metrics.outgoing_errored_count.load(Ordering::Relaxed) >= 1);
    // Accepted before the failure was known: handed back, not dropped.
    let handed = tokio::time::timeout(Duration::from_secs(2), back.recv()).await;
    assert_eq!(
        handed.unwrap().unwrap(),
        ("dc3".to_string(), b"handed back".to_vec())
    );
    // The endpoint comes up: the background retry finds it, sends go through.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let incoming = Arc::new(Incoming {
        tls: None,
        max_frame: 1024,
        sinks: Arc::new(Factory(tx)),
        metrics: Arc::new(Metrics::default()),
    });
    let _l = listen(addr, incoming).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while t.send("dc3", 0, b"k", b"back").is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recv(&mut rx).await.2, b"back");
    let mut big = Vec::new();
    assert!(encode_data(&mut big, 0, &vec![0u8; 70_000], b"").is_err());
}

/// Writes a CA and two leaf certificates (cert + key in one PEM, as
/// `certfile` takes them) into a fresh directory; returns their paths.
fn pki(dir: &std::path::Path) -> (String, String, String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let ca = |name: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    };
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let leaf = |name: &str, issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &**issuer)
            .unwrap();
        write(&format!("{name}.pem"), cert.pem() + &key.serialize_pem())
    };
    let good = ca("good ca");
    let rogue = ca("rogue ca");
    (
        write("ca.pem", good.pem()),
        leaf("dc1", &good),
        leaf("dc2", &good),
        leaf("mallory", &rogue),
    )
}

fn mutual(cert: &str, ca: &str) -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    let t = crate::term::Term::Map(vec![
        (
            crate::term::Term::atom("certfile"),
            crate::term::Term::from(cert),
        ),
        (
            crate::term::Term::atom("cacertfile"),
            crate::term::Term::from(ca),
        ),
    ]);
    let (server, client) = crate::tls::read_mutual(&crate::config::Node::new("tls", &t)).unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

#[tokio::test]
async fn mutual_tls_links_and_refuses_foreign_certificates() {
    let dir = std::env::temp_dir().join(format!("mn_gd_tls_{}", rand::random::<u64>()));
    let (ca, dc1, dc2, mallory) = pki(&dir);
    let (acceptor, _) = mutual(&dc2, &ca);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let incoming = Arc::new(Incoming {
        tls: Some(acceptor),
        max_frame: 4096,
        sinks: Arc::new(Factory(tx)),
        metrics: metrics.clone(),
    });
    let l = listen("127.0.0.1:0".parse().unwrap(), incoming)
        .await
        .unwrap();
    let dial = |cert: &str| {
        let (_, connector) = mutual(cert, &ca);
        Transport::new(
            Dialer {
                local_host: "dc1".into(),
                tls: Some(connector),
                metrics: Arc::new(Metrics::default()),
                queue: 100,
                undeliverable: Arc::new(HandedBack(mpsc::unbounded_channel().0)),
            },
            1,
        )
    };
    let good = dial(&dc1);
    good.set_endpoints("dc2", &[l.addr], &[]);
    good.send("dc2", 0, b"k", b"over tls").unwrap();
    assert_eq!(recv(&mut rx).await.2, b"over tls");

    let bad = dial(&mallory);
    bad.set_endpoints("dc2", &[l.addr], &[]);
    bad.send("dc2", 0, b"k", b"from mallory").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tokio::time::timeout(Duration::from_millis(100), rx.recv())
        .await
        .is_err());
    // Refused at every (background) attempt.
    assert!(metrics.incoming_errored_count.load(Ordering::Relaxed) >= 1);
    let e = crate::tls::read_mutual(&crate::config::Node::new(
        "connections.tls",
        &crate::term::Term::Map(vec![]),
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "connections.tls.certfile: required, expected a string"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 21: what a link accepted before its connection failed (here, the
/// first: nothing listens) is handed back, in order, for the caller to
/// retry or bounce; nothing is dropped, and the sender is refused once the
/// failure is known.
#[tokio::test]
async fn stanzas_accepted_before_a_failed_connect_are_handed_back() {
    let (t, mut back) = sender_handing_back(1);
    let addr = closed_port();
    t.set_endpoints("dc2", &[addr], &[]);
    let accepted = send_until_refused(&t, "dc2", "early", 3).await;
    assert!(!accepted.is_empty());
    for term in &accepted {
        let got = tokio::time::timeout(Duration::from_secs(3), back.recv()).await;
        assert_eq!(got.unwrap().unwrap(), ("dc2".to_string(), term.clone()));
    }
    // The peer comes: the link reopens by itself.
    let (_l, mut rx) = receiver_on(addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while t.send("dc2", 0, b"k", b"later").is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recv(&mut rx).await.2, b"later");
    assert!(back.try_recv().is_err(), "nothing else handed back");
}

/// Issue 21: a peer's close of an idle link is seen before the next
/// stanza: that stanza is refused (the caller bounces it) instead of being
/// written to the dead connection and lost; once the peer is back, the
/// link reopens by itself.
#[tokio::test]
async fn a_link_closed_by_its_peer_refuses_instead_of_losing() {
    let (t, mut back) = sender_handing_back(1);
    let (l, _metrics, mut rx) = receiver(1024).await;
    let addr = l.addr;
    t.set_endpoints("dc2", &[addr], &[]);
    t.send("dc2", 0, b"k", b"before").unwrap();
    assert_eq!(recv(&mut rx).await.2, b"before");
    drop(l);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        t.send("dc2", 0, b"k", b"after close").is_err(),
        "a link its peer closed takes nothing"
    );
    let (_l, mut rx) = receiver_on(addr).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while t.send("dc2", 0, b"k", b"back").is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recv(&mut rx).await.2, b"back");
    assert!(back.try_recv().is_err(), "nothing handed back");
}
