//! MongooseIM's global-distribution wire format (CONTRACTS.md section 2).
//!
//! Every frame is a 4-byte big-endian length and that many bytes. The first
//! frame of a connection is `<gd_start server='HOST' conn_id='ID'/>`; every
//! later one is an 8-byte sender clock (microseconds), a 2-byte key length,
//! the key (the worker key that keeps per-sender order) and the rest, the
//! sender's `term_to_binary({From, To, Acc, Packet})`.

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Frames above this are refused unless configured otherwise (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, PartialEq)]
pub enum FrameError {
    Io(String),
    Oversized {
        size: usize,
        max: usize,
    },
    /// The connection ended in the middle of a frame.
    Truncated,
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "read failed: {e}"),
            FrameError::Oversized { size, max } => {
                write!(f, "frame of {size} bytes is over the {max} byte limit")
            }
            FrameError::Truncated => f.write_str("connection closed in the middle of a frame"),
            FrameError::Malformed(what) => write!(f, "malformed frame: {what}"),
        }
    }
}

/// Reads one frame; `Ok(None)` when the peer closed between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<()>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut header[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) => return Err(FrameError::Io(e.to_string())),
        }
    }
    let size = u32::from_be_bytes(header) as usize;
    if size > max {
        return Err(FrameError::Oversized { size, max });
    }
    buf.clear();
    // The buffer grows as the bytes arrive, not to the size the header
    // announces: a peer that announces 16 MiB and sends four bytes holds
    // about four bytes here, not 16 MiB.
    match (&mut *reader).take(size as u64).read_to_end(buf).await {
        Ok(n) if n == size => Ok(Some(())),
        Ok(_) => Err(FrameError::Truncated),
        Err(e) => Err(FrameError::Io(e.to_string())),
    }
}

/// The first frame, length included.
pub fn gd_start(server: &str, conn_id: &str) -> Vec<u8> {
    let xml = format!(
        "<gd_start server='{}' conn_id='{}'/>",
        escape(server),
        escape(conn_id)
    );
    let mut out = Vec::with_capacity(4 + xml.len());
    out.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    out.extend_from_slice(xml.as_bytes());
    out
}

/// `(server, conn_id)` of a `gd_start` element; either quote style.
pub fn parse_gd_start(frame: &[u8]) -> Result<(String, String), FrameError> {
    let bad = |what: &str| FrameError::Malformed(format!("gd_start: {what}"));
    let text = std::str::from_utf8(frame)
        .map_err(|_| bad("not UTF-8"))?
        .trim();
    let body = text
        .strip_prefix("<gd_start")
        .and_then(|t| t.strip_suffix("/>"))
        .ok_or_else(|| bad("not a <gd_start/> element"))?;
    let (mut server, mut conn_id) = (None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| bad("attribute without a value"))?;
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"');
        let quote = quote.ok_or_else(|| bad("unquoted attribute"))?;
        let end = after[1..]
            .find(quote)
            .ok_or_else(|| bad("unterminated attribute"))?;
        let value = unescape(&after[1..1 + end]);
        match name {
            "server" => server = Some(value),
            "conn_id" => conn_id = Some(value),
            _ => {}
        }
        rest = after[end + 2..].trim_start();
    }
    match (server, conn_id) {
        (Some(s), Some(c)) if !s.is_empty() => Ok((s, c)),
        _ => Err(bad("server and conn_id are required")),
    }
}

/// Appends one data frame, length included.
pub fn encode_data(
    out: &mut Vec<u8>,
    clock_us: u64,
    key: &[u8],
    term: &[u8],
) -> Result<(), FrameError> {
    let key_len = u16::try_from(key.len())
        .map_err(|_| FrameError::Malformed(format!("worker key of {} bytes", key.len())))?;
    let size = 8 + 2 + key.len() + term.len();
    let size32 = u32::try_from(size).map_err(|_| FrameError::Oversized {
        size,
        max: u32::MAX as usize,
    })?;
    out.reserve(4 + size);
    out.extend_from_slice(&size32.to_be_bytes());
    out.extend_from_slice(&clock_us.to_be_bytes());
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(term);
    Ok(())
}

#[derive(Debug, PartialEq)]
pub struct Data<'a> {
    pub clock_us: u64,
    pub key: &'a [u8],
    pub term: &'a [u8],
}

pub fn parse_data(frame: &[u8]) -> Result<Data<'_>, FrameError> {
    if frame.len() < 10 {
        return Err(FrameError::Malformed(format!(
            "data frame of {} bytes",
            frame.len()
        )));
    }
    let clock_us = u64::from_be_bytes(frame[..8].try_into().unwrap_or_default());
    let key_len = u16::from_be_bytes([frame[8], frame[9]]) as usize;
    let rest = &frame[10..];
    if key_len > rest.len() {
        return Err(FrameError::Malformed(format!(
            "worker key of {key_len} bytes in a frame of {} bytes",
            frame.len()
        )));
    }
    Ok(Data {
        clock_us,
        key: &rest[..key_len],
        term: &rest[key_len..],
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
