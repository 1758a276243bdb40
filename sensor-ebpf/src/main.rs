//! The sensor's XDP program: parse, count the packet in its flow and in the
//! per-source sketches, export flow events at checkpoints, pass the packet.
//! It is a passive observer, so it fails open: any error passes the packet
//! and is counted.
#![no_std]
#![no_main]

mod export;
mod flow;
mod maps;
mod parse;
mod sketch;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext,
};
use sensor_common::{Counter, EventKind, FlowKey, FlowStats, hash_addr, is_checkpoint, tcp_flags};

use crate::{
    maps::{SENSOR_CONFIG, count, count_add},
    parse::Parsed,
};

/// Entry point, named `sensor_common::XDP_PROGRAM_NAME`.
#[xdp]
pub fn sensor_xdp(ctx: XdpContext) -> u32 {
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
pub fn sensor_xdp_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn try_sensor_xdp(ctx: &XdpContext) -> Result<u32, Counter> {
    let cfg = *SENSOR_CONFIG.get(0).ok_or(Counter::InternalError)?;
    let len = (ctx.data_end() - ctx.data()) as u64;
    count(Counter::PacketsSeen);
    count_add(Counter::BytesSeen, len);

    let mut key = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        proto: 0,
        _pad: [0; 3],
    };
    match parse::parse(ctx, &mut key) {
        Parsed::Flow(meta) => {
            count(Counter::ParsedOk);
            if let Some(note) = meta.note {
                count(note);
            }
            let src_hash = hash_addr(&key.src);
            sketch::update(src_hash, len, cfg.epoch);

            // SAFETY: helper without preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            let mut scratch = FlowStats::default();
            let f = flow::update(&key, len, meta.tcp_flags, now, &mut scratch)?;
            // SAFETY: `f.stats` is this CPU's slot or `scratch`, both live.
            let packets = unsafe { (*f.stats).packets };
            let kind = if meta.tcp_flags & tcp_flags::RST != 0 {
                Some(EventKind::Rst)
            } else if meta.tcp_flags & tcp_flags::FIN != 0 {
                Some(EventKind::Fin)
            } else if f.is_new {
                Some(EventKind::Start)
            } else if is_checkpoint(packets) {
                Some(EventKind::Update)
            } else {
                None
            };
            if let Some(kind) = kind {
                export::emit(&cfg, &key, f.stats, kind, src_hash, &meta, len as u32);
            }
        }
        Parsed::IpOnly(c) => {
            count(c);
            sketch::update(hash_addr(&key.src), len, cfg.epoch);
        }
        Parsed::NoIp(c) => count(c),
    }

    if cfg.mirror == 1 {
        count(Counter::MirrorDropped);
        return Ok(xdp_action::XDP_DROP);
    }
    Ok(xdp_action::XDP_PASS)
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
