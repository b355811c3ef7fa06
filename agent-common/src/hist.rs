//! Log2 histogram bucket math, run by the kernel programs and tested here.
//!
//! Bucket `i` (for `i < FINITE_BUCKETS`) counts observations `v` with
//! `v <= 2^i µs`, exactly the Prometheus `le` bound, so the exposition needs
//! no rounding. The last bucket counts everything above `2^23 µs` (8.39 s).

/// Finite buckets: upper bounds 1 µs, 2 µs, ..., 2^23 µs = 8.388608 s.
pub const FINITE_BUCKETS: usize = 24;
/// Finite buckets plus the overflow (`+Inf`) bucket.
pub const HIST_BUCKETS: usize = FINITE_BUCKETS + 1;

/// Upper bound of finite bucket `i`, in nanoseconds.
#[inline(always)]
pub const fn bucket_upper_ns(i: usize) -> u64 {
    1000u64 << i
}

/// Floor of log2 for `v > 0`, branch-light and loop-free for the verifier
/// (the classic bit-smearing form used by libbpf-tools' `log2l`).
#[inline(always)]
pub const fn log2_floor(mut v: u64) -> u32 {
    let mut r: u32 = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// The bucket for an observation of `ns` nanoseconds: the smallest `i` with
/// `ns <= 1000 * 2^i`, or the overflow bucket.
///
/// With `q = (ns - 1) / 1000` (integer division), `ns <= 1000 * 2^i` holds
/// exactly when `q < 2^i`, so `i = 0` for `q == 0` and `floor(log2 q) + 1`
/// otherwise. No floating point, no rounding.
#[inline(always)]
pub const fn bucket_index(ns: u64) -> usize {
    if ns <= 1000 {
        return 0;
    }
    let q = (ns - 1) / 1000;
    let i = log2_floor(q) as usize + 1;
    if i >= FINITE_BUCKETS {
        FINITE_BUCKETS
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn log2_floor_matches_std() {
        for v in [
            1u64,
            2,
            3,
            4,
            5,
            7,
            8,
            1023,
            1024,
            1025,
            u32::MAX as u64,
            1 << 40,
            u64::MAX,
        ] {
            assert_eq!(log2_floor(v), 63 - v.leading_zeros(), "v={v}");
        }
    }

    #[test]
    fn bucket_bounds_are_inclusive_prometheus_le() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1000), 0);
        assert_eq!(bucket_index(1001), 1);
        assert_eq!(bucket_index(2000), 1);
        assert_eq!(bucket_index(2001), 2);
        assert_eq!(bucket_index(4000), 2);
        assert_eq!(bucket_index(4001), 3);
        // 8.388608 s is the last finite bound; one nanosecond more overflows.
        assert_eq!(
            bucket_index(bucket_upper_ns(FINITE_BUCKETS - 1)),
            FINITE_BUCKETS - 1
        );
        assert_eq!(
            bucket_index(bucket_upper_ns(FINITE_BUCKETS - 1) + 1),
            FINITE_BUCKETS
        );
        assert_eq!(bucket_index(u64::MAX), FINITE_BUCKETS);
    }

    #[test]
    fn every_value_lands_in_the_smallest_bucket_that_holds_it() {
        // Exhaustive around every boundary, plus a sweep.
        let mut values: std::vec::Vec<u64> = std::vec::Vec::new();
        for i in 0..FINITE_BUCKETS {
            let b = bucket_upper_ns(i);
            values.extend_from_slice(&[b - 1, b, b + 1]);
        }
        let mut v = 1u64;
        while v < 20_000_000_000 {
            values.push(v);
            v = v * 3 / 2 + 7;
        }
        for v in values {
            let i = bucket_index(v);
            if i < FINITE_BUCKETS {
                assert!(v <= bucket_upper_ns(i), "v={v} i={i}");
            } else {
                assert!(v > bucket_upper_ns(FINITE_BUCKETS - 1));
            }
            if i > 0 && i <= FINITE_BUCKETS {
                assert!(v > bucket_upper_ns(i - 1), "v={v} i={i}");
            }
        }
    }

    #[test]
    fn top_finite_bound_is_at_least_eight_seconds() {
        assert!(bucket_upper_ns(FINITE_BUCKETS - 1) >= 8_000_000_000);
    }
}
