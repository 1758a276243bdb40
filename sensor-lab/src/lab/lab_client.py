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
  beacon  --src A --server S --seconds T --interval I --jitter J
          an implant's check-ins: GET /page0.html every I seconds, each
          sleep jittered by up to +-J of it (new connection each)
  sshlike --src A --server S --count N
          N short TCP connections to :22: read the banner, send a client
          banner and a few small packets, close (brute-force fallback)
  offline --src A[,B..] --server S --seconds T --peers P[,Q..] --resolvers R[,..] --seed N
          devices whose cloud is unreachable, as on a site whose uplink is
          down: per source, one UDP socket sends a keepalive to 3-6 of the
          peers every 1-2 s; every few seconds a TCP connection to one peer
          (SYN retries, then fails: host/net unreachable or timeout), a DNS lookup at each
          resolver (no answer or an ICMP error) and a connection to a
          closed port on the server (refused)
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


def beacon(a):
    rng = random.Random(a.seed)
    end = time.monotonic() + a.seconds
    gets = 0
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection(a.server, 80, timeout=3, source_address=(a.src, 0))
            c.request("GET", "/page0.html")
            c.getresponse().read()
            c.close()
            gets += 1
        except OSError:
            pass
        time.sleep(a.interval * (1.0 + a.jitter * rng.uniform(-1.0, 1.0)))
    return {"gets": gets}


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


def dns_query(name, qid):
    """A minimal DNS A query for `name`."""
    q = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"


def offline(a):
    rng = random.Random(a.seed)
    peers = a.peers.split(",")
    resolvers = a.resolvers.split(",")
    devices = []
    for src in a.src.split(","):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((src, 0))
        u.setblocking(False)
        mine = rng.sample(peers, rng.randint(min(3, len(peers)), min(6, len(peers))))
        devices.append({
            "src": src, "udp": u, "peers": mine, "port": rng.choice([3478, 10240, 8883, 5683]),
            "every": rng.uniform(1.0, 2.0), "next": time.monotonic() + rng.uniform(0, 1),
            "next_tcp": time.monotonic() + rng.uniform(0.5, 3), "name": f"cloud{rng.randint(1, 9)}.example.net",
        })
    end = time.monotonic() + a.seconds
    sent = tcp_tries = lookups = refused = 0
    qid = 1
    while time.monotonic() < end:
        now = time.monotonic()
        for d in devices:
            if now >= d["next"]:
                d["next"] = now + d["every"]
                for p in d["peers"]:
                    try:
                        d["udp"].sendto(b"\x01keepalive" + bytes(36), (p, d["port"]))
                        sent += 1
                    except OSError:
                        pass
                # ICMP errors surface as socket errors; drain them.
                try:
                    while True:
                        d["udp"].recv(512)
                except OSError:
                    pass
            if now >= d["next_tcp"]:
                d["next_tcp"] = now + rng.uniform(3, 6)
                tries = [(rng.choice(d["peers"]), rng.choice([443, 80, 8080])), (a.server, 8443)]
                for host, port in tries:
                    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    t.bind((d["src"], 0))
                    # Long enough for the SYN to be retransmitted (1 s, 3 s):
                    # an ICMP unreachable is a soft error while connecting.
                    t.settimeout(3.5)
                    try:
                        t.connect((host, port))
                    except ConnectionRefusedError:
                        refused += 1
                    except OSError:
                        pass
                    finally:
                        t.close()
                    tcp_tries += 1
                for r in resolvers:
                    q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    q.bind((d["src"], 0))
                    q.settimeout(0.5)
                    try:
                        q.sendto(dns_query(d["name"], qid), (r, 53))
                        q.recv(512)
                    except OSError:
                        pass
                    finally:
                        q.close()
                    qid += 1
                    lookups += 1
        time.sleep(0.05)
    return {"keepalives": sent, "tcp_attempts": tcp_tries, "refused": refused, "lookups": lookups}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["browse", "idle", "exfil", "beacon", "sshlike", "offline"])
    ap.add_argument("--src", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--bytes", type=int, default=2048)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--peers", default="")
    ap.add_argument("--resolvers", default="")
    a = ap.parse_args()
    modes = {"browse": browse, "idle": idle, "exfil": exfil, "beacon": beacon, "sshlike": sshlike, "offline": offline}
    out = modes[a.mode](a)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
