#!/usr/bin/env python3
"""file-marker: an example ire plugin written in Python.

ire runs this program once per lifecycle hook. It writes one JSON request line on stdin:
  {"hook": "execute", "resource": {...}, "config": {...}, "snapshot": ..., "fencing_token": 7, ...}
and reads JSON lines on stdout: optional progress lines {"progress": 50, "message": "..."}, then
one reply, {"ok": true} (pre_execute may add "snapshot": <any JSON>) or
{"ok": false, "error": "...", "class": "retryable" | "fatal" | "ignorable"}.
"""
import json
import os
import sys


def reply(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main():
    request = json.loads(sys.stdin.readline())
    hook = request.get("hook")
    config = request.get("config") or {}
    if hook == "initialize":
        return reply(ok=True)

    journal = config.get("journal")
    if journal:
        with open(journal, "a") as j:
            j.write(hook + "\n")

    if config.get("fail") == hook:
        return reply(ok=False, error=hook + " failed as configured",
                     **{"class": config.get("fail-class", "fatal")})

    path = config.get("path")
    if hook == "validate":
        if not isinstance(path, str) or not path:
            return reply(ok=False, error="config.path is required", **{"class": "fatal"})
        return reply(ok=True)

    if hook == "pre_execute":
        existed = os.path.exists(path)
        content = open(path).read() if existed else None
        return reply(ok=True, snapshot={"existed": existed, "content": content})

    if hook == "execute":
        reply(progress=10, message="writing " + path)
        resource = request.get("resource") or {}
        default = "%s token=%s\n" % (resource.get("key"), request.get("fencing_token"))
        with open(path, "w") as f:
            f.write(config.get("content", default))
        reply(progress=100, message="written")
        return reply(ok=True)

    if hook == "rollback":
        snap = request.get("snapshot") or {}
        if snap.get("existed"):
            with open(path, "w") as f:
                f.write(snap.get("content") or "")
        elif os.path.exists(path):
            os.remove(path)
        return reply(ok=True)

    # post_execute, cleanup, and hooks added later: nothing to do.
    return reply(ok=True)


if __name__ == "__main__":
    main()
