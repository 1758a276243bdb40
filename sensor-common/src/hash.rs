//! Hashes computed identically in the XDP program and in user space: the sketch
//! indexes and the worker-ring choice must agree on both sides, so they live
//! here once. All are branch-free integer mixing that the verifier accepts.

/// Murmur3's 64-bit finaliser: a bijection with full avalanche.
#[inline(always)]
#[must_use]
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// One step of the user-space table hashes: folds a 64-bit word into `h`
/// (multiply by the golden ratio, rotate). Not a kernel hash; cheap because
/// the tables it feeds are keyed by already well-spread addresses.
#[inline(always)]
#[must_use]
pub const fn mix_word(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)
}

#[inline(always)]
const fn le_u64(b: &[u8; 16], o: usize) -> u64 {
    (b[o] as u64)
        | (b[o + 1] as u64) << 8
        | (b[o + 2] as u64) << 16
        | (b[o + 3] as u64) << 24
        | (b[o + 4] as u64) << 32
        | (b[o + 5] as u64) << 40
        | (b[o + 6] as u64) << 48
        | (b[o + 7] as u64) << 56
}

/// 64-bit hash of a 16-byte address (IPv4-mapped for IPv4). Feeds the Count-Min
/// rows (double hashing on its halves) and the HyperLogLog (index and rank).
#[inline(always)]
#[must_use]
pub const fn hash_addr(addr: &[u8; 16]) -> u64 {
    hash_words(le_u64(addr, 0), le_u64(addr, 8))
}

/// [`hash_addr`] of an address given as its two little-endian words
/// (`sketch::addr_words`): the XDP program loads them as two words.
#[inline(always)]
#[must_use]
pub const fn hash_words(a: u64, b: u64) -> u64 {
    fmix64(
        a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ b.rotate_left(29).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            ^ 0x5151_7e45_0c0f_fee5,
    )
}

/// Which worker ring a flow goes to. Symmetric in (src, dst) and (sport, dport),
/// so both directions of a connection reach the same worker and its
/// connection state (SYN answered or not) is complete.
#[inline(always)]
#[must_use]
pub const fn flow_ring_index(
    src_hash: u64,
    dst_hash: u64,
    sport: u16,
    dport: u16,
    proto: u8,
    n_workers: u32,
) -> u32 {
    let ports = (sport ^ dport) as u64;
    let h = fmix64(src_hash ^ dst_hash ^ (ports << 8) ^ proto as u64);
    if n_workers <= 1 {
        0
    } else {
        ((h >> 32) % n_workers as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_index_is_symmetric() {
        let a = hash_addr(&[1; 16]);
        let b = hash_addr(&[2; 16]);
        for n in 1..8 {
            assert_eq!(
                flow_ring_index(a, b, 1234, 80, 6, n),
                flow_ring_index(b, a, 80, 1234, 6, n)
            );
        }
    }

    #[test]
    fn ring_index_spreads_flows() {
        let mut counts = [0u32; 4];
        let d = hash_addr(&[9; 16]);
        for i in 0..4000u32 {
            let mut s = [0u8; 16];
            s[12..].copy_from_slice(&i.to_be_bytes());
            counts[flow_ring_index(hash_addr(&s), d, 40000, 53, 17, 4) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }
}
