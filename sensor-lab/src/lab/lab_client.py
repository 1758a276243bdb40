"""Clients of the traffic lab (started by sensor-lab inside a namespace).

Standard library only; every mode is bounded in time and requests.
  browse  --src A[,B..] --server S --seconds T --seed N
          bursts of 2-8 page fetches (one keep-alive connection per burst,
          source address rotating), 0.2-1.5 s think time between bursts
  idle    --src A --server S --seconds T
          one TCP connection to :7000 with keepalive probes every second,
          a few bytes at the start and the end, idle in between
  exfil   --src A --server S --seconds T --interval I --bytes B
          one small HTTP POST /upload every I seconds (new connection each)
  sshlike --src A --server S --count N
          N short TCP connections to :22: read the banner, send a client
          banner and a few small packets, close (brute-force fallback)
Prints one JSON line with what it did.
"""

import argparse
import http.client
import json
import random
import socket
import time


def browse(a):
    rng = random.Random(a.seed)
    srcs = a.src.split(",")
    end = time.monotonic() + a.seconds
    pages = [f"/page{i}.html" for i in range(a.pages)]
    done = failed = 0
    bursts = 0
    while time.monotonic() < end:
        src = srcs[bursts % len(srcs)]
        bursts += 1
        try:
            c = http.client.HTTPConnection(a.server, 80, timeout=3, source_address=(src, 0))
            for _ in range(rng.randint(2, 8)):
                c.request("GET", rng.choice(pages))
                r = c.getresponse()
                r.read()
                done += 1
            c.close()
        except OSError:
            failed += 1
        time.sleep(rng.uniform(0.2, 1.5))
    return {"requests": done, "failed_bursts": failed, "bursts": bursts}


def idle(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)
    s.bind((a.src, 0))
    s.settimeout(3)
    s.connect((a.server, 7000))
    s.sendall(b"hello\n")
    time.sleep(a.seconds)
    s.sendall(b"bye\n")
    s.close()
    return {"seconds": a.seconds}


def exfil(a):
    end = time.monotonic() + a.seconds
    sent = posts = 0
    rng = random.Random(a.seed)
    while time.monotonic() < end:
        body = bytes(rng.getrandbits(8) for _ in range(a.bytes))
        try:
            c = http.client.HTTPConnection(a.server, 80, timeout=3, source_address=(a.src, 0))
            c.request("POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"})
            c.getresponse().read()
            c.close()
            posts += 1
            sent += len(body)
        except OSError:
            pass
        time.sleep(a.interval)
    return {"posts": posts, "bytes": sent}


def sshlike(a):
    ok = 0
    for i in range(a.count):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((a.src, 0))
            s.settimeout(2)
            s.connect((a.server, 22))
            s.recv(256)
            s.sendall(b"SSH-2.0-libssh_0.10.4\r\n")
            s.sendall(bytes(64))
            s.sendall(bytes(48))
            try:
                s.recv(1024)
            except OSError:
                pass
            s.close()
            ok += 1
        except OSError:
            pass
    return {"connections": ok}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["browse", "idle", "exfil", "sshlike"])
    ap.add_argument("--src", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--bytes", type=int, default=2048)
    ap.add_argument("--count", type=int, default=50)
    a = ap.parse_args()
    out = {"browse": browse, "idle": idle, "exfil": exfil, "sshlike": sshlike}[a.mode](a)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
