# SPDX-License-Identifier: MIT
"""Opens many connections from inside a sandbox and holds them open, for the load test.

Usage: conns.py JSON with {"addr": IP, "port": P, "count": N, "tls": bool, "name": SNI,
"ca": FILE, "parallel": K}. TLS connections finish their handshake and send nothing (idle,
as a client between requests is); plain ones only connect. Prints one JSON line
{"open": n, "errors": {name: count}, "seconds": s} once all are open (or failed), then holds
them until stdin closes, closes them all and prints "closed". Bounded: every connect and
handshake has a 20 s timeout."""
import asyncio
import collections
import json
import resource
import ssl
import sys
import time


async def main():
    a = json.loads(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = None
    if a.get("tls"):
        ctx = ssl.create_default_context(cafile=a["ca"])
    sem = asyncio.Semaphore(a.get("parallel", 64))
    writers, errors = [], collections.Counter()

    async def one():
        async with sem:
            try:
                _, w = await asyncio.wait_for(
                    asyncio.open_connection(a["addr"], a["port"], ssl=ctx,
                                            server_hostname=a.get("name") if ctx else None),
                    20)
                writers.append(w)
            except Exception as e:  # every failure is an outcome to report
                errors[type(e).__name__] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(a["count"])))
    print(json.dumps({"open": len(writers), "errors": errors,
                      "seconds": round(time.monotonic() - t0, 2)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in writers:
        w.transport.abort()
    print("closed", flush=True)


asyncio.run(main())
