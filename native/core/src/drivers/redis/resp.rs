//! Replies in RESP2 (what Redis speaks to a client that never sent HELLO 3),
//! read straight into eredis's result terms: no intermediate value tree.

use crate::term::Term;

/// Past this a reply is not believed: Redis's own bound on one bulk string
/// (`proto-max-bulk-len`) is 512 MiB.
const MAX_BULK: usize = 512 << 20;
/// Nesting deeper than this is a broken stream, not a reply.
const MAX_DEPTH: usize = 512;

/// What the front of a buffer holds.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// One whole reply as eredis gives it (`{ok, Value}` or `{error,
    /// Message}`) and how many bytes it took.
    Reply(Term, usize),
    /// Not all of it yet: at least this many bytes make the next try worth it.
    Partial(usize),
}

/// Reads one reply off the front of `buf`; an error means the stream is
/// not RESP2 (the connection cannot be trusted further).
pub fn read(buf: &[u8]) -> Result<Read, String> {
    let mut at = 0;
    match element(buf, &mut at, 0)? {
        Some(Element::Value(v)) => Ok(Read::Reply(Term::ok(v), at)),
        Some(Element::Error(e)) => Ok(Read::Reply(Term::error(e), at)),
        None => Ok(Read::Partial(at.max(buf.len() + 1))),
    }
}

/// Every whole reply at the front of `buf`, appended to `replies`: the
/// bytes they took, and how many more from there make the next reply worth
/// trying (or why the stream is not RESP2).
pub fn read_all(buf: &[u8], replies: &mut Vec<Term>) -> (usize, Result<usize, String>) {
    let mut used = 0;
    loop {
        match read(&buf[used..]) {
            Ok(Read::Reply(term, n)) => {
                replies.push(term);
                used += n;
            }
            Ok(Read::Partial(at_least)) => return (used, Ok(at_least)),
            Err(e) => return (used, Err(e)),
        }
    }
}

enum Element {
    Value(Term),
    Error(Term),
}

/// The element at `*at`, moving `*at` past it; `None` if incomplete, with
/// `*at` then the least length that could complete it.
fn element(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Element>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("a reply nested deeper than {MAX_DEPTH}"));
    }
    let Some((kind, line)) = line(buf, at)? else {
        *at = buf.len() + 1;
        return Ok(None);
    };
    let value = match kind {
        // Status replies, integers: as binaries, the way eredis gives them.
        b'+' => Term::bin(line),
        b':' => match parse_int(line) {
            Some(_) => Term::bin(line),
            None => return Err(malformed("integer", line)),
        },
        b'-' => return Ok(Some(Element::Error(Term::bin(line)))),
        b'$' => match length(line)? {
            None => Term::atom("undefined"),
            Some(len) => {
                let end = *at + len;
                if buf.len() < end + 2 {
                    *at = end + 2;
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err("a bulk string longer than its length".into());
                }
                let bytes = buf[*at..end].to_vec();
                *at = end + 2;
                Term::Bin(bytes)
            }
        },
        b'*' => match length(line)? {
            None => Term::atom("undefined"),
            Some(n) => {
                // The count is the server's word: allocate as the items come.
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    match element(buf, at, depth + 1)? {
                        Some(Element::Value(v)) => items.push(v),
                        // An error inside an array (EXEC's) stays in its place.
                        Some(Element::Error(e)) => items.push(Term::error(e)),
                        None => return Ok(None),
                    }
                }
                Term::List(items)
            }
        },
        other => return Err(format!("a reply of unknown type byte 0x{other:02x}")),
    };
    Ok(Some(Element::Value(value)))
}

/// The type byte and the rest of the line at `*at`, moving `*at` past its
/// CRLF; `None` until the line is whole.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<(u8, &'a [u8])>, String> {
    let rest = &buf[(*at).min(buf.len())..];
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let whole = match rest[..lf].split_first() {
        Some((&kind, text)) => text.strip_suffix(b"\r").map(|text| (kind, text)),
        None => None,
    };
    *at += lf + 1;
    whole
        .map(Some)
        .ok_or_else(|| malformed("line", &rest[..lf]))
}

/// A bulk string's or array's length: `None` for RESP2's null (-1).
fn length(line: &[u8]) -> Result<Option<usize>, String> {
    match parse_int(line) {
        Some(-1) => Ok(None),
        Some(n) if (0..=MAX_BULK as i64).contains(&n) => Ok(Some(n as usize)),
        _ => Err(malformed("length", line)),
    }
}

fn parse_int(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn malformed(what: &str, line: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(32)]).into();
    format!("a malformed {what} in a reply: {shown:?}")
}

#[cfg(test)]
#[path = "resp_tests.rs"]
mod tests;
