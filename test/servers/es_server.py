#!/usr/bin/env python3
"""An Elasticsearch stand-in for elastic_SUITE: no Elasticsearch runs here.

Written from Elasticsearch's REST API reference for the endpoints
MongooseIM's mongoose_elasticsearch uses and a test needs:

  GET /                                  server and version information
  GET /_cluster/health                   cluster health
  PUT|POST /{index}/{type}/{id}          index a document (typed: 5.x, 6.x, 7.x)
  PUT|POST /{index}/_doc/{id}            index a document (typeless: 7.x and later)
  GET /{index}/{type}/{id}               get a document
  GET|POST /{index}[/{type}]/_search     search: match_all, match, term, terms,
                                         range, bool, ids; from, size, sort
  GET|POST /{index}[/{type}]/_count      count
  POST /{index}[/{type}]/_delete_by_query
  POST /{index}/_refresh

Documents live in memory and are searchable at once (as after a refresh).
It presents itself as the version given with --version (and --distribution
opensearch): from Elasticsearch 8 (OpenSearch 2) on, mapping types in paths
are refused as the real server refuses them; 6.x allows one type per index.
Elasticsearch 7.14 and later send X-Elastic-Product, which the official
clients require. With --username/--password every request needs HTTP basic
authentication.

Faults for the tests: POST /_mn_test/fault with {"mode": M, "count": N}
applies to the next N requests: "status" (answers {"status": S} with
Elasticsearch's error body for it, e.g. 429 or 503), "drop" (closes the
connection without an answer), "stall" (answers nothing for "ms"
milliseconds), "garbage" (200 with a body that is not JSON).

Prints "PORT <n>" once listening; exits when its standard input closes, so
it never outlives the test that started it.
"""
import argparse
import base64
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
INDICES = {}  # name -> {"type": str | None, "docs": {id: {"source":, "version":, "seq_no":}}}
FAULT = {"mode": None, "count": 0}
SEQ = [0]


class EsError(Exception):
    def __init__(self, status, etype, reason, **extra):
        super().__init__(reason)
        self.status, self.etype, self.reason, self.extra = status, etype, reason, extra

    def body(self):
        cause = {"type": self.etype, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [cause], **cause}, "status": self.status}


class NoHandler(Exception):
    pass


def shards():
    return {"total": 2, "successful": 1, "skipped": 0, "failed": 0}


class Server:
    def __init__(self, args):
        self.version = args.version
        numbers = [int(n) for n in re.findall(r"\d+", args.version)[:2]] + [0]
        self.major = numbers[0]
        # Elasticsearch 7.14 and later name themselves; the official clients check it.
        self.product_header = args.distribution == "elasticsearch" and numbers[:2] >= [7, 14]
        self.opensearch = args.distribution == "opensearch"
        self.auth = None
        if args.username is not None:
            pair = f"{args.username}:{args.password or ''}".encode()
            self.auth = "Basic " + base64.b64encode(pair).decode()

    @property
    def typed(self):
        """Whether mapping types may appear in paths."""
        return self.major < (2 if self.opensearch else 8)

    @property
    def type_in_answers(self):
        return not self.opensearch and self.major < 8


SERVER = None


def index_missing(name):
    return EsError(404, "index_not_found_exception", f"no such index [{name}]",
                   index=name, **{"resource.type": "index_or_alias", "resource.id": name})


def check_index_name(name):
    if name != name.lower():
        raise EsError(400, "invalid_index_name_exception",
                      f"Invalid index name [{name}], must be lowercase", index=name)
    if name.startswith(("_", "-", "+")):
        raise EsError(400, "invalid_index_name_exception",
                      f"Invalid index name [{name}], must not start with '_', '-', or '+'",
                      index=name)


def doc_type(index, given):
    """The type a typed request names, checked against the index's one type."""
    if given is None:
        return index["type"] or "_doc"
    if index["type"] not in (None, given) and SERVER.major >= 6:
        raise EsError(400, "illegal_argument_exception",
                      "Rejecting mapping update to index as the final mapping would have "
                      f"more than 1 type: [{index['type']}, {given}]")
    return given


# --- queries ---------------------------------------------------------------

def tokens(value):
    return set(re.findall(r"\w+", str(value).lower()))


def field(source, path):
    for part in path.split("."):
        if not isinstance(source, dict) or part not in source:
            return None
        source = source[part]
    return source


def values(v):
    return v if isinstance(v, list) else [v]


def one_field(kind, body):
    if not isinstance(body, dict) or len(body) != 1:
        raise EsError(400, "parsing_exception",
                      f"[{kind}] query doesn't support multiple fields, found {sorted(body)}"
                      if isinstance(body, dict) else f"[{kind}] query malformed, no start_object")
    return next(iter(body.items()))


def matches(query, doc_id, source):
    if not isinstance(query, dict) or len(query) != 1:
        raise EsError(400, "parsing_exception", "query malformed, must start with start_object")
    kind, body = next(iter(query.items()))
    if kind == "match_all":
        return True
    if kind == "match":
        name, spec = one_field(kind, body)
        wanted = spec.get("query") if isinstance(spec, dict) else spec
        got = set()
        for v in values(field(source, name)):
            got |= tokens(v) if v is not None else set()
        want = tokens(wanted)
        if isinstance(spec, dict) and spec.get("operator", "or").lower() == "and":
            return bool(want) and want <= got
        return bool(want & got)
    if kind == "term":
        name, spec = one_field(kind, body)
        wanted = spec.get("value") if isinstance(spec, dict) else spec
        return wanted in values(field(source, name))
    if kind == "terms":
        name, wanted = one_field(kind, body)
        return any(v in wanted for v in values(field(source, name)))
    if kind == "ids":
        return doc_id in body.get("values", [])
    if kind == "range":
        name, bounds = one_field(kind, body)
        ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
               "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
        for v in values(field(source, name)):
            try:
                if v is not None and all(ops[k](v, b) for k, b in bounds.items() if k in ops):
                    return True
            except TypeError:
                pass
        return False
    if kind == "bool":
        clauses = lambda k: values(body.get(k, []))
        must = clauses("must") + clauses("filter")
        should = clauses("should")
        if not all(matches(q, doc_id, source) for q in must):
            return False
        if any(matches(q, doc_id, source) for q in clauses("must_not")):
            return False
        minimum = body.get("minimum_should_match", 0 if must else 1)
        return not should or sum(matches(q, doc_id, source) for q in should) >= int(minimum)
    raise EsError(400, "parsing_exception", f"unknown query [{kind}]", line=1, col=10)


def selected(index_name, body):
    index = INDICES.get(index_name)
    if index is None:
        raise index_missing(index_name)
    query = (body or {}).get("query", {"match_all": {}})
    return index, [(i, d) for i, d in index["docs"].items() if matches(query, i, d["source"])]


def sort_key(spec):
    if isinstance(spec, str):
        return spec, "asc"
    name, order = next(iter(spec.items()))
    return name, order.get("order", "asc") if isinstance(order, dict) else order


# --- handlers --------------------------------------------------------------

def root():
    version = {"number": SERVER.version, "build_type": "tar", "build_hash": "0" * 40,
               "build_date": "2024-01-01T00:00:00.000Z", "build_snapshot": False,
               "lucene_version": "9.9.1", "minimum_wire_compatibility_version": "7.17.0",
               "minimum_index_compatibility_version": "7.0.0"}
    if SERVER.opensearch:
        version["distribution"] = "opensearch"
        tagline = "The OpenSearch Project: https://opensearch.org/"
    else:
        version["build_flavor"] = "default"
        tagline = "You Know, for Search"
    return 200, {"name": "mn-test", "cluster_name": "mongoose_native_test",
                 "cluster_uuid": "mn-test-cluster", "version": version, "tagline": tagline}


def health():
    n = len(INDICES)
    return 200, {"cluster_name": "mongoose_native_test", "status": "yellow" if n else "green",
                 "timed_out": False, "number_of_nodes": 1, "number_of_data_nodes": 1,
                 "active_primary_shards": n, "active_shards": n, "relocating_shards": 0,
                 "initializing_shards": 0, "unassigned_shards": n,
                 "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
                 "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
                 "active_shards_percent_as_number": 50.0 if n else 100.0}


def put_doc(index_name, given_type, doc_id, body):
    check_index_name(index_name)
    if not isinstance(body, dict):
        raise EsError(400, "mapper_parsing_exception", "failed to parse, document is empty")
    index = INDICES.setdefault(index_name, {"type": None, "docs": {}})
    dtype = doc_type(index, given_type)
    if given_type is not None:
        index["type"] = given_type
    doc_id = doc_id or uuid.uuid4().hex[:20]
    old = index["docs"].get(doc_id)
    SEQ[0] += 1
    version = old["version"] + 1 if old else 1
    index["docs"][doc_id] = {"source": body, "version": version, "seq_no": SEQ[0]}
    answer = {"_index": index_name, "_id": doc_id, "_version": version,
              "result": "updated" if old else "created", "_shards": shards(),
              "_seq_no": SEQ[0], "_primary_term": 1}
    if SERVER.type_in_answers:
        answer["_type"] = dtype
    return (200 if old else 201), answer


def get_doc(index_name, given_type, doc_id):
    index = INDICES.get(index_name)
    if index is None:
        raise index_missing(index_name)
    doc = index["docs"].get(doc_id)
    answer = {"_index": index_name, "_id": doc_id}
    if SERVER.type_in_answers:
        answer["_type"] = doc_type(index, given_type)
    if doc is None:
        return 404, {**answer, "found": False}
    return 200, {**answer, "_version": doc["version"], "_seq_no": doc["seq_no"],
                 "_primary_term": 1, "found": True, "_source": doc["source"]}


def search(index_name, given_type, body):
    index, hits = selected(index_name, body)
    body = body or {}
    for spec in reversed(values(body.get("sort", []))):
        name, order = sort_key(spec)
        hits.sort(key=lambda h: (field(h[1]["source"], name) is None,
                                 field(h[1]["source"], name)), reverse=order == "desc")
    start, size = int(body.get("from", 0)), int(body.get("size", 10))
    total = len(hits)
    page = []
    for doc_id, doc in hits[start:start + size]:
        hit = {"_index": index_name, "_id": doc_id, "_score": 1.0, "_source": doc["source"]}
        if SERVER.type_in_answers:
            hit["_type"] = doc_type(index, given_type)
        page.append(hit)
    total_term = total if SERVER.major < 7 and not SERVER.opensearch \
        else {"value": total, "relation": "eq"}
    return 200, {"took": 1, "timed_out": False, "_shards": shards(),
                 "hits": {"total": total_term, "max_score": 1.0 if page else None,
                          "hits": page}}


def count(index_name, body):
    _, hits = selected(index_name, body)
    return 200, {"count": len(hits), "_shards": shards()}


def delete_by_query(index_name, body):
    if not isinstance(body, dict) or "query" not in body:
        raise EsError(400, "action_request_validation_exception",
                      "Validation Failed: 1: query is missing;")
    index, hits = selected(index_name, body)
    for doc_id, _ in hits:
        del index["docs"][doc_id]
    return 200, {"took": 1, "timed_out": False, "total": len(hits), "deleted": len(hits),
                 "batches": 1 if hits else 0, "version_conflicts": 0, "noops": 0,
                 "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
                 "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}


def refresh(index_name):
    if index_name not in INDICES:
        raise index_missing(index_name)
    return 200, {"_shards": shards()}


def route(method, parts, body):
    read = method in ("GET", "HEAD")
    search_like = method in ("GET", "POST")
    if not parts:
        if read:
            return root()
    elif parts == ["_cluster", "health"] and read:
        return health()
    elif len(parts) == 2 and parts[1] == "_refresh" and method in ("GET", "POST"):
        return refresh(parts[0])
    elif len(parts) in (2, 3) and parts[-1] in ("_search", "_count", "_delete_by_query"):
        given_type = parts[1] if len(parts) == 3 else None
        if given_type is not None and not SERVER.typed:
            raise NoHandler()
        if parts[-1] == "_search" and search_like:
            return search(parts[0], given_type, body)
        if parts[-1] == "_count" and search_like:
            return count(parts[0], body)
        if parts[-1] == "_delete_by_query" and method == "POST":
            return delete_by_query(parts[0], body)
    elif len(parts) == 3 and not parts[0].startswith("_"):
        index_name, given_type, doc_id = parts
        if given_type == "_doc" and (SERVER.major >= 7 or SERVER.opensearch):
            given_type = None
        elif given_type.startswith("_") or not SERVER.typed:
            raise NoHandler()
        if method in ("PUT", "POST"):
            return put_doc(index_name, given_type, doc_id, body)
        if read:
            return get_doc(index_name, given_type, doc_id)
    raise NoHandler()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body, extra_headers=()):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        accept = self.headers.get("Accept", "")
        if "vnd.elasticsearch+json" in accept:
            kind = f"application/vnd.elasticsearch+json;compatible-with={SERVER.major}"
        else:
            kind = "application/json; charset=UTF-8"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if SERVER.product_header:
            self.send_header("X-Elastic-Product", "Elasticsearch")
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["_mn_test"]:
            with LOCK:
                FAULT.update(json.loads(raw or b"{}"))
            return self.answer(200, {"acknowledged": True})
        with LOCK:
            mode = FAULT["mode"] if FAULT["count"] > 0 else None
            if mode:
                FAULT["count"] -= 1
                fault = dict(FAULT)
        if mode == "drop":
            self.close_connection = True
            return
        if mode == "stall":
            time.sleep(fault.get("ms", 10000) / 1000)
            self.close_connection = True
            return
        if mode == "garbage":
            return self.answer(200, b"{\"took\": 1, \"hits\": ")
        if mode == "status":
            status = int(fault.get("status", 503))
            etype = {429: "es_rejected_execution_exception",
                     503: "cluster_block_exception"}.get(status, "exception")
            return self.answer(status, EsError(status, etype, f"injected {status}").body())
        if SERVER.auth is not None and self.headers.get("Authorization") != SERVER.auth:
            reason = ("unable to authenticate user for REST request [%s]" % path
                      if self.headers.get("Authorization") else
                      "missing authentication credentials for REST request [%s]" % path)
            challenge = 'Basic realm="security" charset="UTF-8"'
            err = EsError(401, "security_exception", reason,
                          header={"WWW-Authenticate": challenge})
            return self.answer(401, err.body(), [("WWW-Authenticate", challenge)])
        body = None
        if raw:
            kind = self.headers.get("Content-Type", "")
            if "json" not in kind:
                return self.answer(406, {"error": f"Content-Type header [{kind}] is not "
                                                  "supported", "status": 406})
            try:
                body = json.loads(raw)
            except ValueError as e:
                err = EsError(400, "x_content_parse_exception", f"failed to parse JSON: {e}")
                return self.answer(400, err.body())
        try:
            with LOCK:
                status, answer = route(self.command, parts, body)
            self.answer(status, answer)
        except EsError as e:
            self.answer(e.status, e.body())
        except NoHandler:
            self.answer(400, {"error": f"no handler found for uri [{self.path}] and method "
                                       f"[{self.command}]"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


def main():
    global SERVER
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--version", default="8.15.0")
    p.add_argument("--distribution", choices=["elasticsearch", "opensearch"],
                   default="elasticsearch")
    p.add_argument("--username")
    p.add_argument("--password")
    args = p.parse_args()
    SERVER = Server(args)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(f"PORT {httpd.server_address[1]}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
