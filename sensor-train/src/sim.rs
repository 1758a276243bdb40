//! A deterministic, seeded traffic simulator that produces labelled
//! [`FlowEvent`] sequences exactly as the XDP program emits them.
//!
//! No labelled capture of real attacks exists yet, so the models are trained
//! on simulated traffic. Each scenario generates packets (timestamp, 5-tuple,
//! frame length, TCP flags); the packets of an episode are merged in time
//! order and fed through [`KernelModel`], which mirrors the XDP program's
//! per-CPU flow accounting and export policy (an event on a flow's first
//! packet, at packet-count checkpoints 2, 4 … 1024 then every 1024, on FIN
//! and on RST, with RST > FIN > start > checkpoint priority). The resulting
//! events go through the same [`sensor::features::FeatureExtractor`] as live traffic.
//!
//! Benign mixes: web browsing (DNS + bursts of HTTPS connections), bulk
//! downloads, DNS lookups, long-lived idle connections with keepalives,
//! speed tests (parallel fast TCP flows), a busy internal web server and ICMP
//! pings. Attacks: SYN floods (single source or spoofed sources), UDP floods,
//! vertical and horizontal port scans (fast and slow), SSH and HTTP brute
//! force. Timings (RTTs, rates, think times) are drawn from stated
//! distributions with a `SplitMix64` generator, so one seed always gives the
//! same events, on every platform.

mod attacks;

use std::{collections::HashMap, sync::Arc};

use sensor_common::{EventKind, FlowEvent, FlowKey, FlowStats, tcp_flags};

use sensor::{
    capture::sketch::{CountMin, HyperLogLog},
    features::GatewayView,
    model::row::AttackClass,
};

/// `SplitMix64`: tiny, fast, and fully specified, so simulated data does not
/// change when a dependency's generator does.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform real in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.f64()).ln()
    }

    /// Log-normal with the given median and log-space sigma (Box–Muller).
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (sigma * z).exp()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

/// One simulated packet.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    pub ts_ns: u64,
    pub key: FlowKey,
    pub len: u16,
    pub flags: u8,
    /// Scenario instance that produced it (index into [`Episode::scenarios`]).
    pub scenario: u32,
}

/// A scenario instance: what produced a set of packets, and their label.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub label: AttackClass,
}

/// One labelled event.
#[derive(Clone, Copy, Debug)]
pub struct SimEvent {
    pub ev: FlowEvent,
    pub label: AttackClass,
    pub scenario: u32,
}

/// One item of a simulated stream, in the order a worker would see it.
#[derive(Clone, Debug)]
pub enum SimItem {
    /// A ring event.
    Event(SimEvent),
    /// The control thread published a new gateway view.
    Gateway(Arc<GatewayView>),
}

/// The kernel's per-epoch sketches and the control thread's publication, in
/// user space: epochs of [`GatewayEpochs::EPOCH_NS`] from the episode start,
/// each published [`GatewayEpochs::PUBLISH_DELAY_NS`] after it ends (the
/// control thread's flip grace plus the read), like `control::Controller`.
pub struct GatewayEpochs {
    start: u64,
    seq: u64,
    packets: CountMin,
    sources: HyperLogLog,
    pending: Option<(u64, Arc<GatewayView>)>,
}

impl GatewayEpochs {
    pub const EPOCH_NS: u64 = 1_000_000_000;
    pub const PUBLISH_DELAY_NS: u64 = 6_000_000;

    #[must_use]
    pub fn new(t0: u64) -> Self {
        Self {
            start: t0,
            seq: 0,
            packets: CountMin::new(),
            sources: HyperLogLog::new(),
            pending: None,
        }
    }

    /// Views published by `ts` (call before counting a packet at `ts`).
    pub fn advance(&mut self, ts: u64, out: &mut Vec<SimItem>) {
        loop {
            if let Some((at, _)) = &self.pending
                && *at <= ts
            {
                let (_, v) = self.pending.take().expect("checked above");
                out.push(SimItem::Gateway(v));
            }
            if ts < self.start + Self::EPOCH_NS {
                return;
            }
            if let Some((_, v)) = self.pending.take() {
                out.push(SimItem::Gateway(v));
            }
            self.seq += 1;
            let end = self.start + Self::EPOCH_NS;
            self.pending = Some((
                end + Self::PUBLISH_DELAY_NS,
                Arc::new(GatewayView {
                    seq: self.seq,
                    epoch_ns: Self::EPOCH_NS,
                    src_packets: std::mem::take(&mut self.packets),
                    distinct_sources: self.sources.estimate(),
                    // The simulator trains the features, which read only
                    // the source side.
                    ..GatewayView::default()
                }),
            ));
            self.sources.clear();
            self.start = end;
        }
    }

    /// Counts one packet as the XDP program's sketches do.
    pub fn count(&mut self, src: &[u8; 16]) {
        self.packets.add(src, 1);
        self.sources.insert_addr(src);
    }
}

/// The XDP program's flow accounting and export policy, in user space.
#[derive(Default)]
pub struct KernelModel {
    flows: HashMap<(FlowKey, u32), (FlowStats, u32)>,
    /// CPUs the simulated NIC spreads flows over (RSS by flow hash).
    pub n_cpus: u32,
}

impl KernelModel {
    #[must_use]
    pub fn new(n_cpus: u32) -> Self {
        Self {
            flows: HashMap::new(),
            n_cpus: n_cpus.max(1),
        }
    }

    /// Counts one packet; returns the event the program would emit, if any.
    pub fn packet(&mut self, p: &Packet) -> Option<(FlowEvent, u32)> {
        let cpu = (sensor_common::hash::fmix64(
            sensor_common::hash_addr(&p.key.src)
                ^ sensor_common::hash_addr(&p.key.dst).rotate_left(7)
                ^ u64::from(p.key.sport) << 16
                ^ u64::from(p.key.dport),
        ) % u64::from(self.n_cpus)) as u32;
        let len = u64::from(p.len);
        let flags = p.flags;
        let mut is_new = false;
        let e = self.flows.entry((p.key, cpu)).or_insert_with(|| {
            is_new = true;
            (FlowStats::default(), p.scenario)
        });
        let s = &mut e.0;
        if is_new {
            *s = FlowStats::fresh(len, flags, p.ts_ns);
        } else {
            s.add(len, flags, p.ts_ns);
        }
        let kind = EventKind::for_packet(flags, is_new, s.packets)?;
        Some((
            FlowEvent {
                key: p.key,
                stats: *s,
                // The program stamps the event just after counting the packet.
                ts_ns: p.ts_ns + 250,
                kind: kind as u32,
                cpu,
                tcp_flags: flags,
                vlan_tagged: 0,
                vlan_id: 0,
                pkt_len: u32::from(p.len),
            },
            e.1,
        ))
    }
}

const TCP: u8 = sensor_common::ipproto::TCP;
const UDP: u8 = sensor_common::ipproto::UDP;
const ICMP: u8 = sensor_common::ipproto::ICMP;
const SYN: u8 = tcp_flags::SYN;
const ACK: u8 = tcp_flags::ACK;
const FIN: u8 = tcp_flags::FIN;
const RST: u8 = tcp_flags::RST;
const PSH: u8 = tcp_flags::PSH;
/// TCP payload per full segment, and the frame length of a full segment.
const MSS: u64 = 1448;
const FULL_FRAME: u16 = 1514;
const ACK_FRAME: u16 = 66;
const SYN_FRAME: u16 = 74;

fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
    FlowKey::map_v4([a, b, c, d])
}

/// An episode under construction: packets from several scenario instances.
pub struct Episode {
    pub packets: Vec<Packet>,
    pub scenarios: Vec<Scenario>,
    pub rng: Rng,
    /// Start of the episode (`CLOCK_MONOTONIC` ns).
    pub t0: u64,
    /// Length of the episode in ns; generators stop there.
    pub len_ns: u64,
}

/// Parameters of one TCP connection.
struct Conn {
    client: [u8; 16],
    cport: u16,
    server: [u8; 16],
    sport: u16,
    /// Round-trip time, ns.
    rtt: u64,
    /// Request bytes (client → server) and response bytes.
    req: u64,
    resp: u64,
    /// Server sending rate, bytes per second.
    rate: f64,
}

impl Episode {
    #[must_use]
    pub fn new(seed: u64, t0: u64, len_ns: u64) -> Self {
        Self {
            packets: Vec::new(),
            scenarios: Vec::new(),
            rng: Rng::new(seed),
            t0,
            len_ns,
        }
    }

    fn end(&self) -> u64 {
        self.t0 + self.len_ns
    }

    fn scenario(&mut self, name: &'static str, label: AttackClass) -> u32 {
        self.scenarios.push(Scenario { name, label });
        (self.scenarios.len() - 1) as u32
    }

    fn push(&mut self, sc: u32, ts: u64, k: FlowKey, len: u16, flags: u8) {
        if ts < self.end() {
            self.packets.push(Packet {
                ts_ns: ts,
                key: k,
                len,
                flags,
                scenario: sc,
            });
        }
    }

    fn ephemeral_port(&mut self) -> u16 {
        self.rng.range(32768, 60999) as u16
    }

    /// A full TCP connection: handshake, request, response at `rate` with an
    /// ACK every two segments, then FIN from the client. Returns its end.
    fn tcp_conn(&mut self, sc: u32, t: u64, c: &Conn) -> u64 {
        let up = FlowKey::new(c.client, c.server, c.cport, c.sport, TCP);
        let down = FlowKey::new(c.server, c.client, c.sport, c.cport, TCP);
        let half = c.rtt / 2;
        self.push(sc, t, up, SYN_FRAME, SYN);
        self.push(sc, t + half, down, SYN_FRAME, SYN | ACK);
        let mut now = t + c.rtt;
        self.push(sc, now, up, ACK_FRAME, ACK);
        // Request.
        let mut left = c.req;
        while left > 0 {
            let seg = left.min(MSS);
            left -= seg;
            self.push(sc, now, up, (seg + 66) as u16, ACK | PSH);
            now += 20_000;
        }
        now += half + self.rng.exp(2_000_000.0) as u64; // server think time
        // Response.
        let gap = (MSS as f64 / c.rate * 1e9) as u64;
        let mut left = c.resp;
        let mut n = 0u64;
        while left > 0 {
            if now >= self.end() {
                return now;
            }
            let seg = left.min(MSS);
            left -= seg;
            let len = if seg == MSS {
                FULL_FRAME
            } else {
                (seg + 66) as u16
            };
            self.push(sc, now, down, len, ACK | PSH);
            n += 1;
            if n.is_multiple_of(2) || left == 0 {
                self.push(sc, now + half, up, ACK_FRAME, ACK);
            }
            now += gap.max(1_000) + self.rng.range(0, gap / 4 + 1);
        }
        now += half + self.rng.exp(50_000_000.0) as u64;
        self.push(sc, now, up, ACK_FRAME, FIN | ACK);
        self.push(sc, now + half, down, ACK_FRAME, FIN | ACK);
        self.push(sc, now + c.rtt, up, ACK_FRAME, ACK);
        now + c.rtt
    }

    /// A DNS lookup: one query, one answer.
    fn dns(&mut self, sc: u32, t: u64, client: [u8; 16], resolver: [u8; 16], rtt: u64) {
        let p = self.ephemeral_port();
        let q = self.rng.range(70, 100) as u16;
        let a = self.rng.range(100, 400) as u16;
        self.push(sc, t, FlowKey::new(client, resolver, p, 53, UDP), q, 0);
        self.push(
            sc,
            t + rtt,
            FlowKey::new(resolver, client, 53, p, UDP),
            a,
            0,
        );
    }

    // ---------------------------------------------------------------- benign

    /// A person browsing: page loads (a DNS lookup, then 3–15 HTTPS
    /// connections to 1–5 servers, responses log-normal around 20 KB),
    /// separated by think times with a 20 s mean.
    pub fn web_browsing(&mut self, client: [u8; 16], resolver: [u8; 16]) {
        let sc = self.scenario("web_browsing", AttackClass::Benign);
        let mut t = self.t0 + self.rng.exp(5e9) as u64;
        while t < self.end() {
            let rtt = self.rng.range(5_000_000, 120_000_000);
            let dns_rtt = self.rng.range(1_000_000, 30_000_000);
            self.dns(sc, t, client, resolver, dns_rtt);
            let n_servers = self.rng.range(1, 5);
            let servers: Vec<[u8; 16]> = (0..n_servers)
                .map(|_| {
                    v4(
                        93,
                        self.rng.range(1, 250) as u8,
                        self.rng.range(1, 250) as u8,
                        self.rng.range(1, 250) as u8,
                    )
                })
                .collect();
            let n = self.rng.range(3, 15);
            let mut start = t + 30_000_000;
            for i in 0..n {
                let server = servers[i as usize % servers.len()];
                let c = Conn {
                    client,
                    cport: self.ephemeral_port(),
                    server,
                    sport: if self.rng.chance(0.9) { 443 } else { 80 },
                    rtt,
                    req: self.rng.range(300, 2000),
                    resp: self.rng.lognormal(20_000.0, 1.3).clamp(200.0, 3e6) as u64,
                    rate: self.rng.uniform(1e6, 12e6),
                };
                self.tcp_conn(sc, start, &c);
                start += self.rng.exp(40_000_000.0) as u64;
            }
            t += self.rng.exp(20e9) as u64 + 1_000_000_000;
        }
    }

    /// Standalone DNS lookups (background resolution, a 4 s mean gap).
    pub fn dns_chatter(&mut self, client: [u8; 16], resolver: [u8; 16]) {
        let sc = self.scenario("dns", AttackClass::Benign);
        let mut t = self.t0 + self.rng.exp(2e9) as u64;
        while t < self.end() {
            let rtt = self.rng.range(500_000, 40_000_000);
            self.dns(sc, t, client, resolver, rtt);
            t += self.rng.exp(4e9) as u64;
        }
    }

    /// A large HTTPS download (5–60 MB at 2–40 MB/s).
    pub fn bulk_download(&mut self, client: [u8; 16]) {
        let sc = self.scenario("bulk_download", AttackClass::Benign);
        let t = self.t0 + self.rng.range(0, self.len_ns * 3 / 4);
        let c = Conn {
            client,
            cport: self.ephemeral_port(),
            server: v4(151, 101, self.rng.range(1, 250) as u8, 10),
            sport: 443,
            rtt: self.rng.range(10_000_000, 80_000_000),
            req: 600,
            resp: self.rng.range(5_000_000, 60_000_000),
            rate: self.rng.uniform(2e6, 40e6),
        };
        self.tcp_conn(sc, t, &c);
    }

    /// A long-lived, mostly idle connection (chat, push, MQTT broker): one
    /// keepalive each way every 30–60 s for the whole episode.
    pub fn idle_connection(&mut self, client: [u8; 16]) {
        let sc = self.scenario("idle_connection", AttackClass::Benign);
        let server = v4(17, self.rng.range(1, 250) as u8, 5, 5);
        let sport = [443u16, 5222, 8883][self.rng.range(0, 2) as usize];
        let cport = self.ephemeral_port();
        let rtt = self.rng.range(10_000_000, 150_000_000);
        let t = self.t0 + self.rng.range(0, 20_000_000_000);
        let c = Conn {
            client,
            cport,
            server,
            sport,
            rtt,
            req: 300,
            resp: 2000,
            rate: 1e6,
        };
        // Handshake and a first exchange, then keepalives; no close.
        let up = FlowKey::new(client, server, cport, sport, TCP);
        let down = FlowKey::new(server, client, sport, cport, TCP);
        self.push(sc, t, up, SYN_FRAME, SYN);
        self.push(sc, t + rtt / 2, down, SYN_FRAME, SYN | ACK);
        self.push(sc, t + rtt, up, ACK_FRAME, ACK);
        self.push(sc, t + rtt, up, (c.req + 66) as u16, ACK | PSH);
        self.push(
            sc,
            t + 2 * rtt,
            down,
            (c.resp.min(MSS) + 66) as u16,
            ACK | PSH,
        );
        let mut now = t + 2 * rtt;
        while now < self.end() {
            now += self.rng.range(30_000_000_000, 60_000_000_000);
            let l = self.rng.range(66, 120) as u16;
            self.push(sc, now, up, l, ACK | PSH);
            self.push(sc, now + rtt / 2, down, ACK_FRAME, ACK);
        }
    }

    /// A speed test: 4–8 parallel connections to one server on port 8080,
    /// each 1–3 MB/s down for 8–10 s.
    pub fn speed_test(&mut self, client: [u8; 16]) {
        let sc = self.scenario("speed_test", AttackClass::Benign);
        let t = self.t0 + self.rng.range(0, self.len_ns * 3 / 4);
        let server = v4(185, 76, self.rng.range(1, 250) as u8, 20);
        let rtt = self.rng.range(5_000_000, 40_000_000);
        let n = self.rng.range(4, 8);
        for i in 0..n {
            let rate = self.rng.uniform(1e6, 3e6);
            let secs = self.rng.uniform(8.0, 10.0);
            let c = Conn {
                client,
                cport: self.ephemeral_port(),
                server,
                sport: 8080,
                rtt,
                req: 400,
                resp: (rate * secs) as u64,
                rate,
            };
            self.tcp_conn(sc, t + i * 2_000_000, &c);
        }
    }

    /// A busy internal web server: external clients connect at 5–40 new
    /// connections per second, each a short HTTPS exchange.
    pub fn busy_server(&mut self, server: [u8; 16]) {
        let sc = self.scenario("busy_server", AttackClass::Benign);
        let rate = self.rng.uniform(5.0, 40.0);
        let mut t = self.t0 + self.rng.exp(1e9) as u64;
        // A returning population of clients, so a client makes a few visits.
        let population = self.rng.range(200, 2000);
        let base = self.rng.range(1, 200) as u8;
        while t < self.end() {
            let id = self.rng.range(0, population);
            let client = v4(
                100 + (id % 50) as u8,
                base,
                (id >> 8) as u8,
                (id & 0xff) as u8,
            );
            let c = Conn {
                client,
                cport: self.ephemeral_port(),
                server,
                sport: 443,
                rtt: self.rng.range(10_000_000, 200_000_000),
                req: self.rng.range(300, 1500),
                resp: self.rng.lognormal(8_000.0, 1.0).clamp(200.0, 500_000.0) as u64,
                rate: self.rng.uniform(1e6, 10e6),
            };
            self.tcp_conn(sc, t, &c);
            t += self.rng.exp(1e9 / rate) as u64;
        }
    }

    /// ICMP echo to a few hosts, now and then.
    pub fn pings(&mut self, client: [u8; 16]) {
        let sc = self.scenario("ping", AttackClass::Benign);
        let target = v4(8, 8, self.rng.range(4, 8) as u8, 8);
        let mut t = self.t0 + self.rng.range(0, self.len_ns / 2);
        let n = self.rng.range(4, 20);
        for _ in 0..n {
            let rtt = self.rng.range(5_000_000, 50_000_000);
            // ICMP flows: sport = type, dport = code.
            self.push(sc, t, FlowKey::new(client, target, 8, 0, ICMP), 98, 0);
            self.push(sc, t + rtt, FlowKey::new(target, client, 0, 0, ICMP), 98, 0);
            t += 1_000_000_000;
        }
    }

    /// Sorts the packets by time (stable, so simultaneous packets keep the
    /// order their scenario wrote them) and runs them through the kernel
    /// model.
    #[must_use]
    pub fn into_events(mut self, n_cpus: u32) -> (Vec<SimEvent>, Vec<Scenario>) {
        self.packets.sort_by_key(|p| p.ts_ns);
        let mut k = KernelModel::new(n_cpus);
        let mut out = Vec::new();
        for p in &self.packets {
            if let Some((ev, sc)) = k.packet(p) {
                out.push(SimEvent {
                    ev,
                    label: self.scenarios[sc as usize].label,
                    scenario: sc,
                });
            }
        }
        (out, self.scenarios)
    }

    /// Like [`Episode::into_events`], with the gateway views the control
    /// thread would publish from the kernel's sketches interleaved where a
    /// worker would pick them up.
    #[must_use]
    pub fn into_stream(mut self, n_cpus: u32) -> (Vec<SimItem>, Vec<Scenario>) {
        self.packets.sort_by_key(|p| p.ts_ns);
        let mut k = KernelModel::new(n_cpus);
        let mut gw = GatewayEpochs::new(self.t0);
        let mut out = Vec::new();
        for p in &self.packets {
            gw.advance(p.ts_ns, &mut out);
            gw.count(&p.key.src);
            if let Some((ev, sc)) = k.packet(p) {
                out.push(SimItem::Event(SimEvent {
                    ev,
                    label: self.scenarios[sc as usize].label,
                    scenario: sc,
                }));
            }
        }
        (out, self.scenarios)
    }
}

/// Size of the simulated network of one episode.
#[derive(Clone, Copy, Debug)]
pub struct EpisodeConfig {
    pub seed: u64,
    pub secs: u64,
    pub clients: u8,
    /// Attack scenarios to inject (drawn from all kinds by the seed).
    pub attacks: u32,
    /// Scale of attack intensity, 1.0 = the documented rates.
    pub intensity: f64,
}

/// Builds one episode: a benign background of `clients` clients and a busy
/// internal server, plus `attacks` attacks chosen by the seed.
#[must_use]
pub fn build_episode(cfg: &EpisodeConfig) -> Episode {
    // Episodes start at a realistic uptime, not at zero.
    let t0 = 3_600_000_000_000 + cfg.seed % 1000 * 1_000_000_000;
    let mut ep = Episode::new(cfg.seed, t0, cfg.secs * 1_000_000_000);
    let resolver = v4(10, 0, 0, 53);
    for i in 0..cfg.clients {
        let c = v4(10, 0, 1, 10 + i);
        ep.web_browsing(c, resolver);
        ep.dns_chatter(c, resolver);
        if ep.rng.chance(0.5) {
            ep.idle_connection(c);
        }
        if ep.rng.chance(0.2) {
            ep.pings(c);
        }
    }
    if cfg.clients > 0 {
        for _ in 0..ep.rng.range(1, 3) {
            let c = v4(
                10,
                0,
                1,
                10 + ep.rng.range(0, u64::from(cfg.clients) - 1) as u8,
            );
            ep.bulk_download(c);
        }
        if ep.rng.chance(0.7) {
            let c = v4(
                10,
                0,
                1,
                10 + ep.rng.range(0, u64::from(cfg.clients) - 1) as u8,
            );
            ep.speed_test(c);
        }
        ep.busy_server(v4(10, 0, 2, 80));
    }
    let k = cfg.intensity;
    for _ in 0..cfg.attacks {
        let victim = v4(10, 0, 2, ep.rng.range(1, 100) as u8);
        match ep.rng.range(0, 9) {
            0 => ep.syn_flood(victim, false, 2000.0 * k, 8.0),
            1 => ep.syn_flood(victim, true, 4000.0 * k, 8.0),
            2 => ep.udp_flood(victim, false, 5000.0 * k, 6.0),
            3 => ep.udp_flood(victim, true, 3000.0 * k, 6.0),
            4 => ep.vertical_scan(victim, 1000, 0.002 / k),
            5 => ep.vertical_scan(victim, 300, 3.0),
            6 => ep.horizontal_scan(2000, 0.005 / k),
            7 => ep.horizontal_scan(200, 4.0),
            8 => ep.ssh_bruteforce(victim, 400, 1.5),
            _ => ep.http_bruteforce(victim, 1500, 15.0 * k),
        }
    }
    ep
}

/// The recorded fixture: a short episode with benign traffic, a scan, a
/// brute force and a small flood (a few hundred events).
#[must_use]
pub fn fixture_episode() -> Episode {
    let mut ep = Episode::new(7, 3_600_000_000_000, 30_000_000_000);
    let resolver = v4(10, 0, 0, 53);
    for i in 0..2 {
        let c = v4(10, 0, 1, 10 + i);
        ep.web_browsing(c, resolver);
        ep.dns_chatter(c, resolver);
    }
    ep.idle_connection(v4(10, 0, 1, 10));
    ep.pings(v4(10, 0, 1, 11));
    ep.vertical_scan(v4(10, 0, 2, 5), 60, 0.05);
    ep.http_bruteforce(v4(10, 0, 2, 6), 15, 5.0);
    ep.syn_flood(v4(10, 0, 2, 7), true, 200.0, 0.3);
    ep
}
