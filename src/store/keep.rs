//! `store.keep_matches`: which plain matches keep their raw `exchanges`
//! row. Every exchange counts in the rollups; a match (or a `sampled_out`
//! skip) with nothing hanging off it is worth a row only as an example,
//! so each route keeps a bounded sample of them, chosen by a token bucket
//! over the exchanges' own times.
//!
//! Must never: leave out the row of anything worth triaging (a divergence,
//! an error, a write, a skip other than `sampled_out`), or keep more
//! sample state than there are routes.

use std::collections::HashMap;

use super::records::ExchangeRecord;

/// How many plain matches per route keep their raw row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepMatches {
    /// Every one (as before rollups).
    All,
    /// Up to this many a second per route, in bursts of up to a second's
    /// worth (at least one); `0.0` keeps none.
    PerSecond(f64),
}

impl KeepMatches {
    /// Parses `"all"`, a rate such as `"10/s"` or `"600/m"`, or `"0/s"`.
    pub fn parse(text: &str) -> Result<KeepMatches, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(KeepMatches::All);
        }
        let none = text.split_once('/').is_some_and(|(count, unit)| {
            count.trim().parse::<f64>() == Ok(0.0) && ["s", "m", "h"].contains(&unit.trim())
        });
        if none {
            return Ok(KeepMatches::PerSecond(0.0));
        }
        crate::units::parse_rate(text)
            .map(|rate| KeepMatches::PerSecond(rate.per_second))
            .map_err(|message| format!("expected \"all\", \"0/s\" or a rate like \"10/s\": {message}"))
    }
}

/// Routes whose sample state is held at most; past it the state starts
/// afresh (a route name comes from the config, so this is a guard only).
const MAX_ROUTES: usize = 10_000;

/// Chooses, per route and kind, the plain matches that keep their row.
/// Matches and `sampled_out` skips have separate buckets, in maps looked
/// up by the route's `&str`: a sampled match costs no allocation.
#[derive(Debug)]
pub(super) struct MatchSampler {
    keep: KeepMatches,
    matches: HashMap<String, TokenBucket>,
    sampled_out: HashMap<String, TokenBucket>,
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last_ms: i64,
}

impl MatchSampler {
    pub(super) fn new(keep: KeepMatches) -> MatchSampler {
        MatchSampler {
            keep,
            matches: HashMap::new(),
            sampled_out: HashMap::new(),
        }
    }

    /// Whether the exchange keeps its raw row.
    pub(super) fn keeps(&mut self, exchange: &ExchangeRecord) -> bool {
        let Some(sampled_out) = sample_kind(exchange) else {
            return true;
        };
        let rate = match self.keep {
            KeepMatches::All => return true,
            KeepMatches::PerSecond(rate) if rate <= 0.0 => return false,
            KeepMatches::PerSecond(rate) => rate,
        };
        let buckets = if sampled_out {
            &mut self.sampled_out
        } else {
            &mut self.matches
        };
        let burst = rate.max(1.0);
        if !buckets.contains_key(exchange.route.as_str()) {
            if buckets.len() >= MAX_ROUTES {
                buckets.clear();
            }
            let fresh = TokenBucket {
                tokens: burst,
                last_ms: exchange.at_ms,
            };
            buckets.insert(exchange.route.clone(), fresh);
        }
        let Some(bucket) = buckets.get_mut(exchange.route.as_str()) else {
            return true;
        };
        // Exchanges arrive from several threads, slightly out of order:
        // time never runs back for the bucket.
        let elapsed_s = (exchange.at_ms - bucket.last_ms).max(0) as f64 / 1000.0;
        bucket.last_ms = bucket.last_ms.max(exchange.at_ms);
        bucket.tokens = (bucket.tokens + elapsed_s * rate).min(burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// For an exchange the sample applies to, whether it is a `sampled_out`
/// skip (its own sample) rather than a match; `None` when it always keeps
/// its row.
fn sample_kind(exchange: &ExchangeRecord) -> Option<bool> {
    if !exchange.is_plain() {
        return None;
    }
    match (exchange.outcome.as_str(), exchange.reason.as_deref()) {
        ("match", _) => Some(false),
        ("skipped", Some("sampled_out")) => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(at_ms: i64, route: &str, outcome: &str, reason: Option<&str>) -> ExchangeRecord {
        ExchangeRecord {
            at_ms,
            route: route.into(),
            outcome: outcome.into(),
            reason: reason.map(str::to_string),
            ..ExchangeRecord::default()
        }
    }

    #[test]
    fn the_setting_reads_all_a_rate_or_none_and_names_what_it_expected() {
        assert_eq!(KeepMatches::parse("all"), Ok(KeepMatches::All));
        assert_eq!(KeepMatches::parse(" 10/s "), Ok(KeepMatches::PerSecond(10.0)));
        assert_eq!(KeepMatches::parse("60/m"), Ok(KeepMatches::PerSecond(1.0)));
        assert_eq!(KeepMatches::parse("0/s"), Ok(KeepMatches::PerSecond(0.0)));
        assert_eq!(KeepMatches::parse("0/h"), Ok(KeepMatches::PerSecond(0.0)));
        for wrong in ["some", "10", "-1/s", "0/y", ""] {
            let message = KeepMatches::parse(wrong).expect_err(wrong);
            assert!(message.contains("\"all\""), "{wrong}: {message}");
        }
    }

    #[test]
    fn each_route_keeps_its_rate_of_matches_and_everything_else() {
        let mut sampler = MatchSampler::new(KeepMatches::PerSecond(2.0));
        // One second, 100 matches on each of two routes, 1 ms apart.
        let mut kept = HashMap::<&str, u32>::new();
        for i in 0..100 {
            for route in ["GET /a", "GET /b"] {
                if sampler.keeps(&plain(i * 10, route, "match", None)) {
                    *kept.entry(route).or_default() += 1;
                }
            }
        }
        assert_eq!(
            kept.get("GET /a"),
            Some(&3),
            "a burst of 2, then 2/s over 1 s: {kept:?}"
        );
        assert_eq!(kept.get("GET /b"), Some(&3), "{kept:?}");
        assert!(!sampler.keeps(&plain(990, "GET /a", "match", None)));
        assert!(sampler.keeps(&plain(990, "GET /a", "diverged", None)));
        assert!(sampler.keeps(&plain(990, "GET /a", "skipped", Some("mirror_off"))));
        assert!(
            sampler.keeps(&plain(990, "GET /a", "skipped", Some("sampled_out"))),
            "a sample of its own"
        );
        let mut write = plain(990, "GET /a", "match", None);
        write.ledger = Some(crate::ledger::LedgerRecord {
            entity: None,
            primary_status: Some(200),
            shadow_status: Some(200),
            primary_ms: None,
            shadow_ms: None,
            state: crate::ledger::LedgerState::Ok,
            attempts: 0,
            replay: None,
            seq: 1,
            intent: None,
        });
        assert!(sampler.keeps(&write), "every write keeps its row");
    }

    #[test]
    fn all_keeps_every_row_and_none_keeps_no_match() {
        let mut all = MatchSampler::new(KeepMatches::All);
        let mut none = MatchSampler::new(KeepMatches::PerSecond(0.0));
        for i in 0..50 {
            assert!(all.keeps(&plain(i, "GET /a", "match", None)));
            assert!(!none.keeps(&plain(i, "GET /a", "match", None)));
            assert!(none.keeps(&plain(i, "GET /a", "error", None)));
        }
    }

    #[test]
    fn exchanges_out_of_order_never_refill_the_bucket() {
        let mut sampler = MatchSampler::new(KeepMatches::PerSecond(1.0));
        assert!(sampler.keeps(&plain(10_000, "GET /a", "match", None)));
        assert!(!sampler.keeps(&plain(5_000, "GET /a", "match", None)));
        assert!(!sampler.keeps(&plain(10_500, "GET /a", "match", None)));
        assert!(sampler.keeps(&plain(11_000, "GET /a", "match", None)));
    }
}
