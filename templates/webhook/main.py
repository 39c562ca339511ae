"""{{name}}: a GitHub webhook handler on shs, in Python (shs_sdk.py is next to this file).

shs checks GitHub's signature before this code runs (function.toml: [webhook] kind = "github"):
a request whose X-Hub-Signature-256 is missing or wrong gets 401 and never reaches it. The
secret is the file `{{name}}-webhook` of the server's secrets folder (--secrets-dir, default
./secrets); give GitHub the same value as the webhook's secret.

Test:    python3 -m unittest
Logs:    shs logs {{name}} -f
"""

import shs_sdk

app = shs_sdk.Function()


def describe(payload):
    """What a GitHub delivery is about, from its JSON payload."""
    if not isinstance(payload, dict):
        return {"event": "unknown"}
    if "zen" in payload and "hook_id" in payload:
        return {"event": "ping", "zen": payload["zen"]}
    repo = (payload.get("repository") or {}).get("full_name")
    if "commits" in payload and "ref" in payload:
        return {"event": "push", "repository": repo, "ref": payload["ref"],
                "commits": len(payload.get("commits") or [])}
    if "pull_request" in payload:
        return {"event": "pull_request", "repository": repo, "action": payload.get("action"),
                "number": (payload.get("pull_request") or {}).get("number")}
    if "issue" in payload:
        return {"event": "issues", "repository": repo, "action": payload.get("action"),
                "number": (payload.get("issue") or {}).get("number")}
    return {"event": "other", "repository": repo, "action": payload.get("action")}


@app.invoke
def handle(input, ctx):  # noqa: A002 (the SDK's name for it)
    """POST /run/{{name}}, signed by GitHub: `input` is the delivery's JSON payload."""
    about = describe(input)
    ctx.log("github delivery:", about)
    # Tell other functions: ctx.publish("github." + about["event"], input)
    return {"received": True, **about}


if __name__ == "__main__":
    app.run()
