"""form: an HTML form and what it posts, on shs_sdk.

GET  /run/form      -> the form (text/html)
POST /run/form      -> reads the form fields; a name gets a redirect to /run/form/thanks?name=...,
                       a missing one the form again with 422
GET  /run/form/thanks?name=Ada -> "Thanks, Ada!"
"""
import html
import urllib.parse

import shs_sdk

app = shs_sdk.Function()

PAGE = """<!doctype html>
<title>Sign the guestbook</title>
<form method="post" action="/run/form">
  <label>Name <input name="name"></label>
  <label>Message <textarea name="message"></textarea></label>
  <button>Sign</button>
</form>
%s"""


def page(note="", status=200):
    return shs_sdk.Response(PAGE % note, status=status, content_type="text/html; charset=utf-8")


@app.invoke
def handle(input, ctx):  # noqa: A002
    request = ctx.http
    if request is None:  # invoked without HTTP (e.g. shs invoke): nothing to show
        return {"error": "open /run/form in a browser"}
    if request.path == "/thanks":
        name = request.args.get("name", "stranger")
        return shs_sdk.Response("<p>Thanks, %s!</p>" % html.escape(name),
                                content_type="text/html; charset=utf-8")
    if request.method == "POST":
        fields = request.form
        name = fields.get("name", "").strip()
        if not name:
            return page("<p>Please give your name.</p>", status=422)
        ctx.log("%s signed: %s" % (name, fields.get("message", "")))
        return shs_sdk.Response.redirect("/run/form/thanks?" + urllib.parse.urlencode({"name": name}),
                                         status=303)
    return page()


app.run()
