use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;

/// Replies are lines; a waiter gets its line, or why it got none. The line
/// `bad` answers its waiter but breaks the protocol.
struct Lines;

type Said = Result<String, String>;

impl Protocol for Lines {
    const NAME: &'static str = "lines";
    type Waiter = (oneshot::Sender<Said>, Option<String>);
    type Reply = String;

    fn parse(buf: &[u8], replies: &mut Vec<String>) -> (usize, Result<usize, String>) {
        let mut at = 0;
        while let Some(end) = buf[at..].iter().position(|&b| b == b'\n') {
            replies.push(String::from_utf8_lossy(&buf[at..at + end]).into_owned());
            at += end + 1;
        }
        (at, Ok(1))
    }

    fn take(waiter: &mut Self::Waiter, reply: String) -> bool {
        waiter.1 = Some(reply);
        true
    }

    fn unasked(reply: String) -> String {
        format!("unasked {reply}")
    }

    fn finish((tx, line): Self::Waiter) -> Result<(), String> {
        let line = line.unwrap_or_default();
        let broken = line == "bad";
        let _ = tx.send(Ok(line));
        match broken {
            true => Err("a bad line".into()),
            false => Ok(()),
        }
    }

    fn lost((tx, _): Self::Waiter, why: &str) {
        let _ = tx.send(Err(why.to_string()));
    }
}

/// A connection, its I/O running, to a server that reads two requests and
/// answers `reply`.
async fn serving(reply: &'static [u8]) -> Conn<Lines> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut got: Vec<u8> = Vec::new();
        let mut buf = [0u8; 64];
        while got.iter().filter(|&&b| b == b'\n').count() < 2 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend(&buf[..n]),
            }
        }
        let _ = s.write_all(reply).await;
        // Open until the client goes.
        let _ = s.read(&mut buf).await;
    });
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (conn, io) = Conn::start(stream);
    tokio::spawn(io);
    conn
}

fn ask(conn: &Conn<Lines>, line: &str) -> oneshot::Receiver<Said> {
    let (tx, rx) = oneshot::channel();
    let written = conn.writing(|out, waiting| {
        out.extend(line.as_bytes());
        out.push(b'\n');
        waiting.push_back((tx, None));
    });
    assert!(written.is_some(), "the connection takes requests");
    rx
}

#[tokio::test]
async fn replies_answer_their_requests_in_order() {
    let conn = serving(b"one\ntwo\n").await;
    let (first, second) = (ask(&conn, "a"), ask(&conn, "b"));
    assert_eq!(first.await.ok(), Some(Ok("one".into())));
    assert_eq!(second.await.ok(), Some(Ok("two".into())));
    assert!(!conn.closed().is_cancelled());
}

#[tokio::test]
async fn an_answer_that_breaks_the_protocol_ends_the_connection() {
    let conn = serving(b"bad\n").await;
    let (first, second) = (ask(&conn, "a"), ask(&conn, "b"));
    assert_eq!(first.await.ok(), Some(Ok("bad".into())));
    let ended = tokio::time::timeout(Duration::from_secs(5), conn.closed().cancelled()).await;
    assert!(ended.is_ok(), "the connection ends");
    // The server never answers the second; it hears why the connection ended.
    assert_eq!(second.await.ok(), Some(Err("a bad line".into())));
    assert!(
        conn.writing(|_, _| ()).is_none(),
        "nothing is written after"
    );
}
