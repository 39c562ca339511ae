"""counter: counts to N as server-sent events, one a second (or every `every` seconds), on
shs_sdk; stops as soon as the client goes away.

GET /run/counter?to=5&every=1 -> text/event-stream: event "tick" with data {"n": 1} ... then
                                 event "done"
"""
import shs_sdk

app = shs_sdk.Function(concurrency=8)


@app.invoke
def handle(input, ctx):  # noqa: A002
    args = ctx.http.args if ctx.http else {}
    to = min(int(args.get("to", "5")), 1000)
    every = min(float(args.get("every", "1")), 10.0)
    for n in range(1, to + 1):
        ctx.sse({"n": n}, event="tick", id=str(n))
        if ctx.cancelled.wait(every if n < to else 0):
            ctx.log("the client left at %d" % n)
            return None
    ctx.sse("bye", event="done")
    return None


app.run()
