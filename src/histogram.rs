//! Log-linear latency buckets, as HdrHistogram lays them out: exact to the
//! microsecond below 64 µs, then 32 equal sub-buckets per power of two, so
//! a bucket is at most 1/32 of its lower bound wide and its midpoint is
//! within 1.6% of every latency it holds. Histograms kept this way add up
//! by adding counts per bucket: across batches, minutes and replicas.
//! A leaf: it imports nothing of cutover's.
//!
//! Must never: map one latency to two buckets, or two buckets' ranges onto
//! each other; a bucket number is stored, so the layout is part of the
//! store's schema.

/// Sub-buckets per power of two (2^5): the layout's precision.
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// The largest bucket number: latencies beyond about four days share it.
const LAST_BUCKET: i64 = 1100;

/// The bucket a latency in milliseconds falls in (negative and NaN count as 0).
pub fn bucket_of(ms: f64) -> i64 {
    let micros = (ms * 1000.0).round();
    let micros = if micros.is_finite() && micros > 0.0 {
        // Saturates at u64::MAX for absurd values, which land in the last bucket.
        micros as u64
    } else {
        0
    };
    if micros < 2 * SUB_BUCKETS {
        return micros as i64;
    }
    let octave = 63 - u64::from(micros.leading_zeros());
    let shift = octave - u64::from(SUB_BUCKET_BITS);
    let sub_bucket = micros >> shift;
    let bucket = shift * SUB_BUCKETS + sub_bucket;
    i64::try_from(bucket).unwrap_or(LAST_BUCKET).min(LAST_BUCKET)
}

/// The latency, in milliseconds, a bucket stands for: the middle of its range.
pub fn value_of(bucket: i64) -> f64 {
    let bucket = bucket.clamp(0, LAST_BUCKET) as u64;
    if bucket < 2 * SUB_BUCKETS {
        return bucket as f64 / 1000.0;
    }
    let shift = bucket / SUB_BUCKETS - 1;
    let sub_bucket = bucket % SUB_BUCKETS + SUB_BUCKETS;
    let lower = (sub_bucket << shift) as f64;
    let width = (1u64 << shift) as f64;
    (lower + (width - 1.0) / 2.0) / 1000.0
}

/// The largest relative error of [`value_of`] over any latency of 64 µs or more.
pub const RELATIVE_ERROR: f64 = 0.5 / SUB_BUCKETS as f64;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_latencies_are_exact_to_the_microsecond() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(-3.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(0.017), 17);
        assert_eq!(value_of(17), 0.017);
        assert_eq!(bucket_of(0.063), 63);
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut previous = bucket_of(0.0);
        for micros in 1..200_000u64 {
            let bucket = bucket_of(micros as f64 / 1000.0);
            assert!(
                bucket == previous || bucket == previous + 1,
                "{micros} µs: bucket {bucket} after {previous}"
            );
            previous = bucket;
        }
        assert!(bucket_of(1e300) <= LAST_BUCKET);
        assert_eq!(bucket_of(f64::INFINITY), 0);
    }

    proptest! {
        #[test]
        fn a_bucket_stands_for_its_latencies_within_the_stated_error(micros in 64u64..3_600_000_000u64) {
            let ms = micros as f64 / 1000.0;
            let shown = value_of(bucket_of(ms));
            prop_assert!((shown - ms).abs() / ms <= RELATIVE_ERROR + 1e-12, "{ms} ms shown as {shown}");
        }

        #[test]
        fn buckets_keep_the_order_of_latencies(a in 0.0f64..1e7, b in 0.0f64..1e7) {
            if a <= b {
                prop_assert!(bucket_of(a) <= bucket_of(b));
            }
        }
    }
}
