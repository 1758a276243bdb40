//! The source blocklist: LPM tries of IPv4 and IPv6 prefixes, consulted
//! right after parsing so a blocked packet skips the sketches and the flow
//! table, and an allowlist that overrides it.

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use sensor_common::{BlockEntry, Counter, TokenBucket, list_size, sketch::is_v4_words};

use crate::maps::{
    ALLOW_V4, ALLOW_V6, BLOCK_V4, BLOCK_V6, KNOWN_SOURCES, LIST_SIZES, PROTECT_BUCKETS, PROTECTED,
    count,
};

/// True when list `i` (a `list_size` index) has entries.
#[inline(always)]
fn has_entries(i: u32) -> bool {
    LIST_SIZES.get(i).is_some_and(|n| *n != 0)
}

/// The [`BlockReason`](sensor_common::BlockReason) (as `u64`) of the live
/// blocklist entry covering the source whose address words
/// ([`addr_words`](sensor_common::sketch::addr_words)) are `lo`, `hi`; 0 when
/// none does, when it has expired or when the allowlist covers the source.
///
/// A global BPF function (scalar arguments): verified once. An empty list
/// costs no lookup, and the (coarse, jiffy-resolution: TTLs are seconds)
/// clock is read only for a source that has an entry.
#[unsafe(no_mangle)]
#[inline(never)]
pub(crate) extern "C" fn sensor_source_blocked(lo: u64, hi: u64) -> u64 {
    let v4 = is_v4_words(lo, hi);
    // The IPv4 address is the high half of `hi`, in network order when its
    // little-endian bytes are read back.
    let a4 = ((hi >> 32) as u32).to_le_bytes();
    let mut a6 = [0u8; 16];
    a6[..8].copy_from_slice(&lo.to_le_bytes());
    a6[8..].copy_from_slice(&hi.to_le_bytes());
    let (block, allow) = if v4 {
        (list_size::BLOCK_V4, list_size::ALLOW_V4)
    } else {
        (list_size::BLOCK_V6, list_size::ALLOW_V6)
    };
    if !has_entries(block) {
        return 0;
    }
    let entry: Option<&BlockEntry> = if v4 {
        BLOCK_V4.get(Key::new(32, a4))
    } else {
        BLOCK_V6.get(Key::new(128, a6))
    };
    let Some(entry) = entry else {
        return 0;
    };
    let (expires, reason) = (entry.expires_ns, entry.reason);
    // SAFETY: helper without preconditions.
    if expires != 0 && unsafe { bpf_ktime_get_coarse_ns() } > expires {
        count(Counter::BlockExpired);
        return 0;
    }
    let allowed = has_entries(allow)
        && if v4 {
            ALLOW_V4.get(Key::new(32, a4)).is_some()
        } else {
            ALLOW_V6.get(Key::new(128, a6)).is_some()
        };
    if allowed {
        count(Counter::BlockAllowlisted);
        return 0;
    }
    u64::from(reason)
}

/// An address from its two little-endian words.
#[inline(always)]
fn addr_bytes(lo: u64, hi: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&lo.to_le_bytes());
    a[8..].copy_from_slice(&hi.to_le_bytes());
    a
}

/// 1 when a packet to the victim `dst` (address words) from `src` is over
/// the victim's token bucket and should be dropped, 0 when it passes: the
/// victim is not protected, the flow is `known` (it completed an exchange)
/// or its source did on another flow, or credit was left. A global BPF
/// function: verified once; clock read only for a protected victim.
#[unsafe(no_mangle)]
#[inline(never)]
pub(crate) extern "C" fn sensor_over_protect_rate(
    dst_lo: u64,
    dst_hi: u64,
    src_lo: u64,
    src_hi: u64,
    known: u64,
) -> u64 {
    if !has_entries(list_size::PROTECTED) {
        return 0;
    }
    let victim = addr_bytes(dst_lo, dst_hi);
    // SAFETY: the value is only read while the program runs.
    let Some(p) = (unsafe { PROTECTED.get(victim) }) else {
        return 0;
    };
    let (cost, full, expires) = (p.ns_per_token, p.max_credit_ns, p.expires_ns);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if expires != 0 && now > expires {
        return 0;
    }
    // SAFETY: as above.
    if known != 0 || unsafe { KNOWN_SOURCES.get(addr_bytes(src_lo, src_hi)) }.is_some() {
        count(Counter::ProtectKnownPassed);
        return 0;
    }
    let b = if let Some(b) = PROTECT_BUCKETS.get_ptr_mut(victim) {
        b
    } else {
        let fresh = TokenBucket {
            credit_ns: full,
            last_ns: now,
        };
        if PROTECT_BUCKETS.insert(victim, fresh, 0).is_err() {
            return 0;
        }
        let Some(b) = PROTECT_BUCKETS.get_ptr_mut(victim) else {
            return 0;
        };
        b
    };
    // SAFETY: this CPU's slot of the victim's bucket; only this CPU writes it.
    let b = unsafe { &mut *b };
    let credit = b.credit_ns.saturating_add(now.saturating_sub(b.last_ns));
    b.credit_ns = if credit > full { full } else { credit };
    b.last_ns = now;
    if b.credit_ns >= cost {
        b.credit_ns -= cost;
        return 0;
    }
    1
}
