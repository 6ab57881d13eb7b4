#!/usr/bin/env python3
"""Memory attack on the running webhook (issue 24, finding 1), as a load test, not a unit test.

Starts `gpu-slicer serve` offline, then from loopback addresses other than 127.0.0.1 (each plays one
attacking pod) opens N stalled HTTP/1.1 uploads (3 MiB announced, 1 MiB sent, then silence) and M HTTP/2
connections that each try to open S streams with 3 MiB bodies and stall. While they hold, 127.0.0.1 (the
API server) posts ordinary reviews. Prints the server's RSS before, during and its peak (VmHWM), how
the attack was refused, and how the ordinary reviews fared, as one JSON object.

    python3 bench/memory_attack.py [--bin target/release/gpu-slicer] [--uploads 500] [--h2 20] [--streams 100]

Needs `pip install h2`. Only loopback addresses are used (127.0.0.0/8 is all this machine's).
"""

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import tempfile
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

REVIEW = "tests/data/reviews/ml-inference-llm-server-84f7f4dd45-create.json"
ANNOUNCED = 3 * 1024 * 1024
SENT = 1024 * 1024


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024  # MiB
    return 0


async def open_tls(port, ctx, source, alpn=None):
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost", local_addr=(source, 0)
    )


async def stalled_upload(port, ctx, source, outcome, hold):
    try:
        reader, writer = await open_tls(port, ctx, source)
    except (OSError, ssl.SSLError):
        outcome["refused_at_connect"] += 1
        return
    head = (
        f"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {ANNOUNCED}\r\n\r\n"
    ).encode()
    try:
        writer.write(head + b"{" + b" " * (SENT - 1))
        await asyncio.wait_for(writer.drain(), 5)
        line = await asyncio.wait_for(reader.readline(), 1.0)
        if b" 503 " in line:
            outcome["refused_503"] += 1
        elif line:
            outcome["other"] += 1
        else:
            outcome["refused_reset"] += 1
    except asyncio.TimeoutError:
        outcome["held"] += 1  # the server took it and waits for the rest
        await hold.wait()
    except (OSError, ssl.SSLError):
        # Answered 503 and closed while we were still sending: the client sees a reset.
        outcome["refused_reset"] += 1
    finally:
        writer.close()


async def h2_streams(port, source, streams, outcome, hold):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["h2"])
    try:
        reader, writer = await open_tls(port, ctx, source)
    except (OSError, ssl.SSLError):
        outcome["h2_refused_at_connect"] += 1
        return
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    data = await reader.read(65535)
    conn.receive_data(data)
    opened = 0
    for _ in range(streams):
        try:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":path", "/mutate"),
                    (":scheme", "https"),
                    (":authority", "localhost"),
                    ("content-type", "application/json"),
                    ("content-length", str(ANNOUNCED)),
                ],
            )
            window = min(conn.local_flow_control_window(sid), 16384)
            conn.send_data(sid, b"{" + b" " * (window - 1))
            opened += 1
        except (h2.exceptions.TooManyStreamsError, h2.exceptions.FlowControlError):
            outcome["h2_streams_refused_by_cap"] += 1
    writer.write(conn.data_to_send())
    await writer.drain()
    outcome["h2_streams_opened"] += opened
    # Count the server's 503s while holding the rest open.
    try:
        while not hold.is_set():
            data = await asyncio.wait_for(reader.read(65535), 0.5)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers).get(b":status")
                    key = "h2_streams_503" if status == b"503" else "h2_streams_other"
                    outcome[key] += 1
            writer.write(conn.data_to_send())
    except (asyncio.TimeoutError, OSError, ssl.SSLError, h2.exceptions.ProtocolError):
        await hold.wait()
    writer.close()


async def ordinary(port, ctx, body, n):
    reader, writer = await open_tls(port, ctx, "127.0.0.1")
    ok, other, times = 0, 0, []
    for _ in range(n):
        t = time.perf_counter()
        writer.write(
            f"POST /mutate?timeout=5s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        await writer.drain()
        status = (await reader.readline()).split()[1]
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        times.append(time.perf_counter() - t)
        if status == b"200":
            ok += 1
        else:
            other += 1
    writer.close()
    times.sort()
    return {"sent": n, "ok": ok, "not_ok": other, "p50_ms": round(times[len(times) // 2] * 1e3, 2),
            "max_ms": round(times[-1] * 1e3, 2)}


async def attack(args, pid, port):
    global CA
    ctx = ssl.create_default_context(cafile=CA)
    body = open(REVIEW, "rb").read()
    result = {"rss_mib_idle": vm(pid, "VmRSS"), "baseline": await ordinary(port, ctx, body, 50)}
    outcome = {k: 0 for k in ["refused_at_connect", "refused_503", "held", "refused_reset", "other",
                              "h2_refused_at_connect", "h2_streams_opened", "h2_streams_refused_by_cap",
                              "h2_streams_503", "h2_streams_other"]}
    hold = asyncio.Event()
    tasks = []
    # Stalled uploads from two addresses (two attacking pods), H2 from four more.
    for i in range(args.uploads):
        tasks.append(asyncio.create_task(
            stalled_upload(port, ctx, f"127.0.0.{2 + i % 2}", outcome, hold)))
    for i in range(args.h2):
        tasks.append(asyncio.create_task(
            h2_streams(port, f"127.0.0.{4 + i % 4}", args.streams, outcome, hold)))
    await asyncio.sleep(args.settle)
    result["rss_mib_under_attack"] = vm(pid, "VmRSS")
    result["during_attack"] = await ordinary(port, ctx, body, 200)
    result["rss_mib_under_attack_after_reviews"] = vm(pid, "VmRSS")
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    result["attack"] = outcome
    result["rss_mib_peak"] = vm(pid, "VmHWM")
    return result


def main():
    global CA
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=None)
    p.add_argument("--uploads", type=int, default=500)
    p.add_argument("--h2", type=int, default=20)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--port", type=int, default=18643)
    args = p.parse_args()
    binary = args.bin or next(
        (b for b in ["target/release/gpu-slicer", "target/debug/gpu-slicer"] if os.path.exists(b)), None)
    if os.environ.get("CARGO_TARGET_DIR") and not args.bin:
        binary = os.path.join(os.environ["CARGO_TARGET_DIR"], "release", "gpu-slicer")
    certs = tempfile.mkdtemp()
    server = subprocess.Popen(
        [binary, "serve", "--offline", "--policy", "tests/data/policies/contract.yaml",
         "--listen", f"127.0.0.1:{args.port}", "--certs-dir", certs],
        stderr=subprocess.DEVNULL)
    try:
        CA = os.path.join(certs, "ca.crt")
        for _ in range(100):
            if os.path.exists(CA):
                try:
                    import socket
                    socket.create_connection(("127.0.0.1", args.port), 0.2).close()
                    break
                except OSError:
                    pass
            time.sleep(0.1)
        result = asyncio.run(attack(args, server.pid, args.port))
        result["binary"] = binary
        result["shipped_memory_limit_mib"] = 128
        print(json.dumps(result, indent=2))
    finally:
        server.kill()


CA = None
if __name__ == "__main__":
    main()
