#!/usr/bin/env python3
"""Checks test/servers/riak_server.py with an independent client: Basho's
Python client `riak` (2.7.0, from PyPI, in the virtualenv scripts/setup.sh
makes), doing what riak_SUITE does through the NIF: put and get, siblings
after a write that did not see the first, a delete, data types (a map of
register, counter, set and flag; a counter; a set), secondary-index exact
and range queries, and a streamed key listing.

The client predates Python 3.10: it needs the `collections` aliases that
moved to `collections.abc` and a `namedtuple` that takes `verbose`, both
restored here before it is imported. It runs in pure Python (its
protobuf 2.5 package has no C extension) and needs no network beyond the
server. Usage: riak_client_check.py PORT. Prints "passed against PORT" and
exits 0 when every check holds.
"""
import collections
import collections.abc
import sys

for _name in ("Mapping", "MutableMapping", "Iterable", "Sequence", "MutableSequence",
              "Set", "MutableSet", "Callable", "Hashable", "Sized", "Container", "Iterator"):
    setattr(collections, _name, getattr(collections.abc, _name))
_namedtuple = collections.namedtuple


def _namedtuple_verbose(*args, verbose=False, **kwargs):
    return _namedtuple(*args, **kwargs)


collections.namedtuple = _namedtuple_verbose

import riak  # noqa: E402
from riak.datatypes import Counter, Map, Set  # noqa: E402


def check(what, got, expected):
    if got != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {got!r}")
    print(f"ok: {what}")


def main():
    port = int(sys.argv[1])
    client = riak.RiakClient(protocol="pbc", nodes=[{"host": "127.0.0.1", "pb_port": port}])

    # Objects in the default bucket type (allow_mult false).
    plain = client.bucket("py_plain")
    obj = plain.new("alice", data={"name": "Alice"})
    obj.add_index("age_int", 31)
    obj.add_index("city_bin", "Krakow")
    obj.store()
    got = plain.get("alice")
    check("get returns what put stored", got.data, {"name": "Alice"})
    check("get reads the indexes back", sorted(got.indexes), [("age_int", 31), ("city_bin", "Krakow")])
    check("a missing key does not exist", plain.get("nobody").exists, False)
    plain.new("bob", data={"name": "Bob"}).add_index("age_int", 25).store()
    plain.new("carol", data={"name": "Carol"}).add_index("age_int", 40).store()

    # Secondary indexes.
    check("2i exact match", sorted(plain.get_index("city_bin", "Krakow").results), ["alice"])
    check("2i range", sorted(plain.get_index("age_int", 20, 35).results), ["alice", "bob"])
    terms = plain.get_index("age_int", 20, 35, return_terms=True).results
    check("2i range with terms", sorted(terms), [(25, "bob"), (31, "alice")])

    # Streamed key listing.
    check("list keys", sorted(plain.get_keys()), ["alice", "bob", "carol"])

    # Siblings in a typed bucket (allow_mult true).
    typed = client.bucket_type("sibs").bucket("py_sibs")
    first = typed.new("k", data="one", content_type="text/plain")
    first.store()
    second = typed.new("k", data="two", content_type="text/plain")
    second.store()
    both = typed.get("k")
    check("a write without the vclock makes siblings",
          sorted(s.data for s in both.siblings), ["one", "two"])
    resolved = typed.get("k")
    resolved.siblings = [resolved.siblings[0]]
    resolved.data = "resolved"
    resolved.store()
    check("a write with the vclock resolves them",
          [s.data for s in typed.get("k").siblings], ["resolved"])

    # Delete.
    plain.delete("carol")
    check("deleted key is gone", plain.get("carol").exists, False)

    # Data types.
    users = client.bucket_type("maps").bucket("py_users")
    m = Map(users, "alice")
    m.registers["name"].assign("Alice")
    m.counters["logins"].increment(3)
    m.sets["roles"].add("admin")
    m.flags["active"].enable()
    m.store()
    fetched = client.fetch_datatype(users, "alice")
    check("map register", fetched.registers["name"].value, "Alice")
    check("map counter", fetched.counters["logins"].value, 3)
    check("map set", set(fetched.sets["roles"].value), {"admin"})
    check("map flag", fetched.flags["active"].value, True)

    counters = client.bucket_type("counters").bucket("py_counters")
    c = Counter(counters, "visits")
    c.increment(5)
    c.store()
    c = client.fetch_datatype(counters, "visits")
    c.decrement(2)
    c.store()
    check("counter", client.fetch_datatype(counters, "visits").value, 3)

    sets = client.bucket_type("sets").bucket("py_sets")
    s = Set(sets, "tags")
    s.add("a")
    s.add("b")
    s.store()
    s = client.fetch_datatype(sets, "tags")
    s.discard("a")
    s.store()
    check("set", set(client.fetch_datatype(sets, "tags").value), {"b"})
    print(f"passed against {port}")


if __name__ == "__main__":
    main()
