#!/usr/bin/env python3
"""Checks es_server.py with the official Python client (elasticsearch 8.x),
an implementation of Elasticsearch's REST protocol that is not ours.

Usage: es_client_check.py URL. Runs the operations mongoose_elasticsearch
uses, plus get and refresh, and asserts the answers; exits non-zero (with
the failed assertion) on any difference. elastic_SUITE runs it.
"""
import sys

from elasticsearch import ApiError, Elasticsearch, NotFoundError


def main(url):
    es = Elasticsearch(url, request_timeout=5, retry_on_timeout=False, max_retries=0)
    info = es.info()
    assert info["version"]["number"].startswith("8."), info
    assert es.cluster.health()["status"] in ("green", "yellow")

    docs = [("1", {"user": "alice", "body": "Hello world", "n": 1}),
            ("2", {"user": "bob", "body": "hello again", "n": 2}),
            ("3", {"user": "alice", "body": "goodbye", "n": 3})]
    for doc_id, doc in docs:
        answer = es.index(index="mn_check", id=doc_id, document=doc)
        assert answer["result"] == "created" and answer["_id"] == doc_id, answer
    again = es.index(index="mn_check", id="1", document=docs[0][1])
    assert again["result"] == "updated" and again["_version"] == 2, again
    es.indices.refresh(index="mn_check")
    got = es.get(index="mn_check", id="2")
    assert got["found"] and got["_source"]["user"] == "bob", got

    hits = es.search(index="mn_check", query={"match": {"body": "hello"}})["hits"]
    assert hits["total"] == {"value": 2, "relation": "eq"}, hits
    assert sorted(h["_id"] for h in hits["hits"]) == ["1", "2"], hits
    query = {"bool": {"must": [{"term": {"user": "alice"}}],
                      "filter": [{"range": {"n": {"gte": 2}}}]}}
    hits = es.search(index="mn_check", query=query)["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["3"], hits
    page = es.search(index="mn_check", query={"match_all": {}}, sort=[{"n": "desc"}], size=2)
    assert [h["_id"] for h in page["hits"]["hits"]] == ["3", "2"], page

    assert es.count(index="mn_check", query={"term": {"user": "alice"}})["count"] == 2
    deleted = es.delete_by_query(index="mn_check", query={"term": {"user": "alice"}})
    assert deleted["deleted"] == 2, deleted
    assert es.count(index="mn_check")["count"] == 1

    try:
        es.search(index="mn_missing", query={"match_all": {}})
        raise AssertionError("a missing index was found")
    except NotFoundError as e:
        assert e.meta.status == 404 and e.error == "index_not_found_exception", e
    try:
        es.search(index="mn_check", query={"no_such_query": {}})
        raise AssertionError("an unknown query was accepted")
    except ApiError as e:
        assert e.meta.status == 400 and e.error == "parsing_exception", e
    print("elasticsearch-py", ".".join(map(str, __import__("elasticsearch").__version__)),
          "passed against", url)


if __name__ == "__main__":
    main(sys.argv[1])
