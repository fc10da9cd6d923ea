#!/usr/bin/env python3
"""A test server speaking the CQL native protocol v4 (Apache Cassandra's
doc/native_protocol_v4.spec) on loopback, for cassandra_SUITE: no Cassandra
can run on these machines.

What it speaks: frames (v4 only; a v3 or v5 client is told so with a protocol
error), OPTIONS/SUPPORTED, STARTUP/READY, AUTHENTICATE with Cassandra's
PasswordAuthenticator (AUTH_RESPONSE/AUTH_SUCCESS, or an authentication
error), QUERY, PREPARE/EXECUTE with bound values (positional or named),
BATCH (logged, unlogged; prepared or not), RESULT Void/Rows (with paging
state)/Set_keyspace/Prepared/Schema_change, ERROR with each code's extra
fields, REGISTER (answered READY; SCHEMA_CHANGE events are pushed to
registered connections when a table or keyspace is created), custom
payloads skipped, no compression (none is offered).

What it stores: keyspaces and tables in memory, from a small CQL subset:
CREATE KEYSPACE/TABLE, DROP, TRUNCATE, USE, INSERT, UPDATE ... SET,
DELETE, and SELECT [DISTINCT] cols | * | COUNT(*) | now() [AS alias] FROM t
[WHERE col (=|<|>|<=|>=) v | col IN ... [AND ...]] [ORDER BY col [ASC|DESC]]
[LIMIT n] [ALLOW FILTERING], with literals or bind markers (`?`, `:name`;
`LIMIT ?` binds `[limit]`). The system tables drivers read at connect are
there: system.local (with tokens of the Murmur3 partitioner), system.peers
(empty), system.peers_v2 is unknown as on Cassandra 3.11, and
system_schema.keyspaces/tables/columns/types/functions/aggregates/triggers/
indexes/views made from the live schema. A query it does not understand is
answered with a syntax error and logged to stderr (and kept for `stats`).

Control: a second port takes one command per line and answers one line:
  fault KIND COUNT   the next COUNT requests on non-system tables fail:
                     overloaded, write_timeout, read_timeout, server_error,
                     drop (the connection is closed without an answer),
                     stall (the request is never answered)
  batch_limit N      a batch of more than N statements is refused with
                     Invalid "Batch too large" (0: no limit)
  kill               closes every client connection
  reset              no faults, no limit, counters to zero
  stats              a JSON object: counters, batch sizes, unknown queries
The first two lines on stdout are "PORT n" and "CONTROL m"; the server
exits when its standard input closes.
"""

import argparse
import hashlib
import ipaddress
import json
import re
import socket
import ssl
import struct
import sys
import threading
import uuid

# --------------------------------------------------------------------------
# Frames and notations (spec sections 2 and 3)
# --------------------------------------------------------------------------

ERROR, STARTUP, READY, AUTHENTICATE, OPTIONS, SUPPORTED, QUERY, RESULT = \
    0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x08
PREPARE, EXECUTE, REGISTER, EVENT, BATCH, AUTH_CHALLENGE, AUTH_RESPONSE, AUTH_SUCCESS = \
    0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10

MAX_BODY = 256 * 1024 * 1024
UNSET = object()

# Error codes (section 9)
SERVER_ERROR, PROTOCOL_ERROR, BAD_CREDENTIALS = 0x0000, 0x000A, 0x0100
OVERLOADED, WRITE_TIMEOUT, READ_TIMEOUT = 0x1001, 0x1100, 0x1200
SYNTAX_ERROR, INVALID, ALREADY_EXISTS, UNPREPARED = 0x2000, 0x2200, 0x2400, 0x2500


class CqlError(Exception):
    def __init__(self, code, message, extra=b""):
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise CqlError(PROTOCOL_ERROR, "truncated message body")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def long(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8")

    def long_string(self):
        return self.take(self.int()).decode("utf-8")

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def value(self):
        n = self.int()
        if n == -2:
            return UNSET
        return None if n < 0 else self.take(n)

    def short_bytes(self):
        return self.take(self.short())

    def string_map(self):
        return {self.string(): self.string() for _ in range(self.short())}

    def string_list(self):
        return [self.string() for _ in range(self.short())]

    def bytes_map(self):
        return {self.string(): self.bytes() for _ in range(self.short())}


def w_short(n):
    return struct.pack(">H", n)


def w_int(n):
    return struct.pack(">i", n)


def w_string(s):
    b = s.encode("utf-8")
    return w_short(len(b)) + b


def w_bytes(b):
    return w_int(-1) if b is None else w_int(len(b)) + b


def w_short_bytes(b):
    return w_short(len(b)) + b


def w_string_list(items):
    return w_short(len(items)) + b"".join(w_string(s) for s in items)


def w_string_multimap(m):
    return w_short(len(m)) + b"".join(w_string(k) + w_string_list(v) for k, v in m.items())


# --------------------------------------------------------------------------
# Types and values (sections 4.2.5.2 and 6)
# --------------------------------------------------------------------------

NATIVE = {"ascii": 0x01, "bigint": 0x02, "blob": 0x03, "boolean": 0x04, "counter": 0x05,
          "double": 0x07, "float": 0x08, "int": 0x09, "timestamp": 0x0B, "uuid": 0x0C,
          "text": 0x0D, "varint": 0x0E, "timeuuid": 0x0F, "inet": 0x10, "date": 0x11,
          "time": 0x12, "smallint": 0x13, "tinyint": 0x14}
INTS = {"bigint": 8, "counter": 8, "timestamp": 8, "time": 8, "int": 4, "smallint": 2, "tinyint": 1}


def parse_type(text):
    """'map<text, frozen<list<int>>>' -> ('map', 'text', ('list', 'int'))."""
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[<>,]", text)
    pos = 0

    def one():
        nonlocal pos
        name = tokens[pos].lower()
        pos += 1
        if name == "varchar":
            name = "text"
        if pos < len(tokens) and tokens[pos] == "<":
            pos += 1
            args = [one()]
            while tokens[pos] == ",":
                pos += 1
                args.append(one())
            pos += 1
            if name == "frozen":
                return args[0]
            if name not in ("list", "set", "map") or len(args) != (2 if name == "map" else 1):
                raise CqlError(INVALID, "unknown type " + text)
            return (name, *args)
        if name not in NATIVE:
            raise CqlError(INVALID, "unknown type " + text)
        return name

    try:
        t = one()
    except IndexError:
        raise CqlError(SYNTAX_ERROR, "bad type " + text)
    return t


def type_name(t):
    if isinstance(t, tuple):
        return "%s<%s>" % (t[0], ", ".join(type_name(a) for a in t[1:]))
    return t


def w_option(t):
    if isinstance(t, tuple):
        kind = {"list": 0x20, "map": 0x21, "set": 0x22}[t[0]]
        return w_short(kind) + b"".join(w_option(a) for a in t[1:])
    return w_short(NATIVE[t])


def encode(t, v):
    """A Python value as the bytes of type t (None: null)."""
    if v is None:
        return None
    if isinstance(t, tuple):
        if t[0] == "map":
            items = sorted(v.items())
            return w_int(len(items)) + b"".join(
                w_bytes(encode(t[1], k)) + w_bytes(encode(t[2], x)) for k, x in items)
        items = sorted(v) if t[0] == "set" else list(v)
        return w_int(len(items)) + b"".join(w_bytes(encode(t[1], x)) for x in items)
    if t in INTS:
        return int(v).to_bytes(INTS[t], "big", signed=True)
    if t in ("text", "ascii"):
        return v.encode("utf-8")
    if t == "blob":
        return bytes(v)
    if t == "boolean":
        return b"\x01" if v else b"\x00"
    if t == "double":
        return struct.pack(">d", v)
    if t == "float":
        return struct.pack(">f", v)
    if t in ("uuid", "timeuuid"):
        return v.bytes
    if t == "inet":
        return v.packed
    if t == "varint":
        n = (v.bit_length() + 8) // 8
        return v.to_bytes(n, "big", signed=True)
    if t == "date":
        return (v + 2 ** 31).to_bytes(4, "big")
    raise CqlError(SERVER_ERROR, "cannot encode " + type_name(t))


def decode(t, b):
    """The bytes of a bound value of type t as a Python value."""
    if b is None:
        return None
    try:
        if isinstance(t, tuple):
            r = Reader(b)
            n = r.int()
            if t[0] == "map":
                return {decode(t[1], r.bytes()): decode(t[2], r.bytes()) for _ in range(n)}
            items = [decode(t[1], r.bytes()) for _ in range(n)]
            return frozenset(items) if t[0] == "set" else items
        if t in INTS:
            if len(b) != INTS[t]:
                raise ValueError("expected %d bytes, got %d" % (INTS[t], len(b)))
            return int.from_bytes(b, "big", signed=True)
        if t == "text":
            return b.decode("utf-8")
        if t == "ascii":
            if any(c > 127 for c in b):
                raise ValueError("not ASCII")
            return b.decode("ascii")
        if t == "blob":
            return bytes(b)
        if t == "boolean":
            return b != b"\x00"
        if t == "double":
            return struct.unpack(">d", b)[0]
        if t == "float":
            return struct.unpack(">f", b)[0]
        if t in ("uuid", "timeuuid"):
            return uuid.UUID(bytes=bytes(b))
        if t == "inet":
            return ipaddress.ip_address(bytes(b))
        if t == "varint":
            return int.from_bytes(b, "big", signed=True)
        if t == "date":
            return int.from_bytes(b, "big") - 2 ** 31
    except (ValueError, UnicodeDecodeError, struct.error, CqlError) as e:
        raise CqlError(INVALID, "invalid value for %s: %s" % (type_name(t), e))
    raise CqlError(INVALID, "unsupported type " + type_name(t))


def literal(t, tok):
    """A CQL literal token (kind, text) as a Python value of type t."""
    kind, text = tok
    if kind == "null":
        return None
    try:
        if isinstance(t, tuple):
            if kind != "coll":
                raise ValueError("expected a collection")
            if t[0] == "map":
                return {literal(t[1], k): literal(t[2], v) for k, v in text}
            items = [literal(t[1], x) for x in text]
            return frozenset(items) if t[0] == "set" else items
        if t in INTS or t == "varint":
            return int(text)
        if t in ("double", "float"):
            return float(text)
        if t in ("text", "ascii"):
            if kind != "str":
                raise ValueError("expected a string")
            return text
        if t == "boolean":
            return text.lower() == "true"
        if t in ("uuid", "timeuuid"):
            return uuid.UUID(text)
        if t == "blob":
            return bytes.fromhex(text[2:])
        if t == "inet":
            return ipaddress.ip_address(text)
    except (ValueError, TypeError) as e:
        raise CqlError(INVALID, "invalid literal %r for %s: %s" % (text, type_name(t), e))
    raise CqlError(INVALID, "unsupported literal for " + type_name(t))


def sort_key(v):
    """Orders values of one column, nulls first."""
    if v is None:
        return (0,)
    if isinstance(v, (frozenset, set)):
        return (1, tuple(sorted(v)))
    if isinstance(v, dict):
        return (1, tuple(sorted(v.items())))
    if isinstance(v, list):
        return (1, tuple(v))
    return (1, v)


# --------------------------------------------------------------------------
# Schema and storage
# --------------------------------------------------------------------------

class Table:
    def __init__(self, ks, name, columns, pk, ck, desc=(), virtual=None):
        self.ks, self.name = ks, name
        self.columns = columns                       # [(name, type)] in order
        self.types = dict(columns)
        self.pk, self.ck = pk, ck                    # column names
        self.desc = set(desc)                        # clustering columns ordered DESC
        self.rows = {}                               # (pk values, ck values) -> row
        self.virtual = virtual                       # callable -> rows, for schema tables
        self.id = uuid.uuid5(uuid.NAMESPACE_OID, ks + "." + name)

    def all_rows(self):
        if self.virtual:
            return self.virtual()
        def key(item):
            (pk, ck), _ = item
            cks = []
            for name, v in zip(self.ck, ck):
                k = sort_key(v)
                cks.append(Desc(k) if name in self.desc else k)
            return (tuple(sort_key(v) for v in pk), tuple(cks))
        return [row for _, row in sorted(self.rows.items(), key=key)]

    def key_of(self, row):
        return (tuple(row.get(c) for c in self.pk), tuple(row.get(c) for c in self.ck))


class Desc:
    def __init__(self, k):
        self.k = k

    def __lt__(self, other):
        return other.k < self.k

    def __eq__(self, other):
        return self.k == other.k


class Store:
    def __init__(self, address):
        self.lock = threading.RLock()
        self.keyspaces = {}   # name -> replication map
        self.tables = {}      # (ks, name) -> Table
        self.address = ipaddress.ip_address(address)
        self.host_id = uuid.UUID("2b5d1c4e-6a37-4f3e-9c1d-0123456789ab")
        self.schema_version = uuid.uuid4()
        self.tokens = frozenset(str(-2 ** 63 + i * (2 ** 64 // 16)) for i in range(16))
        self.system_tables()

    def system_tables(self):
        for ks in ("system", "system_schema", "system_auth", "system_distributed", "system_traces"):
            self.keyspaces[ks] = {"class": "org.apache.cassandra.locator.LocalStrategy"}
        t = parse_type
        local = Table("system", "local", [
            ("key", "text"), ("bootstrapped", "text"), ("broadcast_address", "inet"),
            ("cluster_name", "text"), ("cql_version", "text"), ("data_center", "text"),
            ("host_id", "uuid"), ("listen_address", "inet"),
            ("native_protocol_version", "text"), ("partitioner", "text"), ("rack", "text"),
            ("release_version", "text"), ("rpc_address", "inet"), ("schema_version", "uuid"),
            ("tokens", t("set<text>"))], ["key"], [],
            virtual=lambda: [{
                "key": "local", "bootstrapped": "COMPLETED", "broadcast_address": self.address,
                "cluster_name": "mongoose_native_test", "cql_version": "3.4.4",
                "data_center": "datacenter1", "host_id": self.host_id,
                "listen_address": self.address, "native_protocol_version": "4",
                "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner", "rack": "rack1",
                "release_version": "3.11.16", "rpc_address": self.address,
                "schema_version": self.schema_version, "tokens": self.tokens}])
        peers = Table("system", "peers", [
            ("peer", "inet"), ("data_center", "text"), ("host_id", "uuid"),
            ("preferred_ip", "inet"), ("rack", "text"), ("release_version", "text"),
            ("rpc_address", "inet"), ("schema_version", "uuid"),
            ("tokens", t("set<text>"))], ["peer"], [], virtual=lambda: [])
        keyspaces = Table("system_schema", "keyspaces", [
            ("keyspace_name", "text"), ("durable_writes", "boolean"),
            ("replication", t("map<text, text>"))], ["keyspace_name"], [],
            virtual=lambda: [{"keyspace_name": k, "durable_writes": True, "replication": r}
                             for k, r in sorted(self.keyspaces.items())])
        tables = Table("system_schema", "tables", [
            ("keyspace_name", "text"), ("table_name", "text"),
            ("bloom_filter_fp_chance", "double"), ("caching", t("map<text, text>")),
            ("comment", "text"), ("compaction", t("map<text, text>")),
            ("compression", t("map<text, text>")), ("crc_check_chance", "double"),
            ("dclocal_read_repair_chance", "double"), ("default_time_to_live", "int"),
            ("extensions", t("map<text, blob>")), ("flags", t("set<text>")),
            ("gc_grace_seconds", "int"), ("id", "uuid"), ("max_index_interval", "int"),
            ("memtable_flush_period_in_ms", "int"), ("min_index_interval", "int"),
            ("read_repair_chance", "double"), ("speculative_retry", "text")],
            ["keyspace_name"], ["table_name"], virtual=self.table_rows)
        columns = Table("system_schema", "columns", [
            ("keyspace_name", "text"), ("table_name", "text"), ("column_name", "text"),
            ("clustering_order", "text"), ("column_name_bytes", "blob"), ("kind", "text"),
            ("position", "int"), ("type", "text")],
            ["keyspace_name"], ["table_name", "column_name"], virtual=self.column_rows)
        # Schema objects this server never has, with the columns drivers select.
        empty = [Table("system_schema", name, [("keyspace_name", "text")] + keys + more,
                       ["keyspace_name"], [k for k, _ in keys], virtual=lambda: [])
                 for name, keys, more in [
                     ("types", [("type_name", "text")], [("field_names", t("list<text>")),
                                                         ("field_types", t("list<text>"))]),
                     ("functions", [("function_name", "text")], []),
                     ("aggregates", [("aggregate_name", "text")], []),
                     ("views", [("view_name", "text")], [("base_table_name", "text"),
                                                         ("base_table_id", "uuid")]),
                     ("triggers", [("table_name", "text"), ("trigger_name", "text")],
                      [("options", t("map<text, text>"))]),
                     ("indexes", [("table_name", "text"), ("index_name", "text")],
                      [("kind", "text"), ("options", t("map<text, text>"))]),
                     ("dropped_columns", [("table_name", "text"), ("column_name", "text")],
                      [("dropped_time", "timestamp"), ("type", "text")])]]
        for table in [local, peers, keyspaces, tables, columns] + empty:
            self.tables[(table.ks, table.name)] = table

    def table_rows(self):
        return [{"keyspace_name": tb.ks, "table_name": tb.name, "bloom_filter_fp_chance": 0.01,
                 "caching": {"keys": "ALL", "rows_per_partition": "NONE"}, "comment": "",
                 "compaction": {"class": "org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy"},
                 "compression": {}, "crc_check_chance": 1.0, "dclocal_read_repair_chance": 0.1,
                 "default_time_to_live": 0, "extensions": {}, "flags": frozenset(["compound"]),
                 "gc_grace_seconds": 864000, "id": tb.id, "max_index_interval": 2048,
                 "memtable_flush_period_in_ms": 0, "min_index_interval": 128,
                 "read_repair_chance": 0.0, "speculative_retry": "99PERCENTILE"}
                for (ks, _), tb in sorted(self.tables.items()) if not ks.startswith("system")]

    def column_rows(self):
        rows = []
        for (ks, _), tb in sorted(self.tables.items()):
            if ks.startswith("system"):
                continue
            for name, ty in tb.columns:
                if name in tb.pk:
                    kind, pos, order = "partition_key", tb.pk.index(name), "none"
                elif name in tb.ck:
                    kind, pos = "clustering", tb.ck.index(name)
                    order = "desc" if name in tb.desc else "asc"
                else:
                    kind, pos, order = "regular", -1, "none"
                rows.append({"keyspace_name": ks, "table_name": tb.name, "column_name": name,
                             "clustering_order": order, "column_name_bytes": name.encode(),
                             "kind": kind, "position": pos, "type": type_name(ty)})
        return rows

    def table(self, ks, name):
        tb = self.tables.get((ks, name))
        if tb is None:
            if ks is None:
                raise CqlError(INVALID, "No keyspace has been specified. USE a keyspace, "
                                        "or explicitly specify keyspace.tablename")
            raise CqlError(INVALID, "unconfigured table %s" % name)
        return tb


# --------------------------------------------------------------------------
# The CQL subset: tokens, statements, evaluation
# --------------------------------------------------------------------------

TOKEN = re.compile(r"""\s*(?:
   (?P<str>'(?:[^']|'')*')
 | (?P<qid>"(?:[^"]|"")*")
 | (?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
 | (?P<hex>0[xX][0-9a-fA-F]*)
 | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
 | (?P<id>[A-Za-z_][A-Za-z0-9_$]*)
 | (?P<named>:[A-Za-z_][A-Za-z0-9_]*)
 | (?P<op><=|>=|!=|[(),.;=<>*?{}\[\]:])
 )""", re.X)


def tokenize(text):
    out, pos = [], 0
    text = text.rstrip().rstrip(";")
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise CqlError(SYNTAX_ERROR, "line 1:%d no viable alternative at input '%s'"
                           % (pos, text[pos:pos + 10]))
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "str":
            val = val[1:-1].replace("''", "'")
        elif kind == "qid":
            kind, val = "id", val[1:-1].replace('""', '"')
        elif kind == "id":
            if val.lower() in ("true", "false"):
                kind = "bool"
            elif val.lower() == "null":
                kind = "null"
            else:
                val = val.lower()
        out.append((kind, val))
        pos = m.end()
    return out


class Parser:
    def __init__(self, text, keyspace):
        self.toks = tokenize(text)
        self.pos = 0
        self.keyspace = keyspace
        self.markers = []          # [(name, type)] in order

    def peek(self, k=0):
        i = self.pos + k
        return self.toks[i] if i < len(self.toks) else ("eof", "")

    def next(self):
        tok = self.peek()
        self.pos += 1
        return tok

    def accept(self, *words):
        kind, val = self.peek()
        if kind in ("id", "op") and val in words:
            self.pos += 1
            return val
        return None

    def expect(self, *words):
        got = self.accept(*words)
        if got is None:
            raise CqlError(SYNTAX_ERROR, "line 1:%d mismatched input '%s' expecting %s"
                           % (self.pos, self.peek()[1], " or ".join(words)))
        return got

    def ident(self):
        kind, val = self.next()
        if kind != "id":
            raise CqlError(SYNTAX_ERROR, "expected an identifier, got '%s'" % val)
        return val

    def table_name(self):
        name = self.ident()
        if self.accept("."):
            return name, self.ident()
        return self.keyspace, name

    def done(self):
        if self.peek()[0] != "eof":
            raise CqlError(SYNTAX_ERROR, "line 1:%d extraneous input '%s'" % (self.pos, self.peek()[1]))

    def term(self, name, ty):
        """A literal or a bind marker for a value named `name` of type `ty`."""
        kind, val = self.peek()
        if kind == "op" and val == "?":
            self.pos += 1
            self.markers.append((name, ty))
            return ("bind", len(self.markers) - 1)
        if kind == "named":
            self.pos += 1
            self.markers.append((val[1:], ty))
            return ("bind", len(self.markers) - 1)
        return ("lit", literal(ty, self.literal_token()))

    def literal_token(self):
        kind, val = self.next()
        if kind in ("str", "num", "uuid", "hex", "bool", "null"):
            return (kind, val)
        if kind == "op" and val in ("[", "{"):
            close = "]" if val == "[" else "}"
            items = []
            while not self.accept(close):
                item = self.literal_token()
                if self.accept(":"):
                    item = (item, self.literal_token())
                items.append(item)
                self.accept(",")
            return ("coll", items)
        raise CqlError(SYNTAX_ERROR, "expected a value, got '%s'" % val)

    def conditions(self, tb):
        conds = []
        while True:
            col = self.ident()
            if col not in tb.types:
                raise CqlError(INVALID, "Undefined column name %s" % col)
            ty = tb.types[col]
            if self.accept("in"):
                if self.peek() == ("op", "("):
                    self.next()
                    vals = []
                    while not self.accept(")"):
                        vals.append(self.term(col, ty))
                        self.accept(",")
                    conds.append((col, "in", vals))
                else:
                    conds.append((col, "in", self.term("in(%s)" % col, ("list", ty))))
            else:
                op = self.expect("=", "<", ">", "<=", ">=")
                conds.append((col, op, self.term(col, ty)))
            if not self.accept("and"):
                return conds


def value_of(term, values):
    kind, x = term
    return values[x] if kind == "bind" else x


def matches(row, conds, values):
    for col, op, term in conds:
        v = row.get(col)
        if op == "in":
            allowed = [value_of(t, values) for t in term] if isinstance(term, list) \
                else (value_of(term, values) or [])
            if v not in allowed:
                return False
            continue
        want = value_of(term, values)
        if want is None or v is None:
            return False
        if not {"=": v == want, "<": v < want, ">": v > want,
                "<=": v <= want, ">=": v >= want}[op]:
            return False
    return True


class Statement:
    """A parsed statement: its bind markers, partition key indexes, result
    columns, and how to run it against the store with bound values."""
    kind = "other"
    result = None              # [(name, type)] for selects
    table = None

    def pk_indexes(self):
        return []


class Select(Statement):
    kind = "select"

    def __init__(self, p, store):
        self.distinct = bool(p.accept("distinct"))
        sel = []
        if p.accept("*"):
            sel = None
        else:
            while True:
                if p.accept("count"):
                    p.expect("(")
                    p.expect("*", "1")
                    p.expect(")")
                    item = ("count", "count")
                elif p.peek() == ("id", "now") and p.peek(1) == ("op", "("):
                    p.pos += 3
                    item = ("now", "system.now()")
                else:
                    col = p.ident()
                    item = ("col", col)
                if p.accept("as"):
                    item = (item[0], p.ident(), item[1])
                sel.append(item)
                if not p.accept(","):
                    break
        p.expect("from")
        ks, name = p.table_name()
        tb = self.table = store.table(ks, name)
        self.conds = p.conditions(tb) if p.accept("where") else []
        self.order_desc = False
        if p.accept("order"):
            p.expect("by")
            col = p.ident()
            if col not in tb.ck:
                raise CqlError(INVALID, "Order by is currently only supported on the clustered "
                                        "columns of the PRIMARY KEY, got %s" % col)
            self.order_desc = (p.accept("asc", "desc") == "desc") != (col in tb.desc)
        self.limit = p.term("[limit]", "int") if p.accept("limit") else None
        if p.accept("allow"):
            p.expect("filtering")
        p.done()
        self.select = []
        for item in (sel if sel is not None else [("col", c) for c, _ in tb.columns]):
            kind, alias = item[0], item[1]
            source = item[2] if len(item) > 2 else alias
            if kind == "col":
                if source not in tb.types:
                    raise CqlError(INVALID, "Undefined column name %s" % source)
                self.select.append((kind, source, alias, tb.types[source]))
            elif kind == "count":
                self.select.append((kind, source, alias, "bigint"))
            else:
                self.select.append((kind, source, alias, "timeuuid"))
        self.result = [(alias, ty) for _, _, alias, ty in self.select]

    def pk_indexes(self):
        return pk_indexes(self.table, self.conds)

    def rows(self, values):
        rows = [r for r in self.table.all_rows() if matches(r, self.conds, values)]
        if self.order_desc:
            rows.reverse()
        if self.distinct:
            seen, out = set(), []
            for r in rows:
                k = tuple(sort_key(r.get(c)) for _, c, _, _ in self.select)
                if k not in seen:
                    seen.add(k)
                    out.append(r)
            rows = out
        if any(kind == "count" for kind, _, _, _ in self.select):
            first = rows[0] if rows else {}
            return [[len(rows) if kind == "count" else
                     (uuid.uuid1() if kind == "now" else first.get(src))
                     for kind, src, _, _ in self.select]]
        if self.limit is not None:
            n = value_of(self.limit, values)
            if n is None or n <= 0:
                raise CqlError(INVALID, "LIMIT must be strictly positive")
            rows = rows[:n]
        return [[uuid.uuid1() if kind == "now" else r.get(src)
                 for kind, src, _, _ in self.select] for r in rows]


def pk_indexes(tb, conds):
    found = {}
    for col, op, term in conds:
        if op == "=" and col in tb.pk and term[0] == "bind":
            found[col] = term[1]
    return [found[c] for c in tb.pk] if all(c in found for c in tb.pk) else []


def stored(ty, v):
    """An empty collection is no cells at all in Cassandra: it reads as null."""
    if isinstance(ty, tuple) and v is not None and len(v) == 0:
        return None
    return v


def check_key(tb, row):
    for c in tb.pk + tb.ck:
        if row.get(c) is None:
            what = "partition key part" if c in tb.pk else "PRIMARY KEY part"
            raise CqlError(INVALID, "Invalid null value in condition for %s %s" % (what, c))


class Insert(Statement):
    kind = "write"

    def __init__(self, p, store):
        p.expect("into")
        ks, name = p.table_name()
        tb = self.table = store.table(ks, name)
        p.expect("(")
        cols = []
        while not p.accept(")"):
            col = p.ident()
            if col not in tb.types:
                raise CqlError(INVALID, "Undefined column name %s" % col)
            cols.append(col)
            p.accept(",")
        p.expect("values")
        p.expect("(")
        self.assign = []
        for col in cols:
            self.assign.append((col, p.term(col, tb.types[col])))
            p.accept(",")
        p.expect(")")
        self.if_not_exists = bool(p.accept("if") and p.expect("not") and p.expect("exists"))
        if p.accept("using"):
            while True:
                p.expect("ttl", "timestamp")
                p.term("[ttl]", "int")
                if not p.accept("and"):
                    break
        p.done()
        missing = [c for c in tb.pk if c not in cols]
        if missing:
            raise CqlError(INVALID, "Some partition key parts are missing: " + ", ".join(missing))

    def pk_indexes(self):
        idx = {c: t[1] for c, t in self.assign if t[0] == "bind"}
        return [idx[c] for c in self.table.pk] if all(c in idx for c in self.table.pk) else []

    def run(self, values):
        row = {c: value_of(t, values) for c, t in self.assign}
        row = {c: stored(self.table.types[c], v) for c, v in row.items() if v is not UNSET}
        tb = self.table
        check_key(tb, row)
        key = tb.key_of(row)
        if self.if_not_exists and key in tb.rows:
            return
        tb.rows.setdefault(key, {}).update(row)


class Update(Statement):
    kind = "write"

    def __init__(self, p, store):
        ks, name = p.table_name()
        tb = self.table = store.table(ks, name)
        if p.accept("using"):
            p.expect("ttl", "timestamp")
            p.term("[ttl]", "int")
        p.expect("set")
        self.assign = []
        while True:
            col = p.ident()
            if col not in tb.types:
                raise CqlError(INVALID, "Undefined column name %s" % col)
            p.expect("=")
            self.assign.append((col, p.term(col, tb.types[col])))
            if not p.accept(","):
                break
        p.expect("where")
        self.conds = p.conditions(tb)
        p.done()

    def pk_indexes(self):
        return pk_indexes(self.table, self.conds)

    def run(self, values):
        tb = self.table
        row = {c: value_of(t, values) for c, op, t in self.conds if op == "="}
        check_key(tb, row)
        row.update({c: stored(tb.types[c], value_of(t, values)) for c, t in self.assign})
        tb.rows.setdefault(tb.key_of(row), {}).update(
            {c: v for c, v in row.items() if v is not UNSET})


class Delete(Statement):
    kind = "write"

    def __init__(self, p, store):
        p.expect("from")
        ks, name = p.table_name()
        tb = self.table = store.table(ks, name)
        p.expect("where")
        self.conds = p.conditions(tb)
        p.done()
        if not all(any(c == col and op in ("=", "in") for col, op, _ in self.conds) for c in tb.pk):
            raise CqlError(INVALID, "Some partition key parts are missing: " + ", ".join(tb.pk))

    def pk_indexes(self):
        return pk_indexes(self.table, self.conds)

    def run(self, values):
        tb = self.table
        for key, row in list(tb.rows.items()):
            if matches(row, self.conds, values):
                del tb.rows[key]


class Schema(Statement):
    """USE, CREATE, DROP, TRUNCATE: run at once (they take no bound values)."""

    def __init__(self, p, store, word, conn_keyspace):
        self.outcome = None
        self.store = store
        self.parse(p, word, conn_keyspace)

    def parse(self, p, word, conn_keyspace):
        store = self.store
        if word == "use":
            self.outcome = ("keyspace", p.ident())
            p.done()
            if self.outcome[1] not in store.keyspaces:
                raise CqlError(INVALID, "Keyspace '%s' does not exist" % self.outcome[1])
            return
        if word == "truncate":
            p.accept("table")
            ks, name = p.table_name()
            self.tb = store.table(ks, name)
            p.done()
            self.outcome = ("truncate", ks, name)
            return
        what = p.expect("keyspace", "table")
        exists_ok = bool(p.accept("if") and (word == "drop" or p.expect("not")) and p.expect("exists"))
        if what == "keyspace":
            name = p.ident()
            if word == "create":
                p.expect("with")
                p.expect("replication")
                p.expect("=")
                repl = {k[1]: v[1] for k, v in p.literal_token()[1]}
                while p.accept("and"):
                    p.ident()
                    p.expect("=")
                    p.literal_token()
                p.done()
                self.outcome = ("create_ks", name, repl, exists_ok)
            else:
                p.done()
                self.outcome = ("drop_ks", name, exists_ok)
            return
        ks, name = p.table_name()
        if ks is None:
            raise CqlError(INVALID, "No keyspace has been specified")
        if word == "drop":
            p.done()
            self.outcome = ("drop_table", ks, name, exists_ok)
            return
        p.expect("(")
        columns, pk, ck = [], [], []
        while not p.accept(")"):
            if p.accept("primary"):
                p.expect("key")
                p.expect("(")
                if p.accept("("):
                    while not p.accept(")"):
                        pk.append(p.ident())
                        p.accept(",")
                else:
                    pk.append(p.ident())
                while p.accept(","):
                    ck.append(p.ident())
                p.expect(")")
            else:
                col = p.ident()
                start = p.pos
                depth = 0
                while True:
                    kind, val = p.peek()
                    if kind == "eof" or (depth == 0 and val in (",", ")")) or \
                            (depth == 0 and val == "primary"):
                        break
                    depth += {"<": 1, ">": -1}.get(val, 0) if kind == "op" else 0
                    p.pos += 1
                columns.append((col, parse_type(" ".join(v for _, v in p.toks[start:p.pos]))))
                if p.accept("primary"):
                    p.expect("key")
                    pk.append(col)
            p.accept(",")
        desc = []
        if p.accept("with"):
            while True:
                if p.accept("clustering"):
                    p.expect("order")
                    p.expect("by")
                    p.expect("(")
                    while not p.accept(")"):
                        col = p.ident()
                        if p.accept("asc", "desc") == "desc":
                            desc.append(col)
                        p.accept(",")
                else:
                    p.ident()
                    p.expect("=")
                    p.literal_token()
                if not p.accept("and"):
                    break
        p.done()
        if not pk:
            raise CqlError(INVALID, "No PRIMARY KEY specifed (exactly one required)")
        names = [c for c, _ in columns]
        for c in pk + ck:
            if c not in names:
                raise CqlError(INVALID, "Unknown definition %s referenced in PRIMARY KEY" % c)
        self.outcome = ("create_table", Table(ks, name, columns, pk, ck, desc), exists_ok)

    def run(self, _values):
        store, out = self.store, self.outcome
        if out[0] in ("keyspace",):
            return out
        if out[0] == "truncate":
            self.tb.rows.clear()
            return None
        if out[0] == "create_ks":
            _, name, repl, ok = out
            if name in store.keyspaces:
                if ok:
                    return None
                raise CqlError(ALREADY_EXISTS, "Keyspace %s already exists" % name,
                               w_string(name) + w_string(""))
            store.keyspaces[name] = repl
            return ("schema", "CREATED", "KEYSPACE", [name])
        if out[0] == "drop_ks":
            _, name, ok = out
            if name not in store.keyspaces:
                if ok:
                    return None
                raise CqlError(INVALID, "Cannot drop non existing keyspace '%s'." % name)
            del store.keyspaces[name]
            for key in [k for k in store.tables if k[0] == name]:
                del store.tables[key]
            return ("schema", "DROPPED", "KEYSPACE", [name])
        if out[0] == "drop_table":
            _, ks, name, ok = out
            if (ks, name) not in store.tables:
                if ok:
                    return None
                raise CqlError(INVALID, "unconfigured table %s" % name)
            del store.tables[(ks, name)]
            return ("schema", "DROPPED", "TABLE", [ks, name])
        _, tb, ok = out
        if tb.ks not in store.keyspaces:
            raise CqlError(INVALID, "Keyspace %s doesn't exist" % tb.ks)
        if (tb.ks, tb.name) in store.tables:
            if ok:
                return None
            raise CqlError(ALREADY_EXISTS, "Object %s.%s already exists" % (tb.ks, tb.name),
                           w_string(tb.ks) + w_string(tb.name))
        store.tables[(tb.ks, tb.name)] = tb
        return ("schema", "CREATED", "TABLE", [tb.ks, tb.name])


def parse(text, store, keyspace):
    p = Parser(text, keyspace)
    word = p.accept("select", "insert", "update", "delete", "use", "create", "drop", "truncate")
    if word is None:
        raise CqlError(SYNTAX_ERROR, "line 1:0 no viable alternative at input '%s'" % p.peek()[1])
    with store.lock:
        if word == "select":
            st = Select(p, store)
        elif word == "insert":
            st = Insert(p, store)
        elif word == "update":
            st = Update(p, store)
        elif word == "delete":
            st = Delete(p, store)
        else:
            st = Schema(p, store, word, keyspace)
    st.markers = p.markers
    return st


# --------------------------------------------------------------------------
# Faults and counters (the control port)
# --------------------------------------------------------------------------

class Control:
    KINDS = ("overloaded", "write_timeout", "read_timeout", "server_error", "drop", "stall")

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.faults = []           # [kind] consumed one per data request
            self.batch_limit = 0
            self.counters = {"connections": 0, "startups": 0, "auth_failures": 0,
                             "queries": 0, "prepares": 0, "executes": 0, "batches": 0,
                             "pages": 0, "faults": 0}
            self.batch_sizes = []
            self.unknown = []

    def count(self, name, n=1):
        with self.lock:
            self.counters[name] += n

    def take_fault(self):
        with self.lock:
            if self.faults:
                self.counters["faults"] += 1
                return self.faults.pop(0)
            return None

    def command(self, line, server):
        words = line.split()
        if not words:
            return "error empty command"
        cmd = words[0]
        if cmd == "fault" and len(words) == 3 and words[1] in self.KINDS and words[2].isdigit():
            with self.lock:
                self.faults.extend([words[1]] * int(words[2]))
            return "ok"
        if cmd == "batch_limit" and len(words) == 2 and words[1].isdigit():
            with self.lock:
                self.batch_limit = int(words[1])
            return "ok"
        if cmd == "reset":
            self.reset()
            return "ok"
        if cmd == "kill":
            server.kill_connections()
            return "ok"
        if cmd == "stats":
            with self.lock:
                return json.dumps(dict(self.counters, batch_sizes=self.batch_sizes,
                                       unknown=self.unknown,
                                       open_connections=len(server.connections)))
        return "error unknown command " + line


# --------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------

class Connection:
    def __init__(self, server, sock):
        self.server, self.sock = server, sock
        self.store, self.control = server.store, server.control
        self.keyspace = None
        self.ready = False
        self.authenticated = server.credentials is None
        self.registered = set()
        self.write_lock = threading.Lock()

    def send(self, stream, opcode, body):
        header = struct.pack(">BBhBi", 0x84, 0, stream, opcode, len(body))
        with self.write_lock:
            self.sock.sendall(header + body)

    def send_error(self, stream, e):
        self.send(stream, ERROR, w_int(e.code) + w_string(e.message) + e.extra)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def serve(self):
        self.control.count("connections")
        try:
            while True:
                version, flags, stream, opcode, length = struct.unpack(">BBhBi", self.read_exact(9))
                if length < 0 or length > MAX_BODY:
                    self.send_error(stream, CqlError(PROTOCOL_ERROR, "frame too large"))
                    return
                body = self.read_exact(length)
                if version & 0x7F != 4:
                    # Answered in the client's version, as Cassandra does, so it can downgrade.
                    msg = "Invalid or unsupported protocol version (%d); supported versions " \
                          "are (4/v4)" % (version & 0x7F)
                    b = w_int(PROTOCOL_ERROR) + w_string(msg)
                    hdr = struct.pack(">BBhBi", 0x80 | (version & 0x7F), 0, stream, ERROR, len(b))
                    with self.write_lock:
                        self.sock.sendall(hdr + b)
                    continue
                if flags & 0x01:
                    self.send_error(stream, CqlError(PROTOCOL_ERROR, "no compression was agreed"))
                    continue
                r = Reader(body)
                if flags & 0x04:
                    r.bytes_map()
                try:
                    self.handle(stream, opcode, r)
                except CqlError as e:
                    self.send_error(stream, e)
                except Dropped:
                    return
                except Exception as e:   # a bug here: tell the client, keep serving
                    print("cql_server: %s: %r" % (type(e).__name__, e), file=sys.stderr, flush=True)
                    self.send_error(stream, CqlError(SERVER_ERROR, "test server error: %r" % e))
        except (EOFError, OSError, ssl.SSLError):
            pass
        finally:
            self.server.forget(self)
            self.close()

    def handle(self, stream, opcode, r):
        if opcode == OPTIONS:
            self.send(stream, SUPPORTED, w_string_multimap(
                {"CQL_VERSION": ["3.4.4"], "COMPRESSION": [], "PROTOCOL_VERSIONS": ["3/v3", "4/v4"]}))
        elif opcode == STARTUP:
            opts = r.string_map()
            if "CQL_VERSION" not in opts:
                raise CqlError(PROTOCOL_ERROR, "Missing value CQL_VERSION in STARTUP message")
            if opts.get("COMPRESSION"):
                raise CqlError(PROTOCOL_ERROR, "Unknown compression algorithm: " + opts["COMPRESSION"])
            self.control.count("startups")
            self.ready = True
            if self.authenticated:
                self.send(stream, READY, b"")
            else:
                self.send(stream, AUTHENTICATE,
                          w_string("org.apache.cassandra.auth.PasswordAuthenticator"))
        elif opcode == AUTH_RESPONSE:
            token = r.bytes() or b""
            parts = token.split(b"\x00")
            if len(parts) == 3 and (parts[1], parts[2]) == self.server.credentials:
                self.authenticated = True
                self.send(stream, AUTH_SUCCESS, w_bytes(None))
            else:
                self.control.count("auth_failures")
                user = parts[1].decode("utf-8", "replace") if len(parts) == 3 else "?"
                raise CqlError(BAD_CREDENTIALS, "Provided username %s and/or password are "
                                                "incorrect" % user)
        elif not self.ready:
            raise CqlError(PROTOCOL_ERROR, "Unexpected message %d, expecting STARTUP or OPTIONS"
                           % opcode)
        elif not self.authenticated:
            raise CqlError(PROTOCOL_ERROR, "Unexpected message %d, the connection is not "
                                           "authenticated" % opcode)
        elif opcode == REGISTER:
            self.registered.update(r.string_list())
            self.send(stream, READY, b"")
        elif opcode == QUERY:
            self.control.count("queries")
            text = r.long_string()
            st = self.parse(text)
            self.run(stream, st, self.params(r, st), text)
        elif opcode == PREPARE:
            self.control.count("prepares")
            text = r.long_string()
            st = self.parse(text)
            pid = hashlib.md5(((self.keyspace or "") + text).encode()).digest()
            self.server.prepared[pid] = (text, self.keyspace)
            self.send(stream, RESULT, w_int(4) + w_short_bytes(pid) + self.prepared_metadata(st)
                      + self.rows_metadata(st, False, None))
        elif opcode == EXECUTE:
            self.control.count("executes")
            pid = r.short_bytes()
            st, text = self.prepared(pid)
            self.run(stream, st, self.params(r, st), text)
        elif opcode == BATCH:
            self.batch(stream, r)
        else:
            raise CqlError(PROTOCOL_ERROR, "Unknown opcode %d" % opcode)

    def parse(self, text):
        try:
            return parse(text, self.store, self.keyspace)
        except CqlError as e:
            if e.code == SYNTAX_ERROR:
                with self.control.lock:
                    self.control.unknown.append(text)
            if e.code == SYNTAX_ERROR:
                print("cql_server: not understood: %s (%s)" % (text, e.message),
                      file=sys.stderr, flush=True)
            raise

    def prepared(self, pid):
        entry = self.server.prepared.get(pid)
        if entry is None:
            raise CqlError(UNPREPARED, "Prepared query with ID %s not found" % pid.hex(),
                           w_short_bytes(pid))
        text, ks = entry
        return parse(text, self.store, ks), text

    def params(self, r, st):
        consistency = r.short()
        flags = r.byte()
        values = []
        if flags & 0x01:
            n = r.short()
            raw = []
            for _ in range(n):
                name = r.string() if flags & 0x40 else None
                raw.append((name, r.value()))
            values = self.bind(st, raw)
        elif st.markers:
            raise CqlError(INVALID, "There were %d markers(?) in CQL but 0 bound variables"
                           % len(st.markers))
        page_size = r.int() if flags & 0x04 else -1
        paging_state = r.bytes() if flags & 0x08 else None
        if flags & 0x10:
            r.short()
        if flags & 0x20:
            r.long()
        return {"consistency": consistency, "skip_metadata": bool(flags & 0x02),
                "values": values, "page_size": page_size, "paging_state": paging_state}

    def bind(self, st, raw):
        if len(raw) != len(st.markers):
            raise CqlError(INVALID, "There were %d markers(?) in CQL but %d bound variables"
                           % (len(st.markers), len(raw)))
        if raw and raw[0][0] is not None:
            by_name = dict(raw)
            raw = [(n, by_name.get(n, UNSET)) for n, _ in st.markers]
        return [v if v is UNSET else decode(ty, v) for (_, v), (_, ty) in zip(raw, st.markers)]

    def data_fault(self, st):
        """The fault the control port set for this request, if it touches user data."""
        tb = st.table
        if tb is None or tb.ks.startswith("system"):
            return None
        return self.control.take_fault()

    def apply_fault(self, stream, fault, write_type):
        if fault == "drop":
            self.close()
            raise Dropped()
        if fault == "stall":
            return True
        if fault == "overloaded":
            raise CqlError(OVERLOADED, "Server is in overloaded state. Cannot accept more requests "
                                       "at this point")
        if fault == "write_timeout":
            raise CqlError(WRITE_TIMEOUT, "Operation timed out - received only 0 responses.",
                           w_short(1) + w_int(0) + w_int(1) + w_string(write_type))
        if fault == "read_timeout":
            raise CqlError(READ_TIMEOUT, "Operation timed out - received only 0 responses.",
                           w_short(1) + w_int(0) + w_int(1) + b"\x00")
        raise CqlError(SERVER_ERROR, "java.lang.RuntimeException: injected by the test")

    def run(self, stream, st, params, text):
        fault = self.data_fault(st)
        if fault and self.apply_fault(stream, fault, "SIMPLE"):
            return
        with self.store.lock:
            if st.kind == "select":
                rows = st.rows(params["values"])
                self.send_rows(stream, st, rows, params)
                return
            outcome = st.run(params["values"])
        if outcome and outcome[0] == "keyspace":
            self.keyspace = outcome[1]
            self.send(stream, RESULT, w_int(3) + w_string(outcome[1]))
        elif outcome and outcome[0] == "schema":
            _, change, target, names = outcome
            body = w_string(change) + w_string(target) + b"".join(w_string(n) for n in names)
            self.store.schema_version = uuid.uuid4()
            self.send(stream, RESULT, w_int(5) + body)
            self.server.event(w_string("SCHEMA_CHANGE") + body)
        else:
            self.send(stream, RESULT, w_int(1))

    def send_rows(self, stream, st, rows, params):
        start = 0
        if params["paging_state"] is not None:
            try:
                start = int(params["paging_state"].decode())
            except ValueError:
                raise CqlError(PROTOCOL_ERROR, "Invalid value for the paging state")
        size = params["page_size"]
        end = len(rows) if size <= 0 else min(len(rows), start + size)
        more = str(end).encode() if end < len(rows) else None
        if params["paging_state"] is not None or more is not None:
            self.control.count("pages")
        body = w_int(2) + self.rows_metadata(st, params["skip_metadata"], more)
        body += w_int(end - start)
        out = []
        for row in rows[start:end]:
            for (_, ty), v in zip(st.result, row):
                out.append(w_bytes(encode(ty, v)))
        self.send(stream, RESULT, body + b"".join(out))

    def rows_metadata(self, st, skip, paging_state):
        cols = st.result or []
        flags = 0
        if paging_state is not None:
            flags |= 0x02
        if skip or not cols:
            flags |= 0x04
            out = w_int(flags) + w_int(len(cols))
            return out + (w_bytes(paging_state) if paging_state is not None else b"")
        flags |= 0x01
        out = w_int(flags) + w_int(len(cols))
        if paging_state is not None:
            out += w_bytes(paging_state)
        out += w_string(st.table.ks) + w_string(st.table.name)
        return out + b"".join(w_string(n) + w_option(t) for n, t in cols)

    def prepared_metadata(self, st):
        pks = st.pk_indexes()
        out = w_int(0x01 if st.table else 0) + w_int(len(st.markers)) + w_int(len(pks))
        out += b"".join(w_short(i) for i in pks)
        if st.table:
            out += w_string(st.table.ks) + w_string(st.table.name)
        for name, ty in st.markers:
            if not st.table:
                out += w_string("") + w_string("")
            out += w_string(name) + w_option(ty)
        return out

    def batch(self, stream, r):
        self.control.count("batches")
        kind = r.byte()
        n = r.short()
        items = []
        for _ in range(n):
            if r.byte() == 0:
                text = r.long_string()
                st = self.parse(text)
            else:
                st, text = self.prepared(r.short_bytes())
            count = r.short()
            raw = [(None, r.value()) for _ in range(count)]
            items.append((st, raw))
        r.short()
        flags = r.byte()
        if flags & 0x10:
            r.short()
        if flags & 0x20:
            r.long()
        with self.control.lock:
            self.control.batch_sizes.append(n)
            limit = self.control.batch_limit
        for st, _ in items:
            if st.kind != "write":
                raise CqlError(INVALID, "Invalid statement in batch: only UPDATE, INSERT and "
                                        "DELETE statements are allowed.")
        fault = self.data_fault(items[0][0]) if items else None
        if fault and self.apply_fault(stream, fault, "UNLOGGED_BATCH" if kind == 1 else "BATCH"):
            return
        if limit and n > limit:
            raise CqlError(INVALID, "Batch too large")
        bound = [(st, self.bind(st, raw)) for st, raw in items]
        with self.store.lock:
            for st, values in bound:
                st.run(values)
        self.send(stream, RESULT, w_int(1))


class Dropped(Exception):
    pass


class Server:
    def __init__(self, args):
        self.store = Store("127.0.0.1")
        self.control = Control()
        self.credentials = None
        if args.username is not None:
            self.credentials = (args.username.encode(), (args.password or "").encode())
        self.tls = None
        if args.certfile:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(args.certfile, args.keyfile)
        self.prepared = {}
        self.connections = set()
        self.lock = threading.Lock()
        for ks in args.keyspace:
            self.store.keyspaces[ks] = {"class": "org.apache.cassandra.locator.SimpleStrategy",
                                        "replication_factor": "1"}

    def forget(self, conn):
        with self.lock:
            self.connections.discard(conn)

    def kill_connections(self):
        with self.lock:
            conns = list(self.connections)
        for c in conns:
            c.close()

    def event(self, body):
        with self.lock:
            conns = [c for c in self.connections if "SCHEMA_CHANGE" in c.registered]
        for c in conns:
            try:
                c.send(-1, EVENT, body)
            except OSError:
                pass

    def accept_loop(self, listener):
        while True:
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.start_connection, args=(sock,), daemon=True).start()

    def start_connection(self, sock):
        if self.tls:
            try:
                sock.settimeout(10)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            except (ssl.SSLError, OSError) as e:
                print("cql_server: TLS handshake failed: %s" % e, file=sys.stderr, flush=True)
                sock.close()
                return
        conn = Connection(self, sock)
        with self.lock:
            self.connections.add(conn)
        conn.serve()

    def control_loop(self, listener):
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=self.control_client, args=(sock,), daemon=True).start()

    def control_client(self, sock):
        with sock, sock.makefile("rw") as f:
            for line in f:
                f.write(self.control.command(line.strip(), self) + "\n")
                f.flush()


def listen(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    ap.add_argument("--keyspace", action="append", default=[],
                    help="a keyspace (SimpleStrategy, replication factor 1) to create at start")
    ap.add_argument("--schema", help="a file of CQL statements (one per line) run at start")
    args = ap.parse_args()
    server = Server(args)
    if args.schema:
        with open(args.schema) as f:
            for line in f:
                if line.strip() and not line.strip().startswith("--"):
                    st = parse(line, server.store, None)
                    st.run([])
    cql, control = listen(args.port), listen(args.control_port)
    threading.Thread(target=server.accept_loop, args=(cql,), daemon=True).start()
    threading.Thread(target=server.control_loop, args=(control,), daemon=True).start()
    print("PORT %d" % cql.getsockname()[1], flush=True)
    print("CONTROL %d" % control.getsockname()[1], flush=True)
    sys.stdin.read()   # exits when the owner closes our standard input


if __name__ == "__main__":
    main()
