//! The sensor's XDP program: parse, count the packet in its flow and in the
//! per-source sketches, export flow events at checkpoints, pass the packet.
//! It is a passive observer, so it fails open: any error passes the packet
//! and is counted.
#![no_std]
#![no_main]

mod enforce;
mod export;
mod flow;
mod maps;
mod parse;
mod sketch;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext,
};
use sensor_common::{
    BlockReason, Counter, EnforceMode, EventKind, FlowKey, FlowStats, SensorConfig,
    hash::hash_words, ipproto, tcp_flags,
};

use crate::{
    maps::{KNOWN_SOURCES, SENSOR_CONFIG, count, count_add},
    parse::Parsed,
};

/// Entry point, named `sensor_common::XDP_PROGRAM_NAME`.
#[xdp]
pub(crate) fn sensor_xdp(ctx: XdpContext) -> u32 {
    match try_sensor_xdp(&ctx) {
        Ok(action) => action,
        Err(c) => {
            count(c);
            xdp_action::XDP_PASS
        }
    }
}

/// Does nothing but pass: the floor the sensor's per-packet cost is measured
/// against.
#[xdp]
pub(crate) fn sensor_xdp_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The flow key on the stack, 8-byte aligned so it can be zeroed (and
/// hashed) a word at a time.
#[repr(C, align(8))]
struct KeyBuf(FlowKey);

impl KeyBuf {
    /// Zeroes the key in place. Volatile word stores, because the linker
    /// lowers a plain zero-fill to an out-of-line byte-loop `memset` (~200
    /// instructions for 40 bytes) and LLVM would merge ordinary stores (or a
    /// move of a zeroed value) back into one.
    #[inline(always)]
    fn zero_in_place(buf: &mut MaybeUninit<KeyBuf>) -> &mut FlowKey {
        const WORDS: usize = size_of::<KeyBuf>() / 8;
        const _: () = assert!(size_of::<KeyBuf>() == WORDS * 8);
        let w = buf.as_mut_ptr().cast::<u64>();
        for i in 0..WORDS {
            // SAFETY: `i * 8` is inside the 8-byte aligned buffer.
            unsafe { w.add(i).write_volatile(0) };
        }
        // SAFETY: every byte is written; all-zero is a valid `FlowKey`.
        unsafe { &mut buf.assume_init_mut().0 }
    }
}

/// The source and destination of a key in a [`KeyBuf`] as little-endian
/// words `[src lo, src hi, dst lo, dst hi]` (`sketch::addr_words`): four
/// word loads instead of thirty-two byte loads.
#[inline(always)]
fn addr_words(key: &FlowKey) -> [u64; 4] {
    const _: () = assert!(core::mem::offset_of!(FlowKey, src) == 0);
    const _: () = assert!(core::mem::offset_of!(FlowKey, dst) == 16);
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "every key here lives in an 8-byte aligned KeyBuf"
    )]
    let w = core::ptr::from_ref(key).cast::<u64>();
    // SAFETY: the four words are the key's first 32 bytes, 8-byte aligned as
    // the KeyBuf around it; the BPF target is little-endian, so each word is
    // `addr_words`' little-endian reading.
    unsafe { [w.read(), w.add(1).read(), w.add(2).read(), w.add(3).read()] }
}

#[inline(always)]
fn try_sensor_xdp(ctx: &XdpContext) -> Result<u32, Counter> {
    let cfg = *SENSOR_CONFIG.get(0).ok_or(Counter::InternalError)?;
    let len = (ctx.data_end() - ctx.data()) as u64;
    count(Counter::PacketsSeen);
    count_add(Counter::BytesSeen, len);

    let mut key_buf = MaybeUninit::<KeyBuf>::uninit();
    let key = KeyBuf::zero_in_place(&mut key_buf);
    let meta = match parse::parse(ctx, key) {
        Parsed::Flow(meta) => {
            count(Counter::ParsedOk);
            if let Some(note) = meta.note {
                count(note);
            }
            Some(meta)
        }
        Parsed::IpOnly(c) => {
            count(c);
            None
        }
        Parsed::NoIp(c) => {
            count(c);
            return Ok(verdict(&cfg));
        }
    };
    let [src_lo, src_hi, dst_lo, dst_hi] = addr_words(key);

    // Before any flow work: a blocked packet costs the parse and a trie
    // lookup. Unknown modes count as off. ARP is never blocked: its sender
    // address is the frame's claim, and dropping it cuts a segment apart.
    let enforcing = (cfg.enforce == EnforceMode::On as u32
        || cfg.enforce == EnforceMode::DryRun as u32)
        && !key.is_arp();
    if enforcing
        && let Some(reason) =
            BlockReason::from_u32(enforce::sensor_source_blocked(src_lo, src_hi) as u32)
    {
        let [dropped, would_drop] = reason.counters();
        if cfg.enforce == EnforceMode::On as u32 {
            count(dropped);
            return Ok(xdp_action::XDP_DROP);
        }
        count(would_drop);
    }

    let src_hash = hash_words(src_lo, src_hi);
    sketch::update(src_hash, len, cfg.epoch);
    let Some(meta) = meta else {
        sketch::sensor_update_dst(dst_lo, dst_hi, len, 0);
        return Ok(verdict(&cfg));
    };

    // The packet's only clock read: flow times and the event's timestamp
    // share it.
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut scratch = MaybeUninit::<FlowStats>::uninit();
    let f = flow::update(key, len, meta.tcp_flags, now, &mut scratch)?;
    // SAFETY: `f.stats` is this CPU's slot or `scratch`, both live.
    let packets = unsafe { (*f.stats).packets };
    let kind = EventKind::for_packet(meta.tcp_flags, f.is_new, packets);
    sketch::sensor_update_dst(dst_lo, dst_hi, len, packets);
    // SAFETY: as above.
    let flags_or = unsafe { (*f.stats).tcp_flags_or };
    if let Some(kind) = kind {
        let hashes = (src_hash, hash_words(dst_lo, dst_hi));
        export::emit(&cfg, key, f.stats, kind, hashes, now, &meta, len as u32);
        // At export time, not per packet: a source whose flow carried an
        // ACK completed an exchange and stays welcome at protected victims.
        if flags_or & tcp_flags::ACK != 0 {
            let _ = KNOWN_SOURCES.insert(key.src, now, 0);
        }
    }

    // Victim protection, after the accounting so the flood stays visible:
    // a known flow is a TCP flow that carried an ACK, or another protocol's
    // flow past its first packet.
    if enforcing {
        let known = if key.proto == ipproto::TCP {
            flags_or & tcp_flags::ACK != 0
        } else {
            packets > 1
        };
        if enforce::sensor_over_protect_rate(dst_lo, dst_hi, src_lo, src_hi, u64::from(known)) != 0
        {
            if cfg.enforce == EnforceMode::On as u32 {
                count(Counter::DroppedRateLimit);
                return Ok(xdp_action::XDP_DROP);
            }
            count(Counter::WouldDropRateLimit);
        }
    }
    Ok(verdict(&cfg))
}

/// The action for a packet the program observed: a mirror port's copy is
/// dropped (nobody needs it), anything else passes.
#[inline(always)]
fn verdict(cfg: &SensorConfig) -> u32 {
    if cfg.mirror == 1 {
        count(Counter::MirrorDropped);
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a loadable program: a reachable panic is an infinite
    // loop the verifier rejects at load time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
