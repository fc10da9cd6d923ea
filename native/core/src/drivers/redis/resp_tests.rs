use super::{read, Read};
use crate::term::Term;

fn reply(bytes: &[u8]) -> Term {
    match read(bytes) {
        Ok(Read::Reply(term, used)) => {
            assert_eq!(used, bytes.len(), "the whole reply is taken");
            term
        }
        other => panic!("expected a whole reply from {bytes:?}, got {other:?}"),
    }
}

fn ok(v: Term) -> Term {
    Term::ok(v)
}

#[test]
fn replies_read_as_eredis_gives_them() {
    assert_eq!(reply(b"+OK\r\n"), ok(Term::from("OK")));
    assert_eq!(reply(b":-42\r\n"), ok(Term::from("-42")));
    assert_eq!(reply(b"$5\r\nhe\r\no\r\n"), ok(Term::bin(*b"he\r\no")));
    assert_eq!(reply(b"$0\r\n\r\n"), ok(Term::bin(Vec::new())));
    assert_eq!(reply(b"$-1\r\n"), ok(Term::atom("undefined")));
    assert_eq!(reply(b"*-1\r\n"), ok(Term::atom("undefined")));
    assert_eq!(reply(b"*0\r\n"), ok(Term::List(vec![])));
    assert_eq!(
        reply(b"-ERR unknown command 'NOPE'\r\n"),
        Term::error(Term::from("ERR unknown command 'NOPE'"))
    );
    // EXEC's results: an error stays in its place among the values.
    assert_eq!(
        reply(b"*3\r\n:1\r\n-WRONGTYPE bad\r\n*1\r\n$1\r\nx\r\n"),
        ok(Term::List(vec![
            Term::from("1"),
            Term::error(Term::from("WRONGTYPE bad")),
            Term::List(vec![Term::from("x")]),
        ]))
    );
}

#[test]
fn a_reply_split_anywhere_waits_for_the_rest() {
    let whole = b"*2\r\n$3\r\nabc\r\n:7\r\n";
    for cut in 0..whole.len() {
        match read(&whole[..cut]) {
            Ok(Read::Partial(need)) => assert!(need > cut && need <= whole.len(), "cut {cut}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    // A bulk string's length says how much must come before trying again.
    assert_eq!(read(b"$100\r\nab"), Ok(Read::Partial(108)));
}

#[test]
fn two_replies_back_to_back_are_read_one_at_a_time() {
    let both = b"+PONG\r\n:1\r\n";
    assert_eq!(read(both), Ok(Read::Reply(ok(Term::from("PONG")), 7)));
    assert_eq!(read(&both[7..]), Ok(Read::Reply(ok(Term::from("1")), 4)));
}

#[test]
fn a_stream_that_is_not_resp2_is_an_error() {
    for bad in [
        &b"%1\r\n"[..],
        b"\r\n",
        b"+OK\n",
        b":12x\r\n",
        b"$-2\r\n",
        b"$2\r\nabcd\r\n",
        b"$999999999999\r\n",
        b"*x\r\n",
    ] {
        assert!(read(bad).is_err(), "{bad:?} should be refused");
    }
    let deep = "*1\r\n".repeat(600);
    assert!(read(deep.as_bytes()).is_err());
}
