//! The wall clock as the store keeps it: milliseconds since the Unix epoch.
//! A leaf: it imports nothing of cutover's.
//!
//! Must never: panic on a clock before 1970 or past i64 (it saturates to 0
//! or `i64::MAX`), or be used to measure durations (that is `Instant`'s job).

use std::time::{Duration, SystemTime};

/// Now, in milliseconds since the Unix epoch.
/// Unix milliseconds as an RFC 3339 time to the second, in UTC.
pub fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// `at` in milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The time `window` before now, in milliseconds since the Unix epoch
/// (0 when that is before 1970).
pub fn ms_ago(window: Duration) -> i64 {
    SystemTime::now().checked_sub(window).map_or(0, unix_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_are_zero_and_now_is_after_2026() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(unix_ms(before), 0);
        assert!(now_ms() > 1_767_225_600_000);
        assert_eq!(ms_ago(Duration::from_secs(u64::MAX / 4)), 0);
        assert!(now_ms() - ms_ago(Duration::from_secs(60)) >= 60_000);
    }
}
