//! Durations, sizes and rates as configs, flags and API queries write
//! them: `"250ms"`, `"64KiB"`, `"50/s"`. A leaf: it imports nothing of
//! cutover's; the ranges each key allows are config's (`config::ranges`).
//!
//! Must never: accept a rate of zero or below, or a size this machine
//! cannot address.

use std::time::Duration;

/// A rate in requests per second, written `"50/s"`, `"300/m"` or `"1000/h"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
}

/// Parses a human duration such as `"30s"`, `"250ms"`, `"24h"` or `"14d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("expected a duration like \"30s\", \"250ms\" or \"24h\", got \"{text}\""))
}

/// Parses a human size such as `"1MiB"`, `"512KiB"` or `"65536"` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a size like \"1MiB\" or \"64KiB\", got \"{text}\""))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("size \"{text}\" is too large for this machine"))
}

/// Parses a rate such as `"50/s"`, `"300/m"` or `"1000/h"`.
pub fn parse_rate(text: &str) -> Result<RateLimit, String> {
    let expected = || format!("expected a rate like \"50/s\", \"300/m\" or \"1000/h\", got \"{text}\"");
    let (count, unit) = text.trim().split_once('/').ok_or_else(expected)?;
    let count: f64 = count.trim().parse().map_err(|_| expected())?;
    let seconds = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(expected()),
    };
    if !count.is_finite() || count <= 0.0 {
        return Err(format!("a rate must be above zero, got \"{text}\""));
    }
    Ok(RateLimit {
        per_second: count / seconds,
    })
}
