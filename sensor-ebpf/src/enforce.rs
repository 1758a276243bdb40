//! The source blocklist: LPM tries of IPv4 and IPv6 prefixes, consulted
//! right after parsing so a blocked packet skips the sketches and the flow
//! table, and an allowlist that overrides it.

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use sensor_common::{BlockEntry, Counter, list_size, sketch::is_v4_words};

use crate::maps::{ALLOW_V4, ALLOW_V6, BLOCK_V4, BLOCK_V6, LIST_SIZES, count};

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
