#!/usr/bin/env python3
"""Checks test/servers/cql_server.py with an independent client: the DataStax
Python driver (cassandra-driver from PyPI, pure Python) on protocol v4.
It connects (reading system.local, system.peers and the schema tables as it
does against Cassandra), creates a table, prepares statements, writes rows
one by one and in an unlogged batch, reads them back, pages through them
with the paging state, and checks a few errors. Exit status 0 and a last
line "passed against HOST:PORT" when all hold.

Usage: cql_client_check.py HOST PORT [USERNAME PASSWORD]
"""

import sys
import uuid

from cassandra import ConsistencyLevel, InvalidRequest, ProtocolVersion
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, BatchType, SimpleStatement


def check(what, got, expected):
    if got != expected:
        raise SystemExit("FAILED: %s: expected %r, got %r" % (what, expected, got))
    print("ok: %s" % what)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    auth = PlainTextAuthProvider(sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
    cluster = Cluster([host], port=port, protocol_version=ProtocolVersion.V4,
                      auth_provider=auth, connect_timeout=5, control_connection_timeout=5)
    session = cluster.connect()
    check("the driver sees one node in datacenter1",
          [(h.address, h.datacenter) for h in cluster.metadata.all_hosts()],
          [(host, "datacenter1")])
    check("the partitioner", cluster.metadata.partitioner,
          "org.apache.cassandra.dht.Murmur3Partitioner")
    local = session.execute("SELECT cluster_name, release_version FROM system.local "
                            "WHERE key='local'").one()
    check("system.local", (local.cluster_name, local.release_version),
          ("mongoose_native_test", "3.11.16"))

    session.execute("CREATE KEYSPACE IF NOT EXISTS pycheck WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.set_keyspace("pycheck")
    session.execute("DROP TABLE IF EXISTS items")
    session.execute("CREATE TABLE items (owner text, n int, body blob, tags set<text>, "
                    "id uuid, PRIMARY KEY ((owner), n)) WITH CLUSTERING ORDER BY (n ASC)")
    cluster.refresh_schema_metadata()
    check("the new table is in the driver's schema metadata",
          sorted(cluster.metadata.keyspaces["pycheck"].tables["items"].columns),
          ["body", "id", "n", "owner", "tags"])

    insert = session.prepare("INSERT INTO items (owner, n, body, tags, id) VALUES (?, ?, ?, ?, ?)")
    check("the prepared insert routes by owner", insert.routing_key_indexes, [0])
    ids = {}
    for n in range(5):
        ids[n] = uuid.uuid4()
        session.execute(insert, ("alice", n, bytes([n]) * 3, {"a", "t%d" % n}, ids[n]))
    batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=ConsistencyLevel.ONE)
    for n in range(5, 250):
        ids[n] = uuid.uuid4()
        batch.add(insert, ("alice", n, b"", set(), ids[n]))
    session.execute(batch)
    session.execute(insert, ("bob", 1, None, None, uuid.uuid4()))

    select = session.prepare("SELECT n, body, tags, id FROM items WHERE owner = ? AND n >= ? "
                             "ORDER BY n DESC LIMIT ?")
    rows = list(session.execute(select, ("alice", 3, 2)))
    check("a prepared select with a range, order and limit",
          [(r.n, r.id) for r in rows], [(249, ids[249]), (248, ids[248])])
    one = session.execute(SimpleStatement("SELECT body, tags FROM items WHERE owner = %s AND n = %s"),
                          ("alice", 2)).one()
    check("blob and set values", (one.body, sorted(one.tags)), (b"\x02\x02\x02", ["a", "t2"]))

    pages, seen, state = 0, [], None
    paged = SimpleStatement("SELECT n FROM items WHERE owner = 'alice'", fetch_size=100)
    while True:
        result = session.execute(paged, paging_state=state)
        seen.extend(r.n for r in result.current_rows)
        pages += 1
        state = result.paging_state
        if state is None:
            break
    check("paging with the paging state", (pages, seen), (3, list(range(250))))
    check("the driver's own paging", len(list(session.execute(
        SimpleStatement("SELECT n FROM items", fetch_size=7)))), 251)
    count = session.execute("SELECT COUNT(*) FROM items WHERE owner = 'alice'").one()
    check("count(*)", count.count, 250)

    session.execute("DELETE FROM items WHERE owner = 'alice' AND n = 0")
    check("delete", session.execute("SELECT n FROM items WHERE owner = 'alice' LIMIT 1").one().n, 1)
    try:
        session.execute("SELECT * FROM nope")
        raise SystemExit("FAILED: a missing table was not refused")
    except InvalidRequest as e:
        check("a missing table is refused", "unconfigured table nope" in str(e), True)
    cluster.shutdown()
    print("passed against %s:%d" % (host, port))


if __name__ == "__main__":
    main()
