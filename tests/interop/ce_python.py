"""Publishes CloudEvents to shs with the official CloudEvents SDK for Python (`cloudevents` on
PyPI), each event twice: in binary mode, then in structured mode, as the SDK writes them.

    python ce_python.py http://127.0.0.1:PORT

Prints one JSON line per request ({"case", "mode", "id", "status", "answer"}) and exits 1 if any
answer is not 200. tests/e2e/interop.rs runs it and checks what the subscribers received.
"""
import http.client
import json
import sys
import urllib.parse
from datetime import datetime, timezone

from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1.http import CloudEvent as LegacyCloudEvent
from cloudevents.v1.http import to_binary as legacy_to_binary
from cloudevents.v1.http import to_structured as legacy_to_structured

TIME = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=timezone.utc)


def event(case, data, **attributes):
    base = {"type": "interop.python." + case, "source": "/interop/python", "id": "py-" + case,
            "time": TIME}
    base.update(attributes)
    return CloudEvent(attributes=base, data=data)


# (case, event): every kind of data, every optional attribute, extensions.
CASES = [
    ("json", event("json", {"order": 42, "items": ["a", "b"], "note": "caf\u00e9"},
                   datacontenttype="application/json", subject="order/42",
                   dataschema="https://example.com/order.json", tenant="acme", priority=7)),
    ("json-default", event("json-default", {"n": 1})),
    ("text", event("text", "hello, w\u00f6rld\nsecond line", datacontenttype="text/plain")),
    ("bytes", event("bytes", b"\x00\xff\x10binary\x80", datacontenttype="application/octet-stream")),
    ("bytes-untyped", event("bytes-untyped", b"\x00\xfe raw")),
    ("png", event("png", b"\x89PNG\r\n\x1a\n\x00\x00", datacontenttype="image/png")),
    ("empty", event("empty", None, datacontenttype="text/plain")),
    ("empty-json", event("empty-json", None)),
    ("unicode-attributes", event("unicode-attributes", {"ok": True},
                                 subject="caf\u00e9 \u00fc 100% \"quoted\"", region="s\u00e3o-paulo")),
]


def send(url, headers, body):
    # http.client sends the headers as the SDK wrote them (urllib would add a Content-Type of
    # its own where the SDK left it out).
    target = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
    try:
        connection.request("POST", "/events", body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def main():
    url = sys.argv[1].rstrip("/")
    failed = False
    for case, ce in CASES:
        for mode, message in (("binary", to_binary_event(ce)), ("structured", to_structured_event(ce))):
            status, answer = send(url, message.headers, message.body)
            failed |= status != 200
            print(json.dumps({"case": case, "mode": mode, "id": ce.get_id(), "status": status,
                              "answer": answer}), flush=True)
    # The SDK's 1.x API (cloudevents.v1.http), still what many users call.
    legacy = LegacyCloudEvent({"type": "interop.python.legacy", "source": "/interop/python",
                               "id": "py-legacy", "time": "2026-03-04T05:06:07.5+02:00",
                               "subject": "legacy", "tenant": "acme"}, {"legacy": [1, 2]})
    for mode, (headers, body) in (("binary", legacy_to_binary(legacy)),
                                  ("structured", legacy_to_structured(legacy))):
        status, answer = send(url, headers, body)
        failed |= status != 200
        print(json.dumps({"case": "legacy", "mode": mode, "id": "py-legacy", "status": status,
                          "answer": answer}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
