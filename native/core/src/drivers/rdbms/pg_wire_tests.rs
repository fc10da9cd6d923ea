use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend((body.len() as u32 + 4).to_be_bytes());
    out.extend(body);
    out
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (kind, value) in [(b'V', "ERROR"), (b'C', code), (b'M', message)] {
        b.push(kind);
        b.extend(value.as_bytes());
        b.push(0);
    }
    b.push(0);
    b
}

#[test]
fn parse_takes_whole_messages_and_skips_what_answers_no_request() {
    let mut bytes = frame(b'N', b"notice");
    bytes.extend(frame(b'1', b""));
    bytes.extend(frame(b'S', b"a\0b\0"));
    bytes.extend(&frame(b'D', b"\0\x01\0\0\0\x01x")[..7]);
    let mut frames = Vec::new();
    let (used, next) = Pg::parse(&bytes, &mut frames);
    assert_eq!(frames.iter().map(|f| f.tag).collect::<Vec<_>>(), vec![b'1']);
    assert_eq!(used, bytes.len() - 7);
    assert_eq!(next, Ok(12), "the DataRow is 12 bytes whole");
    let (_, bad) = Pg::parse(b"Z\0\0\0\x02", &mut frames);
    assert_eq!(bad, Err("a message of length 2".to_string()));
    let (_, huge) = Pg::parse(b"D\xff\xff\xff\xff", &mut frames);
    assert_eq!(huge, Err("a message of length 4294967295".to_string()));
}

#[test]
fn frames_become_items_or_the_servers_error() {
    let row = frame(b'D', b"\0\x02\0\0\0\x04\0\0\0\x07\xff\xff\xff\xff");
    let frames = |raw: Vec<Vec<u8>>| {
        raw.into_iter()
            .map(|f| Frame {
                tag: f[0],
                body: f[5..].to_vec(),
            })
            .collect::<Vec<_>>()
    };
    let typed = items(
        frames(vec![row.clone(), frame(b'C', b"SELECT 1\0")]),
        Some(&[23, 23]),
    );
    match typed.ok().as_deref() {
        Some([Item::Row(Term::Tuple(values)), Item::Done(1)]) => {
            assert_eq!(values[0], Term::Int(7));
            assert_eq!(values[1], null());
        }
        _ => panic!("an int4 row and its end"),
    }
    let text = items(frames(vec![row, frame(b'C', b"INSERT 0 3\0")]), None);
    match text.ok().as_deref() {
        Some([Item::Row(Term::Tuple(values)), Item::Done(3)]) => {
            assert_eq!(values[0], Term::bin(*b"\0\0\0\x07"))
        }
        _ => panic!("a text row and its end"),
    }
    let duplicate = frame(b'E', &error_body("23505", "duplicate key value"));
    match items(frames(vec![duplicate]), None) {
        Err(Failure::Answer(t)) => assert_eq!(t, Term::error(Term::atom("duplicate_key"))),
        _ => panic!("a unique-key violation is duplicate_key"),
    }
    let short = frame(b'D', b"\0\x01\0\0\0\x09ab");
    assert!(matches!(
        items(frames(vec![short]), None),
        Err(Failure::Broken(_))
    ));
}

/// Connects to a server that reads the startup message and answers `reply`.
async fn log_in_against(reply: Vec<u8>) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            let mut startup = [0u8; 512];
            let _ = s.read(&mut startup).await;
            // Open until the client is done with it, unless it says nothing.
            if !reply.is_empty() {
                let _ = s.write_all(&reply).await;
                let _ = s.read(&mut startup).await;
            }
        }
    });
    let wire = PgWire {
        host: "127.0.0.1".into(),
        port,
        user: "u".into(),
        password: None,
        database: "d".into(),
        options: String::new(),
        target: "t".into(),
    };
    wire.connect().await.map(|_| ())
}

#[tokio::test]
async fn a_handshake_that_goes_wrong_says_why() {
    let cases: [(Vec<u8>, &str); 6] = [
        (b"X\0\0\0\x02".to_vec(), "a message of length 2"),
        (
            frame(b'R', &7u32.to_be_bytes()),
            "an authentication method this client does not have",
        ),
        (frame(b'R', &3u32.to_be_bytes()), "set connection.password"),
        (
            frame(b'E', &error_body("28P01", "password authentication failed")),
            "refused the login given in connection.username",
        ),
        (
            frame(b'E', &error_body("3D000", "database \"d\" does not exist")),
            "database \"d\" does not exist",
        ),
        (Vec::new(), "closed the connection during the handshake"),
    ];
    for (reply, expected) in cases {
        let why = log_in_against(reply).await.err().unwrap_or_default();
        assert!(why.contains(expected), "{why:?} should say {expected:?}");
    }
}
