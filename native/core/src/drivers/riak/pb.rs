//! The Protocol Buffers messages of Riak's PBC API that the pool sends and
//! reads, written from riak_pb's `riak.proto`, `riak_kv.proto`,
//! `riak_search.proto` and `riak_dt.proto` (field numbers and types as
//! there; `required` fields are plain and always sent, even when zero or
//! empty, `optional` ones `Option`), and the message codes of its
//! `riak_pb_messages.csv`.

use prost::Message;

pub const ERROR_RESP: u8 = 0;
pub const GET_REQ: u8 = 9;
pub const GET_RESP: u8 = 10;
pub const PUT_REQ: u8 = 11;
pub const PUT_RESP: u8 = 12;
pub const DEL_REQ: u8 = 13;
pub const DEL_RESP: u8 = 14;
pub const LIST_BUCKETS_REQ: u8 = 15;
pub const LIST_BUCKETS_RESP: u8 = 16;
pub const LIST_KEYS_REQ: u8 = 17;
pub const LIST_KEYS_RESP: u8 = 18;
pub const MAP_RED_REQ: u8 = 23;
pub const MAP_RED_RESP: u8 = 24;
pub const INDEX_REQ: u8 = 25;
pub const INDEX_RESP: u8 = 26;
pub const SEARCH_QUERY_REQ: u8 = 27;
pub const SEARCH_QUERY_RESP: u8 = 28;
pub const DT_FETCH_REQ: u8 = 80;
pub const DT_FETCH_RESP: u8 = 81;
pub const DT_UPDATE_REQ: u8 = 82;
pub const DT_UPDATE_RESP: u8 = 83;
pub const AUTH_REQ: u8 = 253;
pub const AUTH_RESP: u8 = 254;
pub const START_TLS: u8 = 255;

#[derive(Clone, PartialEq, Message)]
pub struct RpbErrorResp {
    #[prost(bytes = "vec", required, tag = "1")]
    pub errmsg: Vec<u8>,
    #[prost(uint32, required, tag = "2")]
    pub errcode: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbPair {
    #[prost(bytes = "vec", required, tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbAuthReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub user: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    pub password: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbGetReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub bucket: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    pub key: Vec<u8>,
    #[prost(uint32, optional, tag = "3")]
    pub r: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub pr: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub basic_quorum: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub notfound_ok: Option<bool>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub if_modified: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "8")]
    pub head: Option<bool>,
    #[prost(bool, optional, tag = "9")]
    pub deletedvclock: Option<bool>,
    #[prost(uint32, optional, tag = "10")]
    pub timeout: Option<u32>,
    #[prost(bool, optional, tag = "11")]
    pub sloppy_quorum: Option<bool>,
    #[prost(uint32, optional, tag = "12")]
    pub n_val: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "13")]
    pub r#type: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbGetResp {
    #[prost(message, repeated, tag = "1")]
    pub content: Vec<RpbContent>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub vclock: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    pub unchanged: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbPutReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub bucket: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub vclock: Option<Vec<u8>>,
    #[prost(message, required, tag = "4")]
    pub content: RpbContent,
    #[prost(uint32, optional, tag = "5")]
    pub w: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub dw: Option<u32>,
    #[prost(bool, optional, tag = "7")]
    pub return_body: Option<bool>,
    #[prost(uint32, optional, tag = "8")]
    pub pw: Option<u32>,
    #[prost(bool, optional, tag = "9")]
    pub if_not_modified: Option<bool>,
    #[prost(bool, optional, tag = "10")]
    pub if_none_match: Option<bool>,
    #[prost(bool, optional, tag = "11")]
    pub return_head: Option<bool>,
    #[prost(uint32, optional, tag = "12")]
    pub timeout: Option<u32>,
    #[prost(bool, optional, tag = "13")]
    pub asis: Option<bool>,
    #[prost(bool, optional, tag = "14")]
    pub sloppy_quorum: Option<bool>,
    #[prost(uint32, optional, tag = "15")]
    pub n_val: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "16")]
    pub r#type: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbPutResp {
    #[prost(message, repeated, tag = "1")]
    pub content: Vec<RpbContent>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub vclock: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub key: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbDelReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub bucket: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    pub key: Vec<u8>,
    #[prost(uint32, optional, tag = "3")]
    pub rw: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub vclock: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "5")]
    pub r: Option<u32>,
    #[prost(uint32, optional, tag = "6")]
    pub w: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub pr: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub pw: Option<u32>,
    #[prost(uint32, optional, tag = "9")]
    pub dw: Option<u32>,
    #[prost(uint32, optional, tag = "10")]
    pub timeout: Option<u32>,
    #[prost(bool, optional, tag = "11")]
    pub sloppy_quorum: Option<bool>,
    #[prost(uint32, optional, tag = "12")]
    pub n_val: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "13")]
    pub r#type: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbListBucketsReq {
    #[prost(uint32, optional, tag = "1")]
    pub timeout: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub stream: Option<bool>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub r#type: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbListBucketsResp {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub buckets: Vec<Vec<u8>>,
    #[prost(bool, optional, tag = "2")]
    pub done: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbListKeysReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub bucket: Vec<u8>,
    #[prost(uint32, optional, tag = "2")]
    pub timeout: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub r#type: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbListKeysResp {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
    #[prost(bool, optional, tag = "2")]
    pub done: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbMapRedReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub request: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    pub content_type: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbMapRedResp {
    #[prost(uint32, optional, tag = "1")]
    pub phase: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub response: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    pub done: Option<bool>,
}

/// `RpbIndexReq.IndexQueryType`.
pub const INDEX_EQ: i32 = 0;
pub const INDEX_RANGE: i32 = 1;

#[derive(Clone, PartialEq, Message)]
pub struct RpbIndexReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub bucket: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    pub index: Vec<u8>,
    #[prost(int32, required, tag = "3")]
    pub qtype: i32,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub range_min: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    pub range_max: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "7")]
    pub return_terms: Option<bool>,
    #[prost(bool, optional, tag = "8")]
    pub stream: Option<bool>,
    #[prost(uint32, optional, tag = "9")]
    pub max_results: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub continuation: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "11")]
    pub timeout: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "12")]
    pub r#type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "13")]
    pub term_regex: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "14")]
    pub pagination_sort: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbIndexResp {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "2")]
    pub results: Vec<RpbPair>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub continuation: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    pub done: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbContent {
    #[prost(bytes = "vec", required, tag = "1")]
    pub value: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub content_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub charset: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub content_encoding: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub vtag: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "6")]
    pub links: Vec<RpbLink>,
    #[prost(uint32, optional, tag = "7")]
    pub last_mod: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub last_mod_usecs: Option<u32>,
    #[prost(message, repeated, tag = "9")]
    pub usermeta: Vec<RpbPair>,
    #[prost(message, repeated, tag = "10")]
    pub indexes: Vec<RpbPair>,
    #[prost(bool, optional, tag = "11")]
    pub deleted: Option<bool>,
    #[prost(uint32, optional, tag = "12")]
    pub ttl: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbLink {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub bucket: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub tag: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbSearchDoc {
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<RpbPair>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbSearchQueryReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub q: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    pub index: Vec<u8>,
    #[prost(uint32, optional, tag = "3")]
    pub rows: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub start: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub sort: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    pub filter: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub df: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub op: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub fl: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub presort: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RpbSearchQueryResp {
    #[prost(message, repeated, tag = "1")]
    pub docs: Vec<RpbSearchDoc>,
    #[prost(float, optional, tag = "2")]
    pub max_score: Option<f32>,
    #[prost(uint32, optional, tag = "3")]
    pub num_found: Option<u32>,
}

// ---------------------------------------------------------------------------
// riak_dt.proto: convergent data types
// ---------------------------------------------------------------------------

/// `MapField.MapFieldType`.
pub const FIELD_COUNTER: i32 = 1;
pub const FIELD_SET: i32 = 2;
pub const FIELD_REGISTER: i32 = 3;
pub const FIELD_FLAG: i32 = 4;
pub const FIELD_MAP: i32 = 5;

/// `DtFetchResp.DataType`.
pub const DT_COUNTER: i32 = 1;
pub const DT_SET: i32 = 2;
pub const DT_MAP: i32 = 3;
pub const DT_HLL: i32 = 4;
pub const DT_GSET: i32 = 5;

/// `MapUpdate.FlagOp`.
pub const FLAG_ENABLE: i32 = 1;
pub const FLAG_DISABLE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct MapField {
    #[prost(bytes = "vec", required, tag = "1")]
    pub name: Vec<u8>,
    #[prost(int32, required, tag = "2")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct MapEntry {
    #[prost(message, required, tag = "1")]
    pub field: MapField,
    #[prost(sint64, optional, tag = "2")]
    pub counter_value: Option<i64>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub set_value: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub register_value: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "5")]
    pub flag_value: Option<bool>,
    #[prost(message, repeated, tag = "6")]
    pub map_value: Vec<MapEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DtFetchReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub bucket: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub r#type: Vec<u8>,
    #[prost(uint32, optional, tag = "4")]
    pub r: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub pr: Option<u32>,
    #[prost(bool, optional, tag = "6")]
    pub basic_quorum: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub notfound_ok: Option<bool>,
    #[prost(uint32, optional, tag = "8")]
    pub timeout: Option<u32>,
    #[prost(bool, optional, tag = "9")]
    pub sloppy_quorum: Option<bool>,
    #[prost(uint32, optional, tag = "10")]
    pub n_val: Option<u32>,
    #[prost(bool, optional, tag = "11")]
    pub include_context: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DtValue {
    #[prost(sint64, optional, tag = "1")]
    pub counter_value: Option<i64>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub set_value: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "3")]
    pub map_value: Vec<MapEntry>,
    #[prost(uint64, optional, tag = "4")]
    pub hll_value: Option<u64>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub gset_value: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DtFetchResp {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub context: Option<Vec<u8>>,
    #[prost(int32, required, tag = "2")]
    pub r#type: i32,
    #[prost(message, optional, tag = "3")]
    pub value: Option<DtValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CounterOp {
    #[prost(sint64, optional, tag = "1")]
    pub increment: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SetOp {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub adds: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub removes: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MapUpdate {
    #[prost(message, required, tag = "1")]
    pub field: MapField,
    #[prost(message, optional, tag = "2")]
    pub counter_op: Option<CounterOp>,
    #[prost(message, optional, tag = "3")]
    pub set_op: Option<SetOp>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub register_op: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "5")]
    pub flag_op: Option<i32>,
    #[prost(message, optional, tag = "6")]
    pub map_op: Option<MapOp>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MapOp {
    #[prost(message, repeated, tag = "1")]
    pub removes: Vec<MapField>,
    #[prost(message, repeated, tag = "2")]
    pub updates: Vec<MapUpdate>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DtOp {
    #[prost(message, optional, tag = "1")]
    pub counter_op: Option<CounterOp>,
    #[prost(message, optional, tag = "2")]
    pub set_op: Option<SetOp>,
    #[prost(message, optional, tag = "3")]
    pub map_op: Option<MapOp>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DtUpdateReq {
    #[prost(bytes = "vec", required, tag = "1")]
    pub bucket: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub key: Option<Vec<u8>>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub r#type: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub context: Option<Vec<u8>>,
    #[prost(message, required, tag = "5")]
    pub op: DtOp,
    #[prost(uint32, optional, tag = "6")]
    pub w: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub dw: Option<u32>,
    #[prost(uint32, optional, tag = "8")]
    pub pw: Option<u32>,
    #[prost(bool, optional, tag = "9")]
    pub return_body: Option<bool>,
    #[prost(uint32, optional, tag = "10")]
    pub timeout: Option<u32>,
    #[prost(bool, optional, tag = "11")]
    pub sloppy_quorum: Option<bool>,
    #[prost(uint32, optional, tag = "12")]
    pub n_val: Option<u32>,
    #[prost(bool, optional, tag = "13")]
    pub include_context: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DtUpdateResp {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub context: Option<Vec<u8>>,
    #[prost(sint64, optional, tag = "3")]
    pub counter_value: Option<i64>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub set_value: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "5")]
    pub map_value: Vec<MapEntry>,
    #[prost(uint64, optional, tag = "6")]
    pub hll_value: Option<u64>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub gset_value: Vec<Vec<u8>>,
}
