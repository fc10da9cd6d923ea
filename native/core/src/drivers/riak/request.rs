//! The requests `mongoose_riak` sends to a riak pool, encoded on the
//! caller's thread into one PBC message, and the answers read back.
//!
//! Requests (`Type` a bucket type binary or `undefined`, `Opts` a list of
//! `{Field, Value}` named as the fields of the request message, quorums
//! already as numbers):
//!
//! - `{get, Type, Bucket, Key, Opts}` → `{ok, Vclock, Contents}`,
//!   `{error, notfound}`, `unchanged`
//! - `{put, Type, Bucket, Key, Vclock, Content, Opts}` → `ok` or
//!   `{ok, Key, Vclock, Contents}` (what the server sent back)
//! - `{delete, Type, Bucket, Key, Opts}` → `ok`
//! - `{list_keys, Type, Bucket, Opts}`, `{list_buckets, Type, Opts}` →
//!   `{ok, [binary()]}`, gathered from every streamed message
//! - `{index, Type, Bucket, Index, {eq, Key} | {range, Min, Max}, Opts}` →
//!   `{ok, Keys, [{Term, Key}], Continuation}`
//! - `{search, Index, Query, Opts}` → `{ok, [[{Field, Value}]], MaxScore, NumFound}`
//! - `{mapred, Request, ContentType}` → `{ok, [{Phase, Response}]}` in order
//! - `{dt_fetch, BucketType, Bucket, Key, Opts}` → `{ok, DataType, Value, Context}`
//!   or `{error, {notfound, DataType}}`
//! - `{dt_update, BucketType, Bucket, Key, Context, DataType, Op, Opts}` with
//!   riakc's operation terms → `ok`, `{ok, Key}`, `{ok, {DataType, Value,
//!   Context}}` or `{ok, Key, {DataType, Value, Context}}`
//!
//! A content is `{Meta, Value}` with `Meta` a list of `{Field, Value}`
//! named as RpbContent's fields (`content_type`, `links` as `[{Bucket,
//! Key, Tag}]`, `usermeta` and `indexes` as `[{Key, Value}]`, ...).
//! `mongoose_riak` turns these into riakc's records. Any server error is
//! `{error, Message}` (`{error, {Code, Message}}` for a code above 1), as
//! riakc answers it.

use prost::Message;

use super::pb::*;
use crate::error::{Error, Result};
use crate::term::Term;

/// One encoded request and how its answer is read.
pub struct RiakRequest {
    pub code: u8,
    pub body: Vec<u8>,
    pub expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    Get,
    Put,
    Delete,
    /// Streamed until `done`: keys or buckets, gathered into one list.
    ListKeys,
    ListBuckets,
    MapRed,
    Index,
    Search,
    DtFetch,
    DtUpdate {
        kind: DataType,
        return_body: bool,
    },
}

impl Expect {
    /// The message code of a successful answer.
    pub fn response_code(self) -> u8 {
        match self {
            Expect::Get => GET_RESP,
            Expect::Put => PUT_RESP,
            Expect::Delete => DEL_RESP,
            Expect::ListKeys => LIST_KEYS_RESP,
            Expect::ListBuckets => LIST_BUCKETS_RESP,
            Expect::MapRed => MAP_RED_RESP,
            Expect::Index => INDEX_RESP,
            Expect::Search => SEARCH_QUERY_RESP,
            Expect::DtFetch => DT_FETCH_RESP,
            Expect::DtUpdate { .. } => DT_UPDATE_RESP,
        }
    }

    pub fn streamed(self) -> bool {
        matches!(
            self,
            Expect::ListKeys | Expect::ListBuckets | Expect::MapRed
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataType {
    Counter,
    Set,
    Map,
    Hll,
    Gset,
}

impl DataType {
    fn name(self) -> &'static str {
        match self {
            DataType::Counter => "counter",
            DataType::Set => "set",
            DataType::Map => "map",
            DataType::Hll => "hll",
            DataType::Gset => "gset",
        }
    }

    fn from_pb(code: i32) -> Option<DataType> {
        Some(match code {
            DT_COUNTER => DataType::Counter,
            DT_SET => DataType::Set,
            DT_MAP => DataType::Map,
            DT_HLL => DataType::Hll,
            DT_GSET => DataType::Gset,
            _ => return None,
        })
    }
}

fn bad(msg: String) -> Error {
    Error::BadRequest(msg)
}

const FORMS: &str = "get, put, delete, list_keys, list_buckets, index, search, mapred, \
                     dt_fetch or dt_update (see mongoose_riak)";

impl RiakRequest {
    pub fn parse(request: &Term) -> Result<RiakRequest> {
        let Term::Tuple(items) = request else {
            return Err(bad(format!(
                "expected a request tuple, one of {FORMS}, got {}",
                request.describe()
            )));
        };
        let op = items.first().and_then(Term::as_atom).unwrap_or("");
        let args = &items[1.min(items.len())..];
        let (code, body, expect) = match (op, args) {
            ("get", [t, b, k, opts]) => {
                let mut o = Opts::new(opts)?;
                let req = RpbGetReq {
                    r#type: bucket_type(t)?,
                    bucket: name(b, "bucket")?,
                    key: name(k, "key")?,
                    r: o.u32("r")?,
                    pr: o.u32("pr")?,
                    basic_quorum: o.bool("basic_quorum")?,
                    notfound_ok: o.bool("notfound_ok")?,
                    if_modified: o.bytes("if_modified")?,
                    head: o.bool("head")?,
                    deletedvclock: o.bool("deletedvclock")?,
                    timeout: o.u32("timeout")?,
                    sloppy_quorum: o.bool("sloppy_quorum")?,
                    n_val: o.u32("n_val")?,
                };
                o.done()?;
                (GET_REQ, req.encode_to_vec(), Expect::Get)
            }
            ("put", [t, b, k, vclock, content, opts]) => {
                let mut o = Opts::new(opts)?;
                let req = RpbPutReq {
                    r#type: bucket_type(t)?,
                    bucket: name(b, "bucket")?,
                    key: optional(k, "key")?,
                    vclock: optional(vclock, "vclock")?,
                    content: encode_content(content)?,
                    w: o.u32("w")?,
                    dw: o.u32("dw")?,
                    pw: o.u32("pw")?,
                    return_body: o.bool("return_body")?,
                    return_head: o.bool("return_head")?,
                    if_not_modified: o.bool("if_not_modified")?,
                    if_none_match: o.bool("if_none_match")?,
                    timeout: o.u32("timeout")?,
                    asis: o.bool("asis")?,
                    sloppy_quorum: o.bool("sloppy_quorum")?,
                    n_val: o.u32("n_val")?,
                };
                o.done()?;
                (PUT_REQ, req.encode_to_vec(), Expect::Put)
            }
            ("delete", [t, b, k, opts]) => {
                let mut o = Opts::new(opts)?;
                let req = RpbDelReq {
                    r#type: bucket_type(t)?,
                    bucket: name(b, "bucket")?,
                    key: name(k, "key")?,
                    rw: o.u32("rw")?,
                    vclock: o.bytes("vclock")?,
                    r: o.u32("r")?,
                    w: o.u32("w")?,
                    pr: o.u32("pr")?,
                    pw: o.u32("pw")?,
                    dw: o.u32("dw")?,
                    timeout: o.u32("timeout")?,
                    sloppy_quorum: o.bool("sloppy_quorum")?,
                    n_val: o.u32("n_val")?,
                };
                o.done()?;
                (DEL_REQ, req.encode_to_vec(), Expect::Delete)
            }
            ("list_keys", [t, b, opts]) => {
                let mut o = Opts::new(opts)?;
                let req = RpbListKeysReq {
                    r#type: bucket_type(t)?,
                    bucket: name(b, "bucket")?,
                    timeout: o.u32("timeout")?,
                };
                o.done()?;
                (LIST_KEYS_REQ, req.encode_to_vec(), Expect::ListKeys)
            }
            ("list_buckets", [t, opts]) => {
                let mut o = Opts::new(opts)?;
                let req = RpbListBucketsReq {
                    r#type: bucket_type(t)?,
                    timeout: o.u32("timeout")?,
                    stream: Some(true),
                };
                o.done()?;
                (LIST_BUCKETS_REQ, req.encode_to_vec(), Expect::ListBuckets)
            }
            ("index", [t, b, index, query, opts]) => {
                let mut o = Opts::new(opts)?;
                let (qtype, key, range_min, range_max) = match query {
                    Term::Tuple(q) => match q.as_slice() {
                        [eq, k] if eq.as_atom() == Some("eq") => {
                            (INDEX_EQ, Some(name(k, "index key")?), None, None)
                        }
                        [range, min, max] if range.as_atom() == Some("range") => (
                            INDEX_RANGE,
                            None,
                            Some(bytes(min, "range start")?),
                            Some(bytes(max, "range end")?),
                        ),
                        _ => return Err(index_query(query)),
                    },
                    _ => return Err(index_query(query)),
                };
                let req = RpbIndexReq {
                    r#type: bucket_type(t)?,
                    bucket: name(b, "bucket")?,
                    index: name(index, "index")?,
                    qtype,
                    key,
                    range_min,
                    range_max,
                    return_terms: o.bool("return_terms")?,
                    stream: None,
                    max_results: o.u32("max_results")?,
                    continuation: o.bytes("continuation")?,
                    timeout: o.u32("timeout")?,
                    term_regex: o.bytes("term_regex")?,
                    pagination_sort: o.bool("pagination_sort")?,
                };
                o.done()?;
                (INDEX_REQ, req.encode_to_vec(), Expect::Index)
            }
            ("search", [index, q, opts]) => {
                let mut o = Opts::new(opts)?;
                let req = RpbSearchQueryReq {
                    q: bytes(q, "query")?,
                    index: name(index, "search index")?,
                    rows: o.u32("rows")?,
                    start: o.u32("start")?,
                    sort: o.bytes("sort")?,
                    filter: o.bytes("filter")?,
                    df: o.bytes("df")?,
                    op: o.bytes("op")?,
                    fl: o.bytes_list("fl")?,
                    presort: o.bytes("presort")?,
                };
                o.done()?;
                (SEARCH_QUERY_REQ, req.encode_to_vec(), Expect::Search)
            }
            ("mapred", [request, content_type]) => {
                let req = RpbMapRedReq {
                    request: bytes(request, "mapred request")?,
                    content_type: name(content_type, "content type")?,
                };
                (MAP_RED_REQ, req.encode_to_vec(), Expect::MapRed)
            }
            ("dt_fetch", [t, b, k, opts]) => {
                let mut o = Opts::new(opts)?;
                let req = DtFetchReq {
                    r#type: name(t, "bucket type")?,
                    bucket: name(b, "bucket")?,
                    key: name(k, "key")?,
                    r: o.u32("r")?,
                    pr: o.u32("pr")?,
                    basic_quorum: o.bool("basic_quorum")?,
                    notfound_ok: o.bool("notfound_ok")?,
                    timeout: o.u32("timeout")?,
                    sloppy_quorum: o.bool("sloppy_quorum")?,
                    n_val: o.u32("n_val")?,
                    include_context: o.bool("include_context")?,
                };
                o.done()?;
                (DT_FETCH_REQ, req.encode_to_vec(), Expect::DtFetch)
            }
            ("dt_update", [t, b, k, context, dtype, op, opts]) => {
                let mut o = Opts::new(opts)?;
                let (kind, op) = encode_operation(dtype, op)?;
                let req = DtUpdateReq {
                    r#type: name(t, "bucket type")?,
                    bucket: name(b, "bucket")?,
                    key: optional(k, "key")?,
                    context: optional(context, "context")?,
                    op,
                    w: o.u32("w")?,
                    dw: o.u32("dw")?,
                    pw: o.u32("pw")?,
                    return_body: o.bool("return_body")?,
                    timeout: o.u32("timeout")?,
                    sloppy_quorum: o.bool("sloppy_quorum")?,
                    n_val: o.u32("n_val")?,
                    include_context: o.bool("include_context")?,
                };
                o.done()?;
                let return_body = req.return_body == Some(true);
                let expect = Expect::DtUpdate { kind, return_body };
                (DT_UPDATE_REQ, req.encode_to_vec(), expect)
            }
            _ => {
                return Err(bad(format!(
                    "expected one of {FORMS} with its arguments, got {}",
                    request.describe()
                )))
            }
        };
        Ok(RiakRequest { code, body, expect })
    }
}

fn index_query(q: &Term) -> Error {
    bad(format!(
        "an index query is {{eq, Key}} or {{range, Min, Max}}, got {}",
        q.describe()
    ))
}

/// Bytes from a binary or an iolist.
fn bytes(t: &Term, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match t {
        Term::Bin(_) | Term::List(_) if t.to_iodata(&mut out) => Ok(out),
        _ => Err(bad(format!(
            "the {what} must be a binary, got {}",
            t.describe()
        ))),
    }
}

/// A non-empty name (bucket, key, index): Riak refuses empty ones.
fn name(t: &Term, what: &str) -> Result<Vec<u8>> {
    let b = bytes(t, what)?;
    if b.is_empty() {
        return Err(bad(format!("the {what} must not be empty")));
    }
    Ok(b)
}

fn optional(t: &Term, what: &str) -> Result<Option<Vec<u8>>> {
    match t.as_atom() {
        Some("undefined") => Ok(None),
        _ => bytes(t, what).map(Some),
    }
}

fn bucket_type(t: &Term) -> Result<Option<Vec<u8>>> {
    match t.as_atom() {
        Some("undefined") => Ok(None),
        _ => name(t, "bucket type").map(Some),
    }
}

/// A request's options, each read once; any left over is refused.
struct Opts<'a> {
    items: Vec<(&'a str, &'a Term)>,
}

impl<'a> Opts<'a> {
    fn new(t: &'a Term) -> Result<Opts<'a>> {
        let Term::List(list) = t else {
            return Err(bad(format!(
                "the options must be a list, got {}",
                t.describe()
            )));
        };
        let items = list
            .iter()
            .map(|item| match item {
                Term::Tuple(kv) if kv.len() == 2 => kv[0]
                    .as_atom()
                    .map(|k| (k, &kv[1]))
                    .ok_or_else(|| option_form(item)),
                _ => Err(option_form(item)),
            })
            .collect::<Result<_>>()?;
        Ok(Opts { items })
    }

    fn take(&mut self, key: &str) -> Option<&'a Term> {
        let i = self.items.iter().position(|(k, _)| *k == key)?;
        Some(self.items.remove(i).1)
    }

    fn u32(&mut self, key: &str) -> Result<Option<u32>> {
        self.take(key)
            .filter(|t| t.as_atom() != Some("undefined"))
            .map(|t| match t {
                Term::Int(i) => u32::try_from(*i).map_err(|_| option_value(key, t)),
                _ => Err(option_value(key, t)),
            })
            .transpose()
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        self.take(key)
            .filter(|t| t.as_atom() != Some("undefined"))
            .map(|t| match t.as_atom() {
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                _ => Err(option_value(key, t)),
            })
            .transpose()
    }

    fn bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.take(key)
            .filter(|t| t.as_atom() != Some("undefined"))
            .map(|t| bytes(t, key))
            .transpose()
    }

    fn bytes_list(&mut self, key: &str) -> Result<Vec<Vec<u8>>> {
        match self.take(key) {
            None => Ok(vec![]),
            Some(Term::List(l)) => l.iter().map(|t| bytes(t, key)).collect(),
            Some(t) => Err(option_value(key, t)),
        }
    }

    fn done(self) -> Result<()> {
        match self.items.first() {
            None => Ok(()),
            Some((k, _)) => Err(bad(format!("unknown option {k}"))),
        }
    }
}

fn option_form(t: &Term) -> Error {
    bad(format!(
        "an option is {{Name, Value}} with Name an atom, got {}",
        t.describe()
    ))
}

fn option_value(key: &str, t: &Term) -> Error {
    bad(format!("option {key}: unexpected value {}", t.describe()))
}

// ---------------------------------------------------------------------------
// Contents
// ---------------------------------------------------------------------------

fn encode_content(t: &Term) -> Result<RpbContent> {
    let form = || {
        bad(format!(
            "a content is {{Meta, Value}} with Meta a list of {{Field, Value}}, got {}",
            t.describe()
        ))
    };
    let Term::Tuple(mv) = t else {
        return Err(form());
    };
    let [meta, value] = mv.as_slice() else {
        return Err(form());
    };
    let mut o = Opts::new(meta)?;
    let pairs = |o: &mut Opts, key: &str| -> Result<Vec<RpbPair>> {
        match o.take(key) {
            None => Ok(vec![]),
            Some(Term::List(l)) => l
                .iter()
                .map(|p| match p {
                    Term::Tuple(kv) if kv.len() == 2 => Ok(RpbPair {
                        key: bytes(&kv[0], key)?,
                        value: optional(&kv[1], key)?,
                    }),
                    _ => Err(option_value(key, p)),
                })
                .collect(),
            Some(other) => Err(option_value(key, other)),
        }
    };
    let links = match o.take("links") {
        None => vec![],
        Some(Term::List(l)) => l
            .iter()
            .map(|link| match link {
                Term::Tuple(bkt) if bkt.len() == 3 => Ok(RpbLink {
                    bucket: optional(&bkt[0], "links")?,
                    key: optional(&bkt[1], "links")?,
                    tag: optional(&bkt[2], "links")?,
                }),
                _ => Err(option_value("links", link)),
            })
            .collect::<Result<_>>()?,
        Some(other) => return Err(option_value("links", other)),
    };
    let content = RpbContent {
        value: bytes(value, "value")?,
        content_type: o.bytes("content_type")?,
        charset: o.bytes("charset")?,
        content_encoding: o.bytes("content_encoding")?,
        vtag: o.bytes("vtag")?,
        links,
        last_mod: o.u32("last_mod")?,
        last_mod_usecs: o.u32("last_mod_usecs")?,
        usermeta: pairs(&mut o, "usermeta")?,
        indexes: pairs(&mut o, "indexes")?,
        deleted: o.bool("deleted")?,
        ttl: o.u32("ttl")?,
    };
    o.done()?;
    Ok(content)
}

fn opt_bin(b: Option<Vec<u8>>) -> Term {
    b.map_or_else(|| Term::atom("undefined"), Term::Bin)
}

fn pair(k: &str, v: Term) -> Term {
    Term::tuple(vec![Term::atom(k), v])
}

fn decode_pairs(pairs: Vec<RpbPair>) -> Term {
    Term::List(
        pairs
            .into_iter()
            .map(|p| Term::tuple(vec![Term::Bin(p.key), opt_bin(p.value)]))
            .collect(),
    )
}

fn decode_content(c: RpbContent) -> Term {
    let mut meta = Vec::new();
    let mut bin = |k: &str, v: Option<Vec<u8>>| {
        if let Some(v) = v {
            meta.push(pair(k, Term::Bin(v)));
        }
    };
    bin("content_type", c.content_type);
    bin("charset", c.charset);
    bin("content_encoding", c.content_encoding);
    bin("vtag", c.vtag);
    if !c.links.is_empty() {
        let links = c
            .links
            .into_iter()
            .map(|l| Term::tuple(vec![opt_bin(l.bucket), opt_bin(l.key), opt_bin(l.tag)]))
            .collect();
        meta.push(pair("links", Term::List(links)));
    }
    if let Some(m) = c.last_mod {
        meta.push(pair("last_mod", Term::Int(i64::from(m))));
    }
    if let Some(u) = c.last_mod_usecs {
        meta.push(pair("last_mod_usecs", Term::Int(i64::from(u))));
    }
    if !c.usermeta.is_empty() {
        meta.push(pair("usermeta", decode_pairs(c.usermeta)));
    }
    if !c.indexes.is_empty() {
        meta.push(pair("indexes", decode_pairs(c.indexes)));
    }
    if let Some(d) = c.deleted {
        meta.push(pair("deleted", Term::from(d)));
    }
    if let Some(t) = c.ttl {
        meta.push(pair("ttl", Term::Int(i64::from(t))));
    }
    Term::tuple(vec![Term::List(meta), Term::Bin(c.value)])
}

fn decode_contents(cs: Vec<RpbContent>) -> Term {
    Term::List(cs.into_iter().map(decode_content).collect())
}

// ---------------------------------------------------------------------------
// Data types: riakc's operations in, riak_pb_dt_codec's values out
// ---------------------------------------------------------------------------

fn encode_operation(dtype: &Term, op: &Term) -> Result<(DataType, DtOp)> {
    let none = DtOp {
        counter_op: None,
        set_op: None,
        map_op: None,
    };
    Ok(match dtype.as_atom() {
        Some("counter") => (
            DataType::Counter,
            DtOp {
                counter_op: Some(counter_op(op)?),
                ..none
            },
        ),
        Some("set") => (
            DataType::Set,
            DtOp {
                set_op: Some(set_op(op)?),
                ..none
            },
        ),
        Some("map") => (
            DataType::Map,
            DtOp {
                map_op: Some(map_op(op, 0)?),
                ..none
            },
        ),
        _ => {
            return Err(bad(format!(
                "the data type to update must be counter, set or map, got {}",
                dtype.describe()
            )))
        }
    })
}

fn op_error(what: &str, op: &Term) -> Error {
    bad(format!("not a {what} operation: {}", op.describe()))
}

fn counter_op(op: &Term) -> Result<CounterOp> {
    let increment = match op {
        Term::Atom(a) if a == "increment" => None,
        Term::Atom(a) if a == "decrement" => Some(-1),
        Term::Tuple(t) => match t.as_slice() {
            [a, Term::Int(n)] if a.as_atom() == Some("increment") => Some(*n),
            [a, Term::Int(n)] if a.as_atom() == Some("decrement") => Some(-*n),
            _ => return Err(op_error("counter", op)),
        },
        _ => return Err(op_error("counter", op)),
    };
    Ok(CounterOp { increment })
}

fn members(t: &Term, op: &Term) -> Result<Vec<Vec<u8>>> {
    match t {
        Term::List(l) => l.iter().map(|m| bytes(m, "set member")).collect(),
        _ => Err(op_error("set", op)),
    }
}

fn set_op(op: &Term) -> Result<SetOp> {
    let mut set = SetOp {
        adds: vec![],
        removes: vec![],
    };
    let Term::Tuple(t) = op else {
        return Err(op_error("set", op));
    };
    let one = |kind: &Term, arg: &Term, set: &mut SetOp| -> Result<()> {
        match kind.as_atom() {
            Some("add") => set.adds.push(bytes(arg, "set member")?),
            Some("add_all") => set.adds.extend(members(arg, op)?),
            Some("remove") => set.removes.push(bytes(arg, "set member")?),
            Some("remove_all") => set.removes.extend(members(arg, op)?),
            _ => return Err(op_error("set", op)),
        }
        Ok(())
    };
    match t.as_slice() {
        [u, Term::List(ops)] if u.as_atom() == Some("update") => {
            for o in ops {
                match o {
                    Term::Tuple(kv) if kv.len() == 2 => one(&kv[0], &kv[1], &mut set)?,
                    _ => return Err(op_error("set", op)),
                }
            }
        }
        [kind, arg] => one(kind, arg, &mut set)?,
        _ => return Err(op_error("set", op)),
    }
    Ok(set)
}

/// Deeper maps are refused rather than walked on the caller's stack.
const MAX_MAP_DEPTH: usize = 64;

fn map_field(key: &Term) -> Result<(MapField, &str)> {
    let form = || {
        bad(format!(
            "a map field is {{Name, counter | set | register | flag | map}}, got {}",
            key.describe()
        ))
    };
    let Term::Tuple(nt) = key else {
        return Err(form());
    };
    let [n, t] = nt.as_slice() else {
        return Err(form());
    };
    let (code, kind) = match t.as_atom() {
        Some("counter") => (FIELD_COUNTER, "counter"),
        Some("set") => (FIELD_SET, "set"),
        Some("register") => (FIELD_REGISTER, "register"),
        Some("flag") => (FIELD_FLAG, "flag"),
        Some("map") => (FIELD_MAP, "map"),
        _ => return Err(form()),
    };
    Ok((
        MapField {
            name: bytes(n, "map field name")?,
            r#type: code,
        },
        kind,
    ))
}

fn map_op(op: &Term, depth: usize) -> Result<MapOp> {
    if depth > MAX_MAP_DEPTH {
        return Err(bad(format!(
            "maps nested deeper than {MAX_MAP_DEPTH} levels"
        )));
    }
    let mut out = MapOp {
        removes: vec![],
        updates: vec![],
    };
    let ops: Vec<&Term> = match op {
        Term::Tuple(t) => match t.as_slice() {
            [u, Term::List(ops)] if u.as_atom() == Some("update") => ops.iter().collect(),
            _ => vec![op],
        },
        _ => return Err(op_error("map", op)),
    };
    for o in ops {
        let Term::Tuple(t) = o else {
            return Err(op_error("map", o));
        };
        match t.as_slice() {
            [r, field] if r.as_atom() == Some("remove") => out.removes.push(map_field(field)?.0),
            [u, field, Term::List(field_ops)] if u.as_atom() == Some("update") => {
                for fo in field_ops {
                    out.updates.push(map_update(field, fo, depth)?);
                }
            }
            [u, field, field_op] if u.as_atom() == Some("update") => {
                out.updates.push(map_update(field, field_op, depth)?)
            }
            _ => return Err(op_error("map", o)),
        }
    }
    Ok(out)
}

fn map_update(field: &Term, op: &Term, depth: usize) -> Result<MapUpdate> {
    let (field, kind) = map_field(field)?;
    let mut u = MapUpdate {
        field,
        counter_op: None,
        set_op: None,
        register_op: None,
        flag_op: None,
        map_op: None,
    };
    match kind {
        "counter" => u.counter_op = Some(counter_op(op)?),
        "set" => u.set_op = Some(set_op(op)?),
        "register" => match op {
            Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("assign") => {
                u.register_op = Some(bytes(&t[1], "register value")?)
            }
            _ => return Err(op_error("register", op)),
        },
        "flag" => {
            u.flag_op = Some(match op.as_atom() {
                Some("enable") => FLAG_ENABLE,
                Some("disable") => FLAG_DISABLE,
                _ => return Err(op_error("flag", op)),
            })
        }
        _ => u.map_op = Some(map_op(op, depth + 1)?),
    }
    Ok(u)
}

fn binaries(items: Vec<Vec<u8>>) -> Term {
    Term::List(items.into_iter().map(Term::Bin).collect())
}

/// `[{{Name, Type}, Value}]`, as riak_pb_dt_codec decodes map entries.
fn map_entries(entries: Vec<MapEntry>) -> Term {
    Term::List(
        entries
            .into_iter()
            .map(|e| {
                let (kind, value) = match e.field.r#type {
                    FIELD_COUNTER => (
                        "counter",
                        e.counter_value.map_or(Term::atom("undefined"), Term::Int),
                    ),
                    FIELD_SET => ("set", binaries(e.set_value)),
                    FIELD_REGISTER => ("register", opt_bin(e.register_value)),
                    FIELD_FLAG => (
                        "flag",
                        e.flag_value.map_or(Term::atom("undefined"), Term::from),
                    ),
                    _ => ("map", map_entries(e.map_value)),
                };
                Term::tuple(vec![
                    Term::tuple(vec![Term::Bin(e.field.name), Term::atom(kind)]),
                    value,
                ])
            })
            .collect(),
    )
}

fn hll(v: Option<u64>) -> Term {
    v.map_or(Term::atom("undefined"), |n| {
        Term::Int(i64::try_from(n).unwrap_or(i64::MAX))
    })
}

fn dt_value(kind: DataType, v: DtValue) -> Term {
    match kind {
        DataType::Counter => v.counter_value.map_or(Term::atom("undefined"), Term::Int),
        DataType::Set => binaries(v.set_value),
        DataType::Map => map_entries(v.map_value),
        DataType::Hll => hll(v.hll_value),
        DataType::Gset => binaries(v.gset_value),
    }
}

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

fn malformed(what: &str, e: prost::DecodeError) -> Error {
    Error::ConnectionLost(format!("riak: a malformed {what} from the server: {e}"))
}

/// `{error, Message}` or `{error, {Code, Message}}`, as riakc formats
/// RpbErrorResp.
pub fn server_error(body: &[u8]) -> Result<Term> {
    let e = RpbErrorResp::decode(body).map_err(|e| malformed("RpbErrorResp", e))?;
    let msg = Term::Bin(e.errmsg);
    Ok(Term::error(match e.errcode {
        0 | 1 => msg,
        code => Term::tuple(vec![Term::Int(i64::from(code)), msg]),
    }))
}

/// Folds the messages of a streamed answer; `true` once the last came.
pub struct Gathered {
    items: Vec<Term>,
}

impl Gathered {
    pub fn new() -> Gathered {
        Gathered { items: Vec::new() }
    }

    pub fn add(&mut self, expect: Expect, body: &[u8]) -> Result<bool> {
        Ok(match expect {
            Expect::ListKeys => {
                let m =
                    RpbListKeysResp::decode(body).map_err(|e| malformed("RpbListKeysResp", e))?;
                self.items.extend(m.keys.into_iter().map(Term::Bin));
                m.done == Some(true)
            }
            Expect::ListBuckets => {
                let m = RpbListBucketsResp::decode(body)
                    .map_err(|e| malformed("RpbListBucketsResp", e))?;
                self.items.extend(m.buckets.into_iter().map(Term::Bin));
                m.done == Some(true)
            }
            _ => {
                let m = RpbMapRedResp::decode(body).map_err(|e| malformed("RpbMapRedResp", e))?;
                if let Some(data) = m.response {
                    let phase = Term::Int(i64::from(m.phase.unwrap_or(0)));
                    self.items.push(Term::tuple(vec![phase, Term::Bin(data)]));
                }
                m.done == Some(true)
            }
        })
    }

    pub fn finish(self) -> Term {
        Term::ok(Term::List(self.items))
    }
}

/// The answer to a request answered in one message.
pub fn answer(expect: Expect, body: &[u8]) -> Result<Term> {
    Ok(match expect {
        // An empty body is Riak's "code only" answer.
        Expect::Get if body.is_empty() => Term::error(Term::atom("notfound")),
        Expect::Get => {
            let m = RpbGetResp::decode(body).map_err(|e| malformed("RpbGetResp", e))?;
            if m.unchanged == Some(true) {
                Term::atom("unchanged")
            } else if m.content.is_empty() {
                // A tombstone, or deletedvclock's notfound: riakc answers
                // notfound here too.
                Term::error(Term::atom("notfound"))
            } else {
                Term::tuple(vec![
                    Term::atom("ok"),
                    opt_bin(m.vclock),
                    decode_contents(m.content),
                ])
            }
        }
        Expect::Put if body.is_empty() => Term::atom("ok"),
        Expect::Put => {
            let m = RpbPutResp::decode(body).map_err(|e| malformed("RpbPutResp", e))?;
            Term::tuple(vec![
                Term::atom("ok"),
                opt_bin(m.key),
                opt_bin(m.vclock),
                decode_contents(m.content),
            ])
        }
        Expect::Delete => Term::atom("ok"),
        Expect::Index => {
            let m = RpbIndexResp::decode(body).map_err(|e| malformed("RpbIndexResp", e))?;
            let results = m
                .results
                .into_iter()
                .map(|p| Term::tuple(vec![Term::Bin(p.key), opt_bin(p.value)]))
                .collect();
            Term::tuple(vec![
                Term::atom("ok"),
                binaries(m.keys),
                Term::List(results),
                opt_bin(m.continuation),
            ])
        }
        Expect::Search if body.is_empty() => Term::error(Term::atom("notfound")),
        Expect::Search => {
            let m =
                RpbSearchQueryResp::decode(body).map_err(|e| malformed("RpbSearchQueryResp", e))?;
            let docs = m.docs.into_iter().map(|d| decode_pairs(d.fields)).collect();
            Term::tuple(vec![
                Term::atom("ok"),
                Term::List(docs),
                m.max_score
                    .map_or(Term::atom("undefined"), |s| Term::Float(f64::from(s))),
                m.num_found
                    .map_or(Term::atom("undefined"), |n| Term::Int(i64::from(n))),
            ])
        }
        Expect::DtFetch => {
            let m = DtFetchResp::decode(body).map_err(|e| malformed("DtFetchResp", e))?;
            let kind = DataType::from_pb(m.r#type).ok_or_else(|| {
                Error::ConnectionLost(format!(
                    "riak: unknown data type {} in DtFetchResp",
                    m.r#type
                ))
            })?;
            match m.value {
                None => Term::error(Term::tuple(vec![
                    Term::atom("notfound"),
                    Term::atom(kind.name()),
                ])),
                Some(v) => Term::tuple(vec![
                    Term::atom("ok"),
                    Term::atom(kind.name()),
                    dt_value(kind, v),
                    opt_bin(m.context),
                ]),
            }
        }
        Expect::DtUpdate { .. } if body.is_empty() => Term::atom("ok"),
        Expect::DtUpdate { kind, return_body } => {
            let m = DtUpdateResp::decode(body).map_err(|e| malformed("DtUpdateResp", e))?;
            if !return_body {
                return Ok(match m.key {
                    None => Term::atom("ok"),
                    Some(k) => Term::ok(Term::Bin(k)),
                });
            }
            let value = match kind {
                DataType::Counter => m.counter_value.map_or(Term::atom("undefined"), Term::Int),
                DataType::Set => binaries(m.set_value),
                DataType::Map => map_entries(m.map_value),
                DataType::Hll => hll(m.hll_value),
                DataType::Gset => binaries(m.gset_value),
            };
            let body = Term::tuple(vec![Term::atom(kind.name()), value, opt_bin(m.context)]);
            match m.key {
                None => Term::ok(body),
                Some(k) => Term::tuple(vec![Term::atom("ok"), Term::Bin(k), body]),
            }
        }
        Expect::ListKeys | Expect::ListBuckets | Expect::MapRed => {
            return Err(Error::Internal("a streamed answer read as one".into()))
        }
    })
}
