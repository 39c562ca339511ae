#!/usr/bin/env python3
"""A guestbook as a plain CGI/1.1 script: no SDK, no shs protocol, only the standard library.

GET  /run/notes            the notes, as an HTML page with a form
POST /run/notes            adds the form's `text` and redirects back (303); 422 if it is empty
GET  /run/notes/count?to=N counts to N, a line every half second, streamed as it goes
"""
import html
import os
import sys
import time
import urllib.parse

NOTES = "notes.txt"
out = sys.stdout.buffer


def respond(status, content_type, body=b"", headers=()):
    head = [f"Status: {status}", f"Content-Type: {content_type}", *headers]
    out.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)


method = os.environ["REQUEST_METHOD"]
path = os.environ.get("PATH_INFO", "/")
query = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))

if path == "/count":
    to = min(int(query.get("to", ["3"])[0]), 100)
    respond("200 OK", "text/plain; charset=utf-8", headers=["Cache-Control: no-cache"])
    for n in range(1, to + 1):
        out.write(f"{n}\n".encode())
        out.flush()  # each line reaches the client now
        time.sleep(0.5)
elif method == "POST":
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    form = urllib.parse.parse_qs(sys.stdin.buffer.read(length).decode())
    text = form.get("text", [""])[0].strip()
    if not text:
        respond("422 Unprocessable Content", "text/plain; charset=utf-8", b"a note needs text\n")
    else:
        with open(NOTES, "a") as f:
            f.write(text.replace("\n", " ") + "\n")
        print(f"note from {os.environ.get('REMOTE_ADDR')}: {text}", file=sys.stderr)
        respond("303 See Other", "text/plain; charset=utf-8", headers=[
            f"Location: {os.environ['SCRIPT_NAME']}",
            "Set-Cookie: posted=1; Path=/; HttpOnly",
        ])
elif method == "GET":
    notes = open(NOTES).read().splitlines() if os.path.exists(NOTES) else []
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = (f"<!doctype html>\n<title>Notes</title>\n<ul>{items}</ul>\n"
            f'<form method="post" action="{os.environ["SCRIPT_NAME"]}">'
            '<input name="text"><button>Add</button></form>\n')
    respond("200 OK", "text/html; charset=utf-8", page.encode())
else:
    respond("405 Method Not Allowed", "text/plain; charset=utf-8", b"GET or POST\n",
            headers=["Allow: GET, POST"])
