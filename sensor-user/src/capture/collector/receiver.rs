//! The collector's receiver thread: one UDP socket, the decoder and its
//! templates, and the split of each datagram's records over the workers.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crossbeam_channel::Sender;
use sensor_common::{clock::monotonic_ns, hash::flow_ring_index, hash_addr};
use tracing::warn;

use super::{CollectedFlow, DecodeCounters, Decoder, FlowOrigin, RecordBatch};

/// The socket's receive buffer: a burst of exports waits there while the
/// receiver hands the previous datagrams on (the kernel caps it at
/// `net.core.rmem_max`).
const RECEIVE_BUFFER: usize = 8 << 20;
/// How often the receiver looks at its stop flag when no datagram comes.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The listening socket could not be bound.
    #[error("cannot listen for flow records on UDP {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The receiver thread could not be started.
    #[error("cannot start the collector's receiver thread")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
}

/// A running receiver.
pub(crate) struct Collector {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<DecodeCounters>,
    local: SocketAddr,
    /// The counters so far, updated after every datagram.
    live: Arc<Mutex<DecodeCounters>>,
}

impl Collector {
    /// Binds `listen` and starts receiving; worker `i` gets its records
    /// through `workers[i]` (a flow and its reverse go to the same one).
    ///
    /// # Errors
    /// The socket cannot be bound, or the thread cannot start.
    pub(crate) fn start(
        listen: SocketAddr,
        workers: Vec<Sender<RecordBatch>>,
    ) -> Result<Self, CollectorError> {
        let socket = UdpSocket::bind(listen).map_err(|source| CollectorError::Bind {
            addr: listen,
            source,
        })?;
        let local = socket.local_addr().unwrap_or(listen);
        if let Err(e) = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBuf,
            &RECEIVE_BUFFER,
        ) {
            warn!(error = %e, "could not enlarge the collector's receive buffer");
        }
        socket
            .set_read_timeout(Some(STOP_CHECK))
            .map_err(|source| CollectorError::Bind {
                addr: listen,
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let live = Arc::new(Mutex::new(DecodeCounters::default()));
        let shared = Arc::clone(&live);
        let handle = std::thread::Builder::new()
            .name("sensor-collect-rx".into())
            .spawn(move || receive(&socket, &workers, &flag, &shared))
            .map_err(|source| CollectorError::Spawn { source })?;
        Ok(Self {
            stop,
            handle,
            local,
            live,
        })
    }

    /// The counters so far (the receiver publishes them after every
    /// datagram: one uncontended lock per datagram, not per record).
    pub(crate) fn counters(&self) -> DecodeCounters {
        *self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The address the socket is bound to (the port, when asked for 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops receiving and returns the counters. The workers' senders are
    /// dropped, so the workers see the end of their input once drained.
    pub(crate) fn stop(self) -> DecodeCounters {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_else(|_| {
            warn!("the collector's receiver panicked; its counts are lost");
            DecodeCounters::default()
        })
    }
}

/// The receiver loop: until `stop`, each datagram is decoded and its
/// records sent to their workers. A bad datagram is counted and skipped;
/// a receive error is counted and the loop goes on.
fn receive(
    socket: &UdpSocket,
    workers: &[Sender<RecordBatch>],
    stop: &AtomicBool,
    live: &Mutex<DecodeCounters>,
) -> DecodeCounters {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut records = Vec::with_capacity(64);
    let mut received = 0u64;
    let mut receive_errors = 0u64;
    let n_workers = u32::try_from(workers.len()).unwrap_or(1);
    while !stop.load(Ordering::Acquire) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                receive_errors += 1;
                warn!(error = %e, "receiving a flow datagram failed");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        received += 1;
        let received_ns = monotonic_ns();
        let exporter = peer.ip().to_canonical();
        records.clear();
        let decoded = decoder.decode(exporter, &buf[..len], &mut records);
        {
            let mut c = live.lock().unwrap_or_else(PoisonError::into_inner);
            *c = *decoder.counters();
            c.received = received;
            c.receive_errors = receive_errors;
        }
        let Some(info) = decoded else {
            continue;
        };
        let mut batches: Vec<RecordBatch> = (0..workers.len()).map(|_| Vec::new()).collect();
        for f in &records {
            let k = &f.key;
            let w = flow_ring_index(
                hash_addr(&k.src),
                hash_addr(&k.dst),
                k.sport,
                k.dport,
                k.proto,
                n_workers,
            ) as usize;
            batches[w].push(CollectedFlow {
                flow: *f,
                origin: FlowOrigin {
                    exporter,
                    domain: info.domain,
                    version: info.version,
                    in_if: f.in_if,
                    out_if: f.out_if,
                },
                received_ns,
            });
        }
        for (tx, batch) in workers.iter().zip(batches) {
            // Blocking: a worker that falls behind holds the receiver, and
            // the socket's buffer takes the burst, rather than records
            // being dropped here unseen.
            if !batch.is_empty() && tx.send(batch).is_err() {
                warn!("a collector worker has stopped; its records are dropped");
            }
        }
    }
    let mut c = *decoder.counters();
    c.received = received;
    c.receive_errors = receive_errors;
    c
}
