"""github-webhook: takes GitHub's deliveries. shs checks X-Hub-Signature-256 before this runs
(function.toml), so everything that reaches the handler was signed with the secret."""

import os
import sys

try:
    import shs_sdk
except ImportError:  # run from the shs repository: the SDK is in sdk/python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "..", "..", "..", "sdk", "python"))
    import shs_sdk

app = shs_sdk.Function()


@app.invoke
def handle(payload, ctx):
    if isinstance(payload, dict) and "zen" in payload:
        event = {"event": "ping", "zen": payload["zen"]}
    elif isinstance(payload, dict) and "commits" in payload:
        event = {"event": "push", "ref": payload.get("ref"), "commits": len(payload["commits"])}
    else:
        event = {"event": "other"}
    ctx.log("verified github delivery:", event["event"])
    return {"received": True, **event}


if __name__ == "__main__":
    app.run()
