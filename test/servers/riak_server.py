#!/usr/bin/env python3
"""A Riak stand-in for riak_SUITE: no Riak runs here.

Speaks Riak's Protocol Buffers API (PBC) on loopback, written from riak_pb's
.proto files and message codes (riak_pb_messages.csv): every message is a
4-byte big-endian length, a 1-byte code and a protobuf body, encoded and
decoded here by hand (no protobuf library). It answers:

  RpbPingReq, RpbGetServerInfoReq, RpbGetClientIdReq, RpbSetClientIdReq
  RpbGetReq, RpbPutReq, RpbDelReq       objects with siblings and vclocks
  RpbListKeysReq, RpbListBucketsReq     streamed, two names per message
  RpbGetBucketReq, RpbSetBucketReq      allow_mult, n_val, search_index,
  RpbGetBucketTypeReq                   datatype
  RpbIndexReq                           2i: eq and range, _bin and _int,
                                        $bucket and $key, return_terms,
                                        max_results with continuations, stream
  RpbSearchQueryReq                     a small Solr subset (below)
  RpbMapRedReq                          application/x-erlang-binary jobs with
                                        riak_kv_mapreduce's map_object_value,
                                        reduce_count_inputs, reduce_set_union
  DtFetchReq, DtUpdateReq               counters, sets and maps (of counters,
                                        sets, registers, flags and maps)
  RpbStartTls, RpbAuthReq               with --certfile/--keyfile/--user/--password

Data lives in memory. A vclock is the set of writes an object has seen;
a put whose vclock does not cover every current sibling keeps those as
siblings when the bucket allows them (allow_mult: true for every bucket
type but "default", as in Riak 2.x; RpbSetBucketReq changes it), and
replaces them otherwise. Data-type bucket types: "maps", "sets" and
"counters", and those named with --datatype NAME=map|set|counter. Search
indexes cover the buckets whose search_index property names them (or a
whole bucket type with --search-index NAME=TYPE); they index values of
content type application/json (top-level fields) and text/plain (field
"text"); queries are `field:value` terms (`*` wildcards at the end,
`*:*`) joined by AND or OR; rows, start, sort ("field asc|desc") and fl
are honoured.

Faults, given as lines on standard input (each answered "OK" on standard
output): "error N MESSAGE" (the next N requests get RpbErrorResp),
"drop N" (the next N requests close their connection unanswered),
"stall N MS" (the next N requests are answered after MS milliseconds),
"close_all" (every open connection is closed now), "reset" (data and
faults cleared), "accepted" (answers "OK N": connections accepted so far). Prints "PORT <n>" once listening; exits when its
standard input closes.
"""
import argparse
import asyncio
import fnmatch
import json
import os
import ssl
import struct
import sys
import time

# ---------------------------------------------------------------------------
# Protobuf, by hand: (tag, name, kind[, message spec]); kinds b bytes,
# u uint32/uint64, e enum/int32, z sint64, ? bool, f float, m message.
# A name ending in * is repeated.
# ---------------------------------------------------------------------------

PAIR = [(1, "key", "b"), (2, "value", "b")]
LINK = [(1, "bucket", "b"), (2, "key", "b"), (3, "tag", "b")]
CONTENT = [(1, "value", "b"), (2, "content_type", "b"), (3, "charset", "b"),
           (4, "content_encoding", "b"), (5, "vtag", "b"), (6, "links*", "m", LINK),
           (7, "last_mod", "u"), (8, "last_mod_usecs", "u"), (9, "usermeta*", "m", PAIR),
           (10, "indexes*", "m", PAIR), (11, "deleted", "?"), (12, "ttl", "u")]
ERROR_RESP = [(1, "errmsg", "b"), (2, "errcode", "u")]
SERVER_INFO = [(1, "node", "b"), (2, "server_version", "b")]
CLIENT_ID = [(1, "client_id", "b")]
GET_REQ = [(1, "bucket", "b"), (2, "key", "b"), (3, "r", "u"), (4, "pr", "u"),
           (5, "basic_quorum", "?"), (6, "notfound_ok", "?"), (7, "if_modified", "b"),
           (8, "head", "?"), (9, "deletedvclock", "?"), (10, "timeout", "u"),
           (11, "sloppy_quorum", "?"), (12, "n_val", "u"), (13, "type", "b")]
GET_RESP = [(1, "content*", "m", CONTENT), (2, "vclock", "b"), (3, "unchanged", "?")]
PUT_REQ = [(1, "bucket", "b"), (2, "key", "b"), (3, "vclock", "b"), (4, "content", "m", CONTENT),
           (5, "w", "u"), (6, "dw", "u"), (7, "return_body", "?"), (8, "pw", "u"),
           (9, "if_not_modified", "?"), (10, "if_none_match", "?"), (11, "return_head", "?"),
           (12, "timeout", "u"), (13, "asis", "?"), (14, "sloppy_quorum", "?"),
           (15, "n_val", "u"), (16, "type", "b")]
PUT_RESP = [(1, "content*", "m", CONTENT), (2, "vclock", "b"), (3, "key", "b")]
DEL_REQ = [(1, "bucket", "b"), (2, "key", "b"), (3, "rw", "u"), (4, "vclock", "b"),
           (5, "r", "u"), (6, "w", "u"), (7, "pr", "u"), (8, "pw", "u"), (9, "dw", "u"),
           (10, "timeout", "u"), (11, "sloppy_quorum", "?"), (12, "n_val", "u"),
           (13, "type", "b")]
LIST_BUCKETS_REQ = [(1, "timeout", "u"), (2, "stream", "?"), (3, "type", "b")]
LIST_BUCKETS_RESP = [(1, "buckets*", "b"), (2, "done", "?")]
LIST_KEYS_REQ = [(1, "bucket", "b"), (2, "timeout", "u"), (3, "type", "b")]
LIST_KEYS_RESP = [(1, "keys*", "b"), (2, "done", "?")]
BUCKET_PROPS = [(1, "n_val", "u"), (2, "allow_mult", "?"), (3, "last_write_wins", "?"),
                (25, "search_index", "b"), (26, "datatype", "b")]
GET_BUCKET_REQ = [(1, "bucket", "b"), (2, "type", "b")]
GET_BUCKET_RESP = [(1, "props", "m", BUCKET_PROPS)]
GET_BUCKET_TYPE_REQ = [(1, "type", "b")]
SET_BUCKET_REQ = [(1, "bucket", "b"), (2, "props", "m", BUCKET_PROPS), (3, "type", "b")]
MAPRED_REQ = [(1, "request", "b"), (2, "content_type", "b")]
MAPRED_RESP = [(1, "phase", "u"), (2, "response", "b"), (3, "done", "?")]
INDEX_REQ = [(1, "bucket", "b"), (2, "index", "b"), (3, "qtype", "e"), (4, "key", "b"),
             (5, "range_min", "b"), (6, "range_max", "b"), (7, "return_terms", "?"),
             (8, "stream", "?"), (9, "max_results", "u"), (10, "continuation", "b"),
             (11, "timeout", "u"), (12, "type", "b"), (13, "term_regex", "b"),
             (14, "pagination_sort", "?"), (15, "cover_context", "b"), (16, "return_body", "?")]
INDEX_RESP = [(1, "keys*", "b"), (2, "results*", "m", PAIR), (3, "continuation", "b"),
              (4, "done", "?")]
SEARCH_DOC = [(1, "fields*", "m", PAIR)]
SEARCH_REQ = [(1, "q", "b"), (2, "index", "b"), (3, "rows", "u"), (4, "start", "u"),
              (5, "sort", "b"), (6, "filter", "b"), (7, "df", "b"), (8, "op", "b"),
              (9, "fl*", "b"), (10, "presort", "b")]
SEARCH_RESP = [(1, "docs*", "m", SEARCH_DOC), (2, "max_score", "f"), (3, "num_found", "u")]
MAP_FIELD = [(1, "name", "b"), (2, "type", "e")]
MAP_ENTRY = [(1, "field", "m", MAP_FIELD), (2, "counter_value", "z"), (3, "set_value*", "b"),
             (4, "register_value", "b"), (5, "flag_value", "?")]
MAP_ENTRY.append((6, "map_value*", "m", MAP_ENTRY))
DT_FETCH_REQ = [(1, "bucket", "b"), (2, "key", "b"), (3, "type", "b"), (4, "r", "u"),
                (5, "pr", "u"), (6, "basic_quorum", "?"), (7, "notfound_ok", "?"),
                (8, "timeout", "u"), (9, "sloppy_quorum", "?"), (10, "n_val", "u"),
                (11, "include_context", "?")]
DT_VALUE = [(1, "counter_value", "z"), (2, "set_value*", "b"), (3, "map_value*", "m", MAP_ENTRY),
            (4, "hll_value", "u"), (5, "gset_value*", "b")]
DT_FETCH_RESP = [(1, "context", "b"), (2, "type", "e"), (3, "value", "m", DT_VALUE)]
COUNTER_OP = [(1, "increment", "z")]
SET_OP = [(1, "adds*", "b"), (2, "removes*", "b")]
MAP_UPDATE = [(1, "field", "m", MAP_FIELD), (2, "counter_op", "m", COUNTER_OP),
              (3, "set_op", "m", SET_OP), (4, "register_op", "b"), (5, "flag_op", "e")]
MAP_OP = [(1, "removes*", "m", MAP_FIELD), (2, "updates*", "m", MAP_UPDATE)]
MAP_UPDATE.append((6, "map_op", "m", MAP_OP))
DT_OP = [(1, "counter_op", "m", COUNTER_OP), (2, "set_op", "m", SET_OP), (3, "map_op", "m", MAP_OP),
         (4, "hll_op", "m", SET_OP), (5, "gset_op", "m", SET_OP)]
DT_UPDATE_REQ = [(1, "bucket", "b"), (2, "key", "b"), (3, "type", "b"), (4, "context", "b"),
                 (5, "op", "m", DT_OP), (6, "w", "u"), (7, "dw", "u"), (8, "pw", "u"),
                 (9, "return_body", "?"), (10, "timeout", "u"), (11, "sloppy_quorum", "?"),
                 (12, "n_val", "u"), (13, "include_context", "?")]
DT_UPDATE_RESP = [(1, "key", "b"), (2, "context", "b"), (3, "counter_value", "z"),
                  (4, "set_value*", "b"), (5, "map_value*", "m", MAP_ENTRY)]
AUTH_REQ = [(1, "user", "b"), (2, "password", "b")]


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(spec, msg):
    out = bytearray()
    for field in spec:
        tag, name, kind = field[0], field[1], field[2]
        repeated = name.endswith("*")
        key = name.rstrip("*")
        if key not in msg or msg[key] is None:
            continue
        for v in (msg[key] if repeated else [msg[key]]):
            if kind in "bm":
                data = encode(field[3], v) if kind == "m" else v
                out += varint(tag << 3 | 2) + varint(len(data)) + data
            elif kind == "f":
                out += varint(tag << 3 | 5) + struct.pack("<f", v)
            else:
                n = int(v)
                if kind == "z":
                    n = (n << 1) ^ (n >> 63)
                out += varint(tag << 3) + varint(n)
    return bytes(out)


def decode(spec, data):
    fields = {f[0]: f for f in spec}
    msg = {f[1].rstrip("*"): [] for f in spec if f[1].endswith("*")}
    i = 0

    def read_varint():
        nonlocal i
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    while i < len(data):
        key = read_varint()
        tag, wire = key >> 3, key & 7
        if wire == 0:
            v = read_varint()
        elif wire == 2:
            n = read_varint()
            v = data[i:i + n]
            i += n
        elif wire == 5:
            v = struct.unpack("<f", data[i:i + 4])[0]
            i += 4
        elif wire == 1:
            v = data[i:i + 8]
            i += 8
        else:
            raise ValueError(f"wire type {wire}")
        f = fields.get(tag)
        if f is None:
            continue
        kind = f[2]
        if kind == "m":
            v = decode(f[3], v)
        elif kind == "b":
            v = bytes(v)
        elif kind == "?":
            v = bool(v)
        elif kind == "z":
            v = (v >> 1) ^ -(v & 1)
        if f[1].endswith("*"):
            msg[f[1][:-1]].append(v)
        else:
            msg[f[1]] = v
    return msg


# ---------------------------------------------------------------------------
# Erlang's external term format, for MapReduce jobs and their results
# ---------------------------------------------------------------------------

class Atom(str):
    pass


def etf_decode(data):
    if data[0] != 131:
        raise ValueError("not an Erlang term")
    term, _ = _etf(data, 1)
    return term


def _etf(d, i):
    tag = d[i]
    i += 1
    if tag == 97:
        return d[i], i + 1
    if tag == 98:
        return struct.unpack(">i", d[i:i + 4])[0], i + 4
    if tag in (110, 111):
        n = d[i] if tag == 110 else struct.unpack(">I", d[i:i + 4])[0]
        i += 1 if tag == 110 else 4
        sign = d[i]
        v = int.from_bytes(d[i + 1:i + 1 + n], "little")
        return (-v if sign else v), i + 1 + n
    if tag in (100, 118, 119, 115):
        if tag in (100, 118):
            n = struct.unpack(">H", d[i:i + 2])[0]
            i += 2
        else:
            n = d[i]
            i += 1
        return Atom(d[i:i + n].decode()), i + n
    if tag in (104, 105):
        n = d[i] if tag == 104 else struct.unpack(">I", d[i:i + 4])[0]
        i += 1 if tag == 104 else 4
        items = []
        for _ in range(n):
            t, i = _etf(d, i)
            items.append(t)
        return tuple(items), i
    if tag == 106:
        return [], i
    if tag == 107:
        n = struct.unpack(">H", d[i:i + 2])[0]
        return list(d[i + 2:i + 2 + n]), i + 2 + n
    if tag == 108:
        n = struct.unpack(">I", d[i:i + 4])[0]
        i += 4
        items = []
        for _ in range(n):
            t, i = _etf(d, i)
            items.append(t)
        _tail, i = _etf(d, i)
        return items, i
    if tag == 109:
        n = struct.unpack(">I", d[i:i + 4])[0]
        return bytes(d[i + 4:i + 4 + n]), i + 4 + n
    raise ValueError(f"term tag {tag} is not supported here")


def etf_encode(term):
    return b"\x83" + _enc(term)


def _enc(t):
    if isinstance(t, bool):
        return _enc(Atom("true" if t else "false"))
    if isinstance(t, Atom):
        b = t.encode()
        return b"\x77" + bytes([len(b)]) + b
    if isinstance(t, int):
        if 0 <= t < 256:
            return b"\x61" + bytes([t])
        if -2**31 <= t < 2**31:
            return b"\x62" + struct.pack(">i", t)
        n = abs(t).to_bytes((abs(t).bit_length() + 7) // 8, "little")
        return b"\x6e" + bytes([len(n), 1 if t < 0 else 0]) + n
    if isinstance(t, bytes):
        return b"\x6d" + struct.pack(">I", len(t)) + t
    if isinstance(t, tuple):
        return b"\x68" + bytes([len(t)]) + b"".join(_enc(x) for x in t)
    if isinstance(t, list):
        if not t:
            return b"\x6a"
        return b"\x6c" + struct.pack(">I", len(t)) + b"".join(_enc(x) for x in t) + b"\x6a"
    raise ValueError(f"cannot encode {t!r}")


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------

CODES = {
    "error": 0, "ping": 1, "pong": 2, "get_client_id": 3, "client_id": 4, "set_client_id": 5,
    "set_client_id_resp": 6, "server_info_req": 7, "server_info": 8, "get": 9, "get_resp": 10,
    "put": 11, "put_resp": 12, "del": 13, "del_resp": 14, "list_buckets": 15,
    "list_buckets_resp": 16, "list_keys": 17, "list_keys_resp": 18, "get_bucket": 19,
    "get_bucket_resp": 20, "set_bucket": 21, "get_bucket_type": 31, "set_bucket_resp": 22, "mapred": 23,
    "mapred_resp": 24, "index": 25, "index_resp": 26, "search": 27, "search_resp": 28,
    "dt_fetch": 80, "dt_fetch_resp": 81, "dt_update": 82, "dt_update_resp": 83,
    "auth": 253, "auth_resp": 254, "starttls": 255,
}
DT_CODES = {"counter": 1, "set": 2, "map": 3}
FIELD_TYPES = {1: "counter", 2: "set", 3: "register", 4: "flag", 5: "map"}


class RiakError(Exception):
    pass


class Store:
    def __init__(self, datatypes, search_types):
        self.datatypes = {"maps": "map", "sets": "set", "counters": "counter", **datatypes}
        self.search_types = search_types
        self.reset()

    def reset(self):
        self.objects = {}     # (type, bucket, key) -> {"siblings": [(dot, content)], "seen": set}
        self.dts = {}         # (type, bucket, key) -> value
        self.props = {}       # (type, bucket) -> props
        self.next_dot = 1

    def bucket_props(self, btype, bucket):
        props = {"n_val": 3, "allow_mult": btype != b"default", "last_write_wins": False}
        if btype.decode() in self.datatypes:
            props["datatype"] = self.datatypes[btype.decode()].encode()
        props.update(self.props.get((btype, bucket), {}))
        return props

    def dot(self):
        self.next_dot += 1
        return self.next_dot

    def vclock(self, obj):
        return b"vc:" + ",".join(str(d) for d in sorted(obj["seen"])).encode()

    @staticmethod
    def parse_vclock(vc):
        if not vc:
            return set()
        if not vc.startswith(b"vc:"):
            raise RiakError("bad vclock")
        return {int(x) for x in vc[3:].decode().split(",") if x}

    def put(self, btype, bucket, key, vclock, content):
        k = (btype, bucket, key)
        seen = self.parse_vclock(vclock)
        obj = self.objects.get(k)
        dot = self.dot()
        if obj is None:
            obj = {"siblings": [], "seen": set()}
            self.objects[k] = obj
        if self.bucket_props(btype, bucket)["allow_mult"]:
            kept = [(d, c) for d, c in obj["siblings"] if d not in seen]
        else:
            kept = []
        obj["siblings"] = kept + [(dot, content)]
        obj["seen"] |= seen | {dot}
        return obj


def key_of(msg):
    return (msg.get("type") or b"default", msg["bucket"])


def content_out(c, head=False):
    out = dict(c)
    if head:
        out["value"] = b""
    return out


def index_values(content, index):
    return [p.get("value") or b"" for p in content.get("indexes", []) if p["key"] == index]


def index_term(index, value):
    return int(value) if index.endswith(b"_int") else value


class Server:
    def __init__(self, args):
        self.args = args
        self.store = Store(dict(x.split("=") for x in args.datatype),
                           dict(x.split("=") for x in args.search_index))
        self.faults = []      # [mode, remaining, arg]
        self.writers = set()
        self.accepted = 0
        self.tls = None
        if args.certfile:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(args.certfile, args.keyfile)

    # -- faults -------------------------------------------------------------

    def control(self, line):
        """Applies a fault command; returns what follows "OK" in the answer."""
        parts = line.split(None, 3)
        if not parts:
            return ""
        if parts[0] == "accepted":
            return f" {self.accepted}"
        if parts[0] == "error":
            self.faults.append(["error", int(parts[1]), parts[2] if len(parts) > 2 else "injected"])
        elif parts[0] == "drop":
            self.faults.append(["drop", int(parts[1]), None])
        elif parts[0] == "stall":
            self.faults.append(["stall", int(parts[1]), int(parts[2])])
        elif parts[0] == "close_all":
            for w in list(self.writers):
                w.close()
        elif parts[0] == "reset":
            self.faults = []
            self.store.reset()
        return ""

    def next_fault(self):
        if not self.faults:
            return None
        fault = self.faults[0]
        fault[1] -= 1
        if fault[1] <= 0:
            self.faults.pop(0)
        return fault

    # -- connections --------------------------------------------------------

    async def handle(self, reader, writer):
        self.writers.add(writer)
        self.accepted += 1
        state = {"secure": not self.args.user, "tls": False}
        try:
            while True:
                head = await reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                frame = await reader.readexactly(length)
                code, body = frame[0], frame[1:]
                fault = self.next_fault() if code not in (CODES["starttls"], CODES["auth"]) else None
                if fault and fault[0] == "drop":
                    break
                if fault and fault[0] == "stall":
                    await asyncio.sleep(fault[2] / 1000)
                if fault and fault[0] == "error":
                    replies = [error(fault[2])]
                else:
                    replies = await self.dispatch(code, body, state, reader, writer)
                for c, b in replies:
                    writer.write(struct.pack(">IB", len(b) + 1, c) + b)
                    await writer.drain()
                if state.pop("upgrade", False):
                    await writer.start_tls(self.tls)
                    state["tls"] = True
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def dispatch(self, code, body, state, reader, writer):
        if code == CODES["starttls"]:
            if not self.tls:
                return [error("Security not enabled")]
            state["upgrade"] = True
            return [(CODES["starttls"], b"")]
        if code == CODES["auth"]:
            req = decode(AUTH_REQ, body)
            if not state["tls"]:
                return [error("Security is enabled, please STARTTLS first")]
            if req["user"].decode() == self.args.user and req["password"].decode() == self.args.password:
                state["secure"] = True
                return [(CODES["auth_resp"], b"")]
            return [error("Authentication failed")]
        if not state["secure"]:
            return [error("Security is enabled, please STARTTLS first")]
        try:
            return self.request(code, body)
        except RiakError as e:
            return [error(str(e))]

    def request(self, code, body):
        s = self.store
        if code == CODES["ping"]:
            return [(CODES["pong"], b"")]
        if code == CODES["server_info_req"]:
            return [(CODES["server_info"], encode(SERVER_INFO, {
                "node": b"riak@127.0.0.1", "server_version": b"2.2.3"}))]
        if code == CODES["get_client_id"]:
            return [(CODES["client_id"], encode(CLIENT_ID, {"client_id": b"mn_test"}))]
        if code == CODES["set_client_id"]:
            return [(CODES["set_client_id_resp"], b"")]
        if code == CODES["get"]:
            return [self.get(decode(GET_REQ, body))]
        if code == CODES["put"]:
            return [self.put(decode(PUT_REQ, body))]
        if code == CODES["del"]:
            req = decode(DEL_REQ, body)
            s.objects.pop(key_of(req) + (req["key"],), None)
            return [(CODES["del_resp"], b"")]
        if code == CODES["list_keys"]:
            req = decode(LIST_KEYS_REQ, body)
            t, b = key_of(req)
            keys = sorted({k for (t2, b2, k) in s.objects if (t2, b2) == (t, b)}
                          | {k for (t2, b2, k) in s.dts if (t2, b2) == (t, b)})
            return streamed("list_keys_resp", LIST_KEYS_RESP, "keys", keys)
        if code == CODES["list_buckets"]:
            req = decode(LIST_BUCKETS_REQ, body)
            t = req.get("type") or b"default"
            buckets = sorted({b for (t2, b, _) in list(s.objects) + list(s.dts) if t2 == t})
            return streamed("list_buckets_resp", LIST_BUCKETS_RESP, "buckets", buckets)
        if code == CODES["get_bucket"]:
            req = decode(GET_BUCKET_REQ, body)
            props = s.bucket_props(*key_of(req))
            return [(CODES["get_bucket_resp"], encode(GET_BUCKET_RESP, {"props": props}))]
        if code == CODES["get_bucket_type"]:
            req = decode(GET_BUCKET_TYPE_REQ, body)
            props = s.bucket_props(req["type"], None)
            return [(CODES["get_bucket_resp"], encode(GET_BUCKET_RESP, {"props": props}))]
        if code == CODES["set_bucket"]:
            req = decode(SET_BUCKET_REQ, body)
            s.props.setdefault(key_of(req), {}).update(
                {k: v for k, v in req["props"].items() if k in ("allow_mult", "search_index", "n_val")})
            return [(CODES["set_bucket_resp"], b"")]
        if code == CODES["index"]:
            return self.index(decode(INDEX_REQ, body))
        if code == CODES["search"]:
            return [self.search(decode(SEARCH_REQ, body))]
        if code == CODES["mapred"]:
            return self.mapred(decode(MAPRED_REQ, body))
        if code == CODES["dt_fetch"]:
            return [self.dt_fetch(decode(DT_FETCH_REQ, body))]
        if code == CODES["dt_update"]:
            return [self.dt_update(decode(DT_UPDATE_REQ, body))]
        raise RiakError(f"Unknown message code: {code}")

    # -- KV -----------------------------------------------------------------

    def get(self, req):
        k = key_of(req) + (req["key"],)
        obj = self.store.objects.get(k)
        if obj is None:
            return (CODES["get_resp"], b"")
        vclock = self.store.vclock(obj)
        if req.get("if_modified") == vclock:
            return (CODES["get_resp"], encode(GET_RESP, {"unchanged": True}))
        contents = [content_out(c, req.get("head")) for _, c in obj["siblings"]]
        return (CODES["get_resp"], encode(GET_RESP, {"content": contents, "vclock": vclock}))

    def put(self, req):
        s = self.store
        t, b = key_of(req)
        key = req.get("key")
        generated = key is None
        if generated:
            key = os.urandom(8).hex().encode()
        existing = s.objects.get((t, b, key))
        if req.get("if_none_match") and existing:
            raise RiakError("match_found")
        if req.get("if_not_modified") and existing and req.get("vclock") != s.vclock(existing):
            raise RiakError("modified")
        content = dict(req["content"])
        content["vtag"] = os.urandom(6).hex().encode()
        now = time.time()
        content["last_mod"], content["last_mod_usecs"] = int(now), int(now * 1e6) % 1000000
        obj = s.put(t, b, key, req.get("vclock"), content)
        if req.get("return_body") or req.get("return_head"):
            contents = [content_out(c, req.get("return_head")) for _, c in obj["siblings"]]
            return (CODES["put_resp"], encode(PUT_RESP, {
                "content": contents, "vclock": s.vclock(obj), "key": key if generated else None}))
        if generated:
            return (CODES["put_resp"], encode(PUT_RESP, {"key": key}))
        return (CODES["put_resp"], b"")

    # -- 2i -----------------------------------------------------------------

    def index(self, req):
        t, b = key_of(req)
        index = req["index"]
        hits = []     # (term, key)
        for (t2, b2, key), obj in sorted(self.store.objects.items()):
            if (t2, b2) != (t, b):
                continue
            if index == b"$bucket":
                values = [b]
            elif index == b"$key":
                values = [key]
            else:
                values = {v for _, c in obj["siblings"] for v in index_values(c, index)}
            for v in values:
                term = index_term(index, v)
                if req["qtype"] == 0:
                    match = term == index_term(index, req.get("key") or b"")
                else:
                    lo = index_term(index, req.get("range_min") or b"")
                    hi = index_term(index, req.get("range_max") or b"")
                    match = lo <= term <= hi
                if match:
                    hits.append((term, key))
        hits.sort()
        if req.get("continuation"):
            after = json.loads(req["continuation"])
            hits = [h for h in hits if [str(h[0]) if isinstance(h[0], int) else h[0].decode(),
                                        h[1].decode()] > after]
        cont = None
        if req.get("max_results") and len(hits) > req["max_results"]:
            hits = hits[:req["max_results"]]
            last = hits[-1]
            cont = json.dumps([str(last[0]) if isinstance(last[0], int) else last[0].decode(),
                               last[1].decode()]).encode()
        if req.get("return_terms") and req["qtype"] == 1:
            msg = {"results": [{"key": str(tm).encode() if isinstance(tm, int) else tm, "value": k}
                               for tm, k in hits]}
        else:
            seen, keys = set(), []
            for _, k in hits:
                if k not in seen:
                    seen.add(k)
                    keys.append(k)
            msg = {"keys": keys}
        msg["continuation"] = cont
        if req.get("stream"):
            return [(CODES["index_resp"], encode(INDEX_RESP, msg)),
                    (CODES["index_resp"], encode(INDEX_RESP, {"done": True, "continuation": cont}))]
        return [(CODES["index_resp"], encode(INDEX_RESP, msg))]

    # -- search -------------------------------------------------------------

    def search_docs(self, index):
        whole_type = self.store.search_types.get(index.decode())
        for (t, b, key), obj in sorted(self.store.objects.items()):
            props = self.store.bucket_props(t, b)
            if props.get("search_index") != index and whole_type != t.decode():
                continue
            for _, c in obj["siblings"]:
                doc = {"_yz_rk": key, "_yz_rb": b, "_yz_rt": t,
                       "_yz_id": b"/".join([t, b, key])}
                ctype = (c.get("content_type") or b"").split(b";")[0]
                if ctype == b"application/json":
                    try:
                        value = json.loads(c["value"])
                    except ValueError:
                        continue
                    if not isinstance(value, dict):
                        continue
                    for f, v in value.items():
                        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
                            doc[f] = str(v).encode()
                elif ctype.startswith(b"text/"):
                    doc["text"] = c["value"]
                yield doc

    def search(self, req):
        index = req["index"]
        if index.decode() not in self.store.search_types and not any(
                p.get("search_index") == index for p in self.store.props.values()):
            raise RiakError(f"No index <<\"{index.decode()}\">> found.")
        query = req["q"].decode()
        docs = [d for d in self.search_docs(index) if matches(d, query)]
        if req.get("sort"):
            field, _, order = req["sort"].decode().partition(" ")
            docs.sort(key=lambda d: d.get(field, b""), reverse=order.strip() == "desc")
        found = len(docs)
        start = req.get("start") or 0
        rows = req.get("rows") if req.get("rows") is not None else 10
        docs = docs[start:start + rows]
        fl = [f.decode() for f in req.get("fl", [])]
        out = []
        for d in docs:
            fields = {**d, "score": b"1.00000000000000000000e+00"}
            if fl:
                fields = {k: v for k, v in fields.items() if k in fl}
            out.append({"fields": [{"key": k.encode(), "value": v} for k, v in fields.items()]})
        return (CODES["search_resp"], encode(SEARCH_RESP, {
            "docs": out, "max_score": 1.0 if found else 0.0, "num_found": found}))

    # -- mapreduce ----------------------------------------------------------

    def mapred(self, req):
        if req["content_type"] != b"application/x-erlang-binary":
            raise RiakError("only application/x-erlang-binary jobs are supported here")
        try:
            job = dict(etf_decode(req["request"]))
        except (ValueError, IndexError, TypeError) as e:
            raise RiakError(f"bad mapreduce job: {e}")
        data = self.mapred_inputs(job.get("inputs"))
        out = []
        for phase, q in enumerate(job.get("query") or []):
            kind, fun, _arg, keep = q
            if not (isinstance(fun, tuple) and fun[0] == "modfun" and fun[1] == "riak_kv_mapreduce"):
                raise RiakError(f"phase {phase}: only riak_kv_mapreduce functions are supported")
            name = fun[2]
            if kind == "map" and name == "map_object_value":
                data = [c["value"] for (t, b, k) in data
                        for _, c in self.store.objects.get((t, b, k), {"siblings": []})["siblings"]]
            elif kind == "reduce" and name == "reduce_count_inputs":
                data = [len(data)]
            elif kind == "reduce" and name == "reduce_set_union":
                data = sorted(set(data))
            else:
                raise RiakError(f"phase {phase}: {kind} {name} is not supported here")
            if keep in (True, "true"):
                out.append((phase, data))
        msgs = [(CODES["mapred_resp"], encode(MAPRED_RESP, {"phase": p, "response": etf_encode(
            [list(x) if isinstance(x, tuple) else x for x in d])})) for p, d in out]
        return msgs + [(CODES["mapred_resp"], encode(MAPRED_RESP, {"done": True}))]

    def mapred_inputs(self, inputs):
        def split(bucket):
            return bucket if isinstance(bucket, tuple) else (b"default", bucket)
        objs = self.store.objects
        if isinstance(inputs, bytes) or (isinstance(inputs, tuple) and len(inputs) == 2
                                          and all(isinstance(x, bytes) for x in inputs)):
            t, b = split(inputs)
            return [k for k in sorted(objs) if k[:2] == (t, b)]
        if isinstance(inputs, tuple) and inputs and inputs[0] == "index":
            t, b = split(inputs[1])
            req = {"type": t, "bucket": b, "index": inputs[2]}
            if len(inputs) == 4:
                req.update(qtype=0, key=inputs[3])
            else:
                req.update(qtype=1, range_min=inputs[3], range_max=inputs[4])
            msg = decode(INDEX_RESP, self.index(req)[0][1])
            return [(t, b, k) for k in msg["keys"]]
        if isinstance(inputs, list):
            out = []
            for item in inputs:
                # {Bucket, Key} or {{Bucket, Key}, KeyData}, Bucket a name or
                # {Type, Name}; {{Type, Name}, Key} is read as a typed bucket.
                typed_key = isinstance(item[0], tuple) and isinstance(item[1], bytes) and all(
                    isinstance(x, bytes) for x in item[0])
                bk = item if typed_key or not isinstance(item[0], tuple) else item[0]
                t, b = split(bk[0])
                out.append((t, b, bk[1]))
            return out
        raise RiakError("unsupported mapreduce inputs")

    # -- data types ---------------------------------------------------------

    def datatype(self, btype):
        dt = self.store.datatypes.get(btype.decode())
        if dt is None:
            raise RiakError(f"Bucket datatype 'undefined' is not a supported type"
                            f" (bucket type {btype.decode()} has no datatype)")
        return dt

    def dt_fetch(self, req):
        dt = self.datatype(req["type"])
        k = (req["type"], req["bucket"], req["key"])
        resp = {"type": DT_CODES[dt]}
        if k in self.store.dts:
            resp["value"] = dt_value(dt, self.store.dts[k])
            if req.get("include_context", True):
                resp["context"] = b"ctx:" + str(self.store.next_dot).encode()
        return (CODES["dt_fetch_resp"], encode(DT_FETCH_RESP, resp))

    def dt_update(self, req):
        dt = self.datatype(req["type"])
        op = req["op"]
        given = next(n for n in ("counter_op", "set_op", "map_op", "hll_op", "gset_op") if n in op)
        if given != dt + "_op":
            raise RiakError(f"Operation type is `{given[:-3]}` but bucket type has `{dt}`.")
        key = req.get("key")
        generated = key is None
        if generated:
            key = os.urandom(8).hex().encode()
        k = (req["type"], req["bucket"], key)
        value = self.store.dts.get(k, empty(dt))
        value = apply_op(dt, value, op[given])
        self.store.dts[k] = value
        self.store.dot()
        resp = {"key": key if generated else None}
        if req.get("return_body"):
            body = dt_value(dt, value)
            resp.update({"counter_value": body.get("counter_value"),
                         "set_value": body.get("set_value", []),
                         "map_value": body.get("map_value", []),
                         "context": b"ctx:" + str(self.store.next_dot).encode()})
        if not generated and not req.get("return_body"):
            return (CODES["dt_update_resp"], b"")
        return (CODES["dt_update_resp"], encode(DT_UPDATE_RESP, resp))


def empty(dt):
    return {"counter": 0, "set": set(), "map": {}, "register": b"", "flag": False}[dt]


def apply_op(dt, value, op):
    if dt == "counter":
        return value + (op.get("increment") if op.get("increment") is not None else 1)
    if dt == "set":
        for r in op.get("removes", []):
            if r not in value:
                raise RiakError(f"{{precondition,{{not_present,<<\"{r.decode()}\">>}}}}")
        return (value - set(op.get("removes", []))) | set(op.get("adds", []))
    if dt == "register":
        return op
    if dt == "flag":
        return op == 1
    value = dict(value)
    for f in op.get("removes", []):
        fk = (f["name"], FIELD_TYPES[f["type"]])
        if fk not in value:
            raise RiakError(f"{{precondition,{{not_present,{{<<\"{fk[0].decode()}\">>,{fk[1]}}}}}}}")
        del value[fk]
    for u in op.get("updates", []):
        ft = FIELD_TYPES[u["field"]["type"]]
        fk = (u["field"]["name"], ft)
        sub = {"counter": "counter_op", "set": "set_op", "register": "register_op",
               "flag": "flag_op", "map": "map_op"}[ft]
        value[fk] = apply_op(ft, value.get(fk, empty(ft)), u.get(sub, {}))
    return value


def dt_value(dt, value):
    if dt == "counter":
        return {"counter_value": value}
    if dt == "set":
        return {"set_value": sorted(value)}
    return {"map_value": map_entries(value)}


def map_entries(value):
    out = []
    for (name, ft), v in sorted(value.items()):
        e = {"field": {"name": name, "type": {t: c for c, t in FIELD_TYPES.items()}[ft]}}
        if ft == "counter":
            e["counter_value"] = v
        elif ft == "set":
            e["set_value"] = sorted(v)
        elif ft == "register":
            e["register_value"] = v
        elif ft == "flag":
            e["flag_value"] = v
        else:
            e["map_value"] = map_entries(v)
        out.append(e)
    return out


def matches(doc, query):
    query = query.strip()
    for op in (" OR ", " AND "):
        if op in query:
            parts = query.split(op)
            results = [matches(doc, p) for p in parts]
            return any(results) if op == " OR " else all(results)
    if query == "*:*":
        return True
    field, _, pattern = query.partition(":")
    value = doc.get(field)
    if value is None:
        return False
    return fnmatch.fnmatchcase(value.decode(errors="replace").lower(), pattern.strip('"').lower())


def error(message, code=0):
    return (CODES["error"], encode(ERROR_RESP, {"errmsg": message.encode(), "errcode": code}))


def streamed(code, spec, field, items):
    msgs = [(CODES[code], encode(spec, {field: items[i:i + 2]})) for i in range(0, len(items), 2)]
    return msgs + [(CODES[code], encode(spec, {"done": True}))]


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--certfile")
    p.add_argument("--keyfile")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--datatype", action="append", default=[])
    p.add_argument("--search-index", action="append", default=[])
    args = p.parse_args()
    server = Server(args)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", args.port)
    print(f"PORT {listener.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:
            # The test that started us is gone: stop at once, connections and all.
            os._exit(0)
        print("OK" + server.control(line.decode().strip()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
