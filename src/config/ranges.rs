//! The range every duration and size setting may take. A value outside it
//! is refused by check-config and serve alike, naming the key: a duration
//! that overflows a clock, a zero timeout that fails every request, or a
//! size no machine has would otherwise pass validation and break serving.
//!
//! Must never: hold a range that the README's configuration reference does
//! not state (the README lists these keys with these bounds).

use std::time::Duration;

/// Inclusive bounds of one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds<T> {
    pub min: T,
    pub max: T,
}

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
const fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}
const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

const fn within(min: Duration, max: Duration) -> Bounds<Duration> {
    Bounds { min, max }
}

/// `listen.shutdown_grace`.
pub const SHUTDOWN_GRACE: Bounds<Duration> = within(secs(0), secs(HOUR));
/// `listen.header_read_timeout`: also how long a new connection may stay silent.
pub const HEADER_READ_TIMEOUT: Bounds<Duration> = within(ms(100), secs(10 * MINUTE));
/// `listen.body_read_timeout`.
pub const BODY_READ_TIMEOUT: Bounds<Duration> = within(ms(100), secs(HOUR));
/// `listen.idle_timeout`: a kept-alive connection with no request in flight.
pub const IDLE_TIMEOUT: Bounds<Duration> = within(secs(1), secs(DAY));
/// `primary.timeout`, `shadow.timeout`.
pub const UPSTREAM_TIMEOUT: Bounds<Duration> = within(ms(1), secs(HOUR));
/// `primary.connect_timeout`, `shadow.connect_timeout`.
pub const CONNECT_TIMEOUT: Bounds<Duration> = within(ms(1), secs(5 * MINUTE));
/// `mirror.write_wait`.
pub const WRITE_WAIT: Bounds<Duration> = within(ms(1), secs(HOUR));
/// `store.acquire_timeout`.
pub const ACQUIRE_TIMEOUT: Bounds<Duration> = within(ms(1), secs(10 * MINUTE));
/// `store.retention`, `store.rollup_retention`.
pub const RETENTION: Bounds<Duration> = within(secs(HOUR), secs(3650 * DAY));
/// `store.flush`.
pub const FLUSH: Bounds<Duration> = within(ms(1), secs(MINUTE));
/// `noise.window`.
pub const NOISE_WINDOW: Bounds<Duration> = within(secs(1), secs(365 * DAY));
/// `[route.compare] time_tolerance` values.
pub const TIME_TOLERANCE: Bounds<Duration> = within(secs(0), secs(3650 * DAY));
/// `[route.compare] recheck`.
pub const RECHECK: Bounds<Duration> = within(ms(1), secs(10 * MINUTE));
/// `[[notify]] timeout`: one delivery attempt.
pub const NOTIFY_TIMEOUT: Bounds<Duration> = within(ms(100), secs(5 * MINUTE));
/// `[[notify]] backoff`: the wait before the first retry.
pub const NOTIFY_BACKOFF: Bounds<Duration> = within(ms(10), secs(HOUR));
/// `[[sweep]] every`.
pub const SWEEP_EVERY: Bounds<Duration> = within(secs(1), secs(365 * DAY));
/// `rollback.p95`, `readiness.shadow_p95_max`, `readiness.shadow_p95_slack`.
pub const LATENCY_LIMIT: Bounds<Duration> = within(secs(0), secs(HOUR));
/// `rollback.window`.
pub const ROLLBACK_WINDOW: Bounds<Duration> = within(secs(1), secs(DAY));
/// `rollout.hold`, `[route.rollout] hold`.
pub const ROLLOUT_HOLD: Bounds<Duration> = within(secs(1), secs(30 * DAY));
/// `readiness.min_duration`, `readiness.unmapped_window`.
pub const READINESS_WINDOW: Bounds<Duration> = within(secs(0), secs(365 * DAY));

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

/// `mirror.max_body`, `mirror.max_decoded`: one body held in memory.
pub const BODY_SIZE: Bounds<usize> = Bounds { min: 0, max: GIB };
/// `mirror.max_buffered`: every captured body at once.
pub const BUFFERED_SIZE: Bounds<usize> = Bounds {
    min: KIB,
    max: 64 * GIB,
};
/// `noise.memory`.
pub const NOISE_MEMORY: Bounds<usize> = Bounds {
    min: KIB,
    max: 16 * GIB,
};

/// A duration setting's value: parsed, and within its bounds.
pub fn duration_within(text: &str, bounds: Bounds<Duration>) -> Result<Duration, String> {
    let value = crate::units::parse_duration(text)?;
    if value < bounds.min || value > bounds.max {
        return Err(format!(
            "must be from {} to {}, got \"{text}\"",
            spell(bounds.min),
            spell(bounds.max)
        ));
    }
    Ok(value)
}

/// A size setting's value: parsed, and within its bounds.
pub fn size_within(text: &str, bounds: Bounds<usize>) -> Result<usize, String> {
    let value = crate::units::parse_size(text)?;
    if value < bounds.min || value > bounds.max {
        return Err(format!(
            "must be from {} to {}, got \"{text}\"",
            spell_size(bounds.min),
            spell_size(bounds.max)
        ));
    }
    Ok(value)
}

/// A size as a config would write it: `"1GiB"`, `"64KiB"`, `"100 bytes"`.
fn spell_size(size: usize) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if size >= unit && size % unit == 0 {
            return format!("{}{name}", size / unit);
        }
    }
    format!("{size} bytes")
}

fn spell(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_their_bounds_are_refused_with_both_ends() {
        assert_eq!(duration_within("5s", UPSTREAM_TIMEOUT), Ok(secs(5)));
        assert_eq!(
            duration_within("0s", UPSTREAM_TIMEOUT).unwrap_err(),
            "must be from 1ms to 1h, got \"0s\""
        );
        assert_eq!(
            duration_within("18446744073709551615s", HEADER_READ_TIMEOUT).unwrap_err(),
            "must be from 100ms to 10m, got \"18446744073709551615s\""
        );
        assert_eq!(
            size_within("2GiB", BODY_SIZE).unwrap_err(),
            "must be from 0 bytes to 1GiB, got \"2GiB\""
        );
        assert_eq!(
            size_within("1000", BUFFERED_SIZE).unwrap_err(),
            "must be from 1KiB to 64GiB, got \"1000\""
        );
    }

    #[test]
    fn every_upper_bound_can_be_added_to_the_clock() {
        for bounds in [
            SHUTDOWN_GRACE,
            HEADER_READ_TIMEOUT,
            BODY_READ_TIMEOUT,
            IDLE_TIMEOUT,
            UPSTREAM_TIMEOUT,
            CONNECT_TIMEOUT,
            WRITE_WAIT,
            ACQUIRE_TIMEOUT,
            RETENTION,
            FLUSH,
            NOISE_WINDOW,
            TIME_TOLERANCE,
            RECHECK,
            SWEEP_EVERY,
            LATENCY_LIMIT,
            ROLLBACK_WINDOW,
            READINESS_WINDOW,
        ] {
            assert!(bounds.min <= bounds.max);
            assert!(tokio::time::Instant::now().checked_add(bounds.max).is_some());
            assert!(std::time::SystemTime::now().checked_sub(bounds.max).is_some());
        }
    }
}
