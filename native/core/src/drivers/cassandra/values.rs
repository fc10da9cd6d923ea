//! Values between Erlang terms and CQL, converted as cqerl (MongooseIM's
//! Cassandra client) converts them: text and blobs are binaries, integers
//! of every width, timestamps (milliseconds) and times (nanoseconds) are
//! integers, uuids and timeuuids 16-byte binaries, dates `{Y, M, D}`,
//! decimals `{Unscaled, Scale}`, inets address tuples, lists and sets
//! lists, maps maps, user types maps with atom keys, tuples lists, and null
//! is `null`.

use std::net::IpAddr;

use scylla::frame::response::result::{CollectionType, ColumnType, NativeType};
use scylla::value::CqlValue;

use crate::term::Term;

/// Why a value cannot be bound: the caller's mistake, reported with the
/// marker's name.
pub type Refusal = String;

/// Days between 0000-03-01 and 1970-01-01 in the proleptic Gregorian
/// calendar, for the civil-date conversions below.
const EPOCH_SHIFT: i64 = 719_468;

/// The bytes of `term` as a value of `ty` (`None`: null), as cqerl encodes it.
pub fn encode(term: &Term, ty: &ColumnType) -> Result<Option<Vec<u8>>, Refusal> {
    if term.as_atom() == Some("null") {
        return Ok(None);
    }
    let wrong = |expected: &str| Err(format!("expected {expected}, got {}", term.describe()));
    let bytes = match ty {
        ColumnType::Native(native) => match native {
            NativeType::Ascii | NativeType::Text => match term.as_text() {
                Some(s) if *native == NativeType::Text || s.is_ascii() => s.into_bytes(),
                _ if *native == NativeType::Ascii => return wrong("ASCII text"),
                _ => return wrong("UTF-8 text (a binary, string or atom)"),
            },
            NativeType::Blob => match term {
                Term::Bin(b) => b.clone(),
                _ => return wrong("a binary"),
            },
            NativeType::Boolean => match term.as_atom() {
                Some("true") => vec![1],
                Some("false") => vec![0],
                _ => return wrong("true or false"),
            },
            NativeType::BigInt | NativeType::Counter | NativeType::Timestamp | NativeType::Time => {
                match integer(term) {
                    Some(i) => i.to_be_bytes().to_vec(),
                    None => return wrong("an integer"),
                }
            }
            NativeType::Int => match integer(term).and_then(|i| i32::try_from(i).ok()) {
                Some(i) => i.to_be_bytes().to_vec(),
                None => return wrong("a 32-bit integer"),
            },
            NativeType::SmallInt => match integer(term).and_then(|i| i16::try_from(i).ok()) {
                Some(i) => i.to_be_bytes().to_vec(),
                None => return wrong("a 16-bit integer"),
            },
            NativeType::TinyInt => match integer(term).and_then(|i| i8::try_from(i).ok()) {
                Some(i) => i.to_be_bytes().to_vec(),
                None => return wrong("an 8-bit integer"),
            },
            NativeType::Varint => match term {
                Term::Int(i) => varint(*i),
                _ => return wrong("an integer"),
            },
            NativeType::Double => match number(term) {
                Some(f) => f.to_be_bytes().to_vec(),
                None => return wrong("a number"),
            },
            NativeType::Float => match number(term) {
                Some(f) => (f as f32).to_be_bytes().to_vec(),
                None => return wrong("a number"),
            },
            NativeType::Uuid | NativeType::Timeuuid => match uuid(term) {
                Some(u) => u.to_vec(),
                None => return wrong("a 16-byte binary or a UUID's 36-character text"),
            },
            NativeType::Inet => match inet(term) {
                Some(IpAddr::V4(a)) => a.octets().to_vec(),
                Some(IpAddr::V6(a)) => a.octets().to_vec(),
                None => return wrong("an address tuple or text"),
            },
            NativeType::Date => match date(term) {
                Some(days) => days.to_be_bytes().to_vec(),
                None => return wrong("a date {Year, Month, Day}"),
            },
            NativeType::Decimal => match term {
                Term::Tuple(t) => match t.as_slice() {
                    [Term::Int(unscaled), Term::Int(scale)] if i32::try_from(*scale).is_ok() => {
                        let mut out = (*scale as i32).to_be_bytes().to_vec();
                        out.extend(varint(*unscaled));
                        out
                    }
                    _ => return wrong("a decimal {Unscaled, Scale}"),
                },
                _ => return wrong("a decimal {Unscaled, Scale}"),
            },
            _ => return Err(format!("the type {ty:?} is not supported")),
        },
        ColumnType::Collection { typ, .. } => match typ {
            CollectionType::List(item) | CollectionType::Set(item) => {
                let Term::List(items) = term else {
                    return wrong("a list");
                };
                let mut out = count(items.len())?;
                for (i, t) in items.iter().enumerate() {
                    let v = encode(t, item).map_err(|e| format!("element {}: {e}", i + 1))?;
                    cell(&mut out, v)?;
                }
                out
            }
            CollectionType::Map(k, v) => {
                let pairs: Vec<(&Term, &Term)> = match term {
                    Term::Map(pairs) => pairs.iter().map(|(a, b)| (a, b)).collect(),
                    Term::List(items) => items
                        .iter()
                        .map(|i| match i {
                            Term::Tuple(kv) if kv.len() == 2 => Ok((&kv[0], &kv[1])),
                            _ => Err(format!(
                                "expected a map or a list of {{Key, Value}}, got {}",
                                term.describe()
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return wrong("a map"),
                };
                let mut out = count(pairs.len())?;
                for (key, value) in pairs {
                    cell(&mut out, encode(key, k).map_err(|e| format!("a key: {e}"))?)?;
                    cell(
                        &mut out,
                        encode(value, v).map_err(|e| format!("a value: {e}"))?,
                    )?;
                }
                out
            }
            _ => return Err(format!("the type {ty:?} is not supported")),
        },
        _ => return Err(format!("the type {ty:?} is not supported")),
    };
    Ok(Some(bytes))
}

fn count(n: usize) -> Result<Vec<u8>, Refusal> {
    i32::try_from(n)
        .map(|n| n.to_be_bytes().to_vec())
        .map_err(|_| "too many elements".to_string())
}

/// One element of a collection: `[bytes]`, a length then the bytes.
fn cell(out: &mut Vec<u8>, value: Option<Vec<u8>>) -> Result<(), Refusal> {
    match value {
        None => out.extend((-1i32).to_be_bytes()),
        Some(b) => {
            out.extend(count(b.len())?);
            out.extend(b);
        }
    }
    Ok(())
}

/// cqerl truncates floats given for integer columns.
fn integer(term: &Term) -> Option<i64> {
    match term {
        Term::Int(i) => Some(*i),
        Term::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Some(f.trunc() as i64),
        _ => None,
    }
}

fn number(term: &Term) -> Option<f64> {
    match term {
        Term::Int(i) => Some(*i as f64),
        Term::Float(f) => Some(*f),
        _ => None,
    }
}

/// The shortest two's complement bytes of `i` (spec section 6.23).
fn varint(i: i64) -> Vec<u8> {
    let bytes = i.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

fn uuid(term: &Term) -> Option<[u8; 16]> {
    match term {
        Term::Bin(b) if b.len() == 16 => b.as_slice().try_into().ok(),
        _ => {
            let text = term.as_text()?;
            let hex: String = text.chars().filter(|c| *c != '-').collect();
            if text.len() != 36 || hex.len() != 32 {
                return None;
            }
            let mut out = [0u8; 16];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        }
    }
}

fn inet(term: &Term) -> Option<IpAddr> {
    let parts = |items: &[Term], max: i64| -> Option<Vec<i64>> {
        items
            .iter()
            .map(|t| match t {
                Term::Int(i) if (0..=max).contains(i) => Some(*i),
                _ => None,
            })
            .collect()
    };
    match term {
        Term::Tuple(items) if items.len() == 4 => {
            let p = parts(items, 255)?;
            Some(IpAddr::from([
                p[0] as u8, p[1] as u8, p[2] as u8, p[3] as u8,
            ]))
        }
        Term::Tuple(items) if items.len() == 8 => {
            let p = parts(items, 65535)?;
            let mut segs = [0u16; 8];
            for (s, v) in segs.iter_mut().zip(p) {
                *s = v as u16;
            }
            Some(IpAddr::from(segs))
        }
        _ => term.as_text()?.parse().ok(),
    }
}

/// `{Y, M, D}` as CQL's date: days since 1970-01-01, centred at 2^31.
fn date(term: &Term) -> Option<u32> {
    let Term::Tuple(items) = term else {
        return None;
    };
    let [Term::Int(y), Term::Int(m), Term::Int(d)] = items.as_slice() else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=days_in_month(*y, *m)).contains(d) {
        return None;
    }
    let days = days_from_civil(*y, *m, *d);
    u32::try_from(days + (1i64 << 31)).ok()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days_from_civil: days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - EPOCH_SHIFT
}

/// Its inverse, civil_from_days.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + EPOCH_SHIFT;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Big-endian two's complement bytes as an integer, when they fit in 64 bits.
fn signed(bytes: &[u8]) -> Option<i64> {
    if bytes.len() > 8 {
        return None;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xFF
    } else {
        0
    };
    let mut buf = [fill; 8];
    buf[8 - bytes.len()..].copy_from_slice(bytes);
    Some(i64::from_be_bytes(buf))
}

/// A column's value as cqerl gives it back (`null` for null).
pub fn decode(value: Option<CqlValue>) -> Term {
    let Some(value) = value else {
        return Term::atom("null");
    };
    match value {
        CqlValue::Ascii(s) | CqlValue::Text(s) => Term::from(s),
        CqlValue::Blob(b) => Term::Bin(b),
        CqlValue::Boolean(b) => Term::from(b),
        CqlValue::BigInt(i) => Term::Int(i),
        CqlValue::Counter(c) => Term::Int(c.0),
        CqlValue::Int(i) => Term::Int(i64::from(i)),
        CqlValue::SmallInt(i) => Term::Int(i64::from(i)),
        CqlValue::TinyInt(i) => Term::Int(i64::from(i)),
        CqlValue::Timestamp(t) => Term::Int(t.0),
        CqlValue::Time(t) => Term::Int(t.0),
        CqlValue::Date(d) => {
            let (y, m, d) = civil_from_days(i64::from(d.0) - (1i64 << 31));
            Term::tuple(vec![Term::Int(y), Term::Int(m), Term::Int(d)])
        }
        CqlValue::Double(f) => Term::Float(f),
        CqlValue::Float(f) => Term::Float(f64::from(f)),
        CqlValue::Uuid(u) => Term::bin(u.as_bytes().to_vec()),
        CqlValue::Timeuuid(u) => Term::bin(u.as_bytes().to_vec()),
        CqlValue::Inet(IpAddr::V4(a)) => Term::tuple(
            a.octets()
                .iter()
                .map(|o| Term::Int(i64::from(*o)))
                .collect(),
        ),
        CqlValue::Inet(IpAddr::V6(a)) => Term::tuple(
            a.segments()
                .iter()
                .map(|s| Term::Int(i64::from(*s)))
                .collect(),
        ),
        CqlValue::Varint(v) => {
            let bytes = v.as_signed_bytes_be_slice();
            signed(bytes).map_or_else(|| Term::bin(bytes.to_vec()), Term::Int)
        }
        CqlValue::Decimal(d) => {
            let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
            let unscaled = signed(bytes).map_or_else(|| Term::bin(bytes.to_vec()), Term::Int);
            Term::tuple(vec![unscaled, Term::Int(i64::from(scale))])
        }
        CqlValue::Duration(d) => Term::tuple(vec![
            Term::Int(i64::from(d.months)),
            Term::Int(i64::from(d.days)),
            Term::Int(d.nanoseconds),
        ]),
        CqlValue::List(items) | CqlValue::Set(items) | CqlValue::Vector(items) => {
            Term::List(items.into_iter().map(|v| decode(Some(v))).collect())
        }
        CqlValue::Map(pairs) => Term::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (decode(Some(k)), decode(Some(v))))
                .collect(),
        ),
        CqlValue::Tuple(items) => Term::List(items.into_iter().map(decode).collect()),
        CqlValue::UserDefinedType { fields, .. } => Term::Map(
            fields
                .into_iter()
                .map(|(name, v)| (Term::atom(&name), decode(v)))
                .collect(),
        ),
        CqlValue::Empty => Term::atom("null"),
        other => Term::from(format!("{other:?}")),
    }
}
