//! When a scenario's first frame left: a packet tap on the sender's link
//! that keeps the kernel's timestamp of the first outgoing frame of the
//! scenario's ethertype (IPv4; ARP for an ARP scan).

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sensor_common::clock::realtime_ns;

use super::super::monotonic_ns;
use crate::error::Result;
use crate::generator::{packet_socket, set_socket_option};
use crate::netns::Netns;

/// Watches a namespace's link for its first outgoing frame of one ethertype
/// (IPv4 for IP scenarios: the tools' own ARP resolution comes first and is
/// not the attack) and records
/// the `CLOCK_MONOTONIC` time it saw it (within microseconds of the send).
pub(super) struct FirstFrame {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Receives one frame from a packet tap; for an outgoing frame of
/// `ethertype` (network byte order), the
/// `CLOCK_MONOTONIC` time it was sent: the kernel's stamp (`CLOCK_REALTIME`)
/// moved onto the monotonic clock, or, without a stamp, now.
fn recv_outgoing(fd: &OwnedFd, ethertype: u16) -> Option<u64> {
    let mut buf = [0u8; 64];
    // SAFETY: sockaddr_ll is plain data.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&cbuf);
    // SAFETY: msg describes valid buffers.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_TRUNC) };
    if n < 0 || from.sll_pkttype != libc::PACKET_OUTGOING || from.sll_protocol != ethertype {
        return None;
    }
    let now_mono = monotonic_ns();
    // SAFETY: walking the control messages the kernel wrote into `cbuf`.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !c.is_null() {
        // SAFETY: `c` points at a control message header inside `cbuf`.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SO_TIMESTAMPNS {
            // SAFETY: an SO_TIMESTAMPNS message carries one timespec.
            let ts: libc::timespec = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast()) };
            let stamp =
                u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?;
            let now_real = realtime_ns();
            // The frame left `now_real - stamp` ago.
            return Some(now_mono.saturating_sub(now_real.saturating_sub(stamp)));
        }
        // SAFETY: advancing within the same control buffer.
        c = unsafe { libc::CMSG_NXTHDR(&raw const msg, c) };
    }
    Some(now_mono)
}

impl FirstFrame {
    /// Watches `ifname` in `ns` for `ethertype` (host byte order, e.g.
    /// `libc::ETH_P_IP`).
    pub(super) fn arm(ns: &Netns, ifname: &str, ethertype: u16) -> Result<Self> {
        // Outgoing frames reach only ETH_P_ALL taps, so the socket takes
        // every frame and the loop keeps the first outgoing one of its type.
        let fd = packet_socket(ns, ifname, libc::ETH_P_ALL as u16)?;
        let ethertype = ethertype.to_be();
        // Both options are best effort: the watch works without them, only
        // less precisely.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        let _ = set_socket_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv, "SO_RCVTIMEO");
        // The kernel stamps each frame as it reaches the tap: the time the
        // frame left, whenever this thread gets to read it (on a loaded
        // machine, milliseconds later).
        let _ = set_socket_option(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &1i32,
            "SO_TIMESTAMPNS",
        );
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (s2, seen2) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Some(t) = recv_outgoing(&fd, ethertype) {
                    seen2.store(t, Ordering::Relaxed);
                    return;
                }
            }
        });
        Ok(Self {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// Stops watching; the time of the first outgoing frame, if any.
    pub(super) fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let v = self.seen.load(Ordering::Relaxed);
        (v != 0).then_some(v)
    }
}

impl Drop for FirstFrame {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
