//! The attacks an episode can contain: floods, scans and brute force, each
//! written as the packets both sides would send.

use sensor::model::row::AttackClass;
use sensor_common::FlowKey;

use super::{ACK, ACK_FRAME, Conn, Episode, FIN, PSH, RST, SYN, SYN_FRAME, TCP, UDP, v4};

impl Episode {
    /// A random host (last two octets 1..250) of the /16 `a.b`.
    fn host_in(&mut self, a: u8, b: u8) -> [u8; 16] {
        let c = self.rng.range(1, 250) as u8;
        let d = self.rng.range(1, 250) as u8;
        v4(a, b, c, d)
    }

    /// A flood scenario, named for its spoofed variant when `spoofed`.
    fn flood_scenario(&mut self, spoofed: bool, plain: &'static str, spoof: &'static str) -> u32 {
        self.scenario(if spoofed { spoof } else { plain }, AttackClass::Flood)
    }

    /// A scan scenario, named slow when probes are a second or more apart.
    fn scan_scenario(&mut self, gap_s: f64, fast: &'static str, slow: &'static str) -> u32 {
        self.scenario(if gap_s >= 1.0 { slow } else { fast }, AttackClass::Scan)
    }

    fn attack_start(&mut self) -> u64 {
        self.t0 + self.rng.range(self.len_ns / 10, self.len_ns * 3 / 5)
    }

    /// SYN flood on `victim:port` at `pps` for `secs`, from one source or from
    /// spoofed random sources. The victim answers 90 % with a SYN-ACK.
    pub fn syn_flood(&mut self, victim: [u8; 16], spoofed: bool, pps: f64, secs: f64) {
        let sc = self.flood_scenario(spoofed, "syn_flood", "syn_flood_spoofed");
        let attacker = v4(198, 51, 100, self.rng.range(1, 250) as u8);
        let port = [80u16, 443, 22][self.rng.range(0, 2) as usize];
        let mut t = self.attack_start();
        let stop = t + (secs * 1e9) as u64;
        while t < stop {
            let src = if spoofed {
                spoofed_source(self.rng.next_u64())
            } else {
                attacker
            };
            let sp = self.rng.range(1024, 65535) as u16;
            self.push(sc, t, FlowKey::new(src, victim, sp, port, TCP), 60, SYN);
            if self.rng.chance(0.9) {
                let d = self.rng.range(50_000, 500_000);
                self.push(
                    sc,
                    t + d,
                    FlowKey::new(victim, src, port, sp, TCP),
                    SYN_FRAME,
                    SYN | ACK,
                );
            }
            t += self.rng.exp(1e9 / pps) as u64 + 1;
        }
    }

    /// UDP flood on `victim` at `pps` for `secs`: large datagrams from a few
    /// sources or spoofed sources, to one or random ports.
    pub fn udp_flood(&mut self, victim: [u8; 16], spoofed: bool, pps: f64, secs: f64) {
        let sc = self.flood_scenario(spoofed, "udp_flood", "udp_flood_spoofed");
        let random_ports = self.rng.chance(0.5);
        let fixed_port = [53u16, 123, 80, 27015][self.rng.range(0, 3) as usize];
        let sources: Vec<[u8; 16]> = (0..4)
            .map(|_| v4(203, 0, 113, self.rng.range(1, 250) as u8))
            .collect();
        let sports: Vec<u16> = (0..4).map(|_| self.ephemeral_port()).collect();
        let mut t = self.attack_start();
        let stop = t + (secs * 1e9) as u64;
        while t < stop {
            let i = self.rng.range(0, 3) as usize;
            let (src, sp) = if spoofed {
                let x = self.rng.next_u64();
                (spoofed_source(x), (x >> 32) as u16 | 1024)
            } else {
                (sources[i], sports[i])
            };
            let dp = if random_ports {
                self.rng.range(1, 65535) as u16
            } else {
                fixed_port
            };
            let len = self.rng.range(512, 1400) as u16;
            self.push(sc, t, FlowKey::new(src, victim, sp, dp, UDP), len, 0);
            t += self.rng.exp(1e9 / pps) as u64 + 1;
        }
    }

    /// One SYN probe and the target's answer: SYN-ACK then the scanner's RST
    /// (open), RST-ACK (closed) or nothing (filtered). `answers` holds the
    /// probabilities of open and closed.
    fn probe(
        &mut self,
        sc: u32,
        t: u64,
        hosts: ([u8; 16], [u8; 16]),
        port: u16,
        answers: (f64, f64),
    ) {
        let (scanner, target) = hosts;
        let (open, closed) = answers;
        let sp = self.ephemeral_port();
        let up = FlowKey::new(scanner, target, sp, port, TCP);
        let down = FlowKey::new(target, scanner, port, sp, TCP);
        self.push(sc, t, up, 58, SYN);
        let rtt = self.rng.range(200_000, 20_000_000);
        let r = self.rng.f64();
        if r < open {
            self.push(sc, t + rtt, down, SYN_FRAME - 16, SYN | ACK);
            self.push(sc, t + rtt + 50_000, up, 54, RST);
        } else if r < open + closed {
            self.push(sc, t + rtt, down, 54, RST | ACK);
        }
    }

    /// Vertical scan: many ports of one host. `gap_s` is the mean time
    /// between probes (0.001 fast, several seconds for a slow scan).
    pub fn vertical_scan(&mut self, target: [u8; 16], ports: u64, gap_s: f64) {
        let sc = self.scan_scenario(gap_s, "vertical_scan", "vertical_scan_slow");
        let scanner = self.host_in(45, 33);
        let mut t = self.attack_start();
        let closed = self.rng.uniform(0.0, 0.95);
        let mut order: Vec<u16> = (1..=ports as u16).collect();
        // Fisher–Yates, as nmap randomises the port order.
        for i in (1..order.len()).rev() {
            let j = self.rng.range(0, i as u64) as usize;
            order.swap(i, j);
        }
        for port in order {
            if t >= self.end() {
                break;
            }
            self.probe(sc, t, (scanner, target), port, (0.01, closed));
            t += self.rng.exp(gap_s * 1e9) as u64 + 1;
        }
    }

    /// Horizontal scan: one port across a /16 of hosts, mostly unanswered.
    pub fn horizontal_scan(&mut self, hosts: u64, gap_s: f64) {
        let sc = self.scan_scenario(gap_s, "horizontal_scan", "horizontal_scan_slow");
        let scanner = self.host_in(185, 220);
        let port = [22u16, 23, 445, 3389, 5900, 6379][self.rng.range(0, 5) as usize];
        let mut t = self.attack_start();
        for _ in 0..hosts {
            if t >= self.end() {
                break;
            }
            let target = v4(
                10,
                0,
                self.rng.range(0, 255) as u8,
                self.rng.range(1, 254) as u8,
            );
            self.probe(sc, t, (scanner, target), port, (0.02, 0.15));
            t += self.rng.exp(gap_s * 1e9) as u64 + 1;
        }
    }

    /// SSH brute force: repeated full connections to port 22, each a key
    /// exchange and a failed password, every `gap_s` seconds on average,
    /// with 1–4 in parallel.
    pub fn ssh_bruteforce(&mut self, target: [u8; 16], attempts: u64, gap_s: f64) {
        let sc = self.scenario("ssh_bruteforce", AttackClass::BruteForce);
        let attacker = self.host_in(91, 240);
        let rtt = self.rng.range(20_000_000, 150_000_000);
        let mut t = self.attack_start();
        for _ in 0..attempts {
            if t >= self.end() {
                break;
            }
            let cport = self.ephemeral_port();
            let up = FlowKey::new(attacker, target, cport, 22, TCP);
            let down = FlowKey::new(target, attacker, 22, cport, TCP);
            self.push(sc, t, up, SYN_FRAME, SYN);
            self.push(sc, t + rtt / 2, down, SYN_FRAME, SYN | ACK);
            let mut now = t + rtt;
            self.push(sc, now, up, ACK_FRAME, ACK);
            // Banner, key exchange, auth attempts.
            for _ in 0..self.rng.range(6, 12) {
                let l = self.rng.range(90, 1100) as u16;
                self.push(sc, now, up, l, ACK | PSH);
                let l = self.rng.range(90, 1100) as u16;
                self.push(sc, now + rtt / 2 + 200_000, down, l, ACK | PSH);
                now += rtt + self.rng.range(100_000, 3_000_000);
            }
            self.push(sc, now, down, ACK_FRAME, FIN | ACK);
            self.push(sc, now + rtt / 2, up, ACK_FRAME, FIN | ACK);
            t += self.rng.exp(gap_s * 1e9) as u64 + 1;
        }
    }

    /// HTTP login brute force: short connections that each POST credentials
    /// and receive a 401, `rate` attempts per second.
    pub fn http_bruteforce(&mut self, target: [u8; 16], attempts: u64, rate: f64) {
        let sc = self.scenario("http_bruteforce", AttackClass::BruteForce);
        let attacker = self.host_in(5, 188);
        let rtt = self.rng.range(10_000_000, 100_000_000);
        let port = if self.rng.chance(0.5) { 80 } else { 443 };
        let mut t = self.attack_start();
        for _ in 0..attempts {
            if t >= self.end() {
                break;
            }
            let c = Conn {
                client: attacker,
                cport: self.ephemeral_port(),
                server: target,
                sport: port,
                rtt,
                req: self.rng.range(500, 800),
                resp: self.rng.range(300, 600),
                rate: 5e6,
            };
            self.tcp_conn(sc, t, &c);
            t += self.rng.exp(1e9 / rate) as u64 + 1;
        }
    }
}

/// A random unicast IPv4 source from one random draw `x` (first octet 1..=223).
fn spoofed_source(x: u64) -> [u8; 16] {
    v4(
        (x % 223 + 1) as u8,
        (x >> 8) as u8,
        (x >> 16) as u8,
        (x >> 24) as u8,
    )
}
