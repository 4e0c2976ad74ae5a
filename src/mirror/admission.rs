//! Admission: what decides whether a request is mirrored before it is
//! sent. A captured body is held against `max_body` and the shared byte
//! budget; the shadow's rate limit is a token bucket; a route's sample is
//! sticky per key.
//!
//! Must never: let a capture hold more than its limit or the budget, or
//! block (every check here is a lock held for a few instructions).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use crate::budget::{MemoryBudget, Reservation};
use crate::exchange::SkipReason;
use crate::route::{Route, SampleKey};
use crate::units::RateLimit;

/// A body being captured, bounded by `max_body` and by the shared budget.
#[derive(Debug)]
pub struct CaptureBuf {
    buf: BytesMut,
    limit: usize,
    /// Holds the bytes captured, or the length the body announced when
    /// room was made for it at once.
    reservation: Reservation,
    overflow: Option<SkipReason>,
}

impl CaptureBuf {
    pub fn new(limit: usize, budget: &Arc<MemoryBudget>) -> CaptureBuf {
        CaptureBuf {
            buf: BytesMut::new(),
            limit,
            reservation: Reservation::empty(budget),
            overflow: None,
        }
    }

    /// Makes room at once for a body its headers announce (Content-Length
    /// without Transfer-Encoding), held against the budget like captured
    /// bytes, so a large body is copied once instead of regrown chunk by
    /// chunk. A length past `max_body` or past the budget's room reserves
    /// nothing: the chunks decide as they arrive. What the body turns out
    /// not to fill is given back when the capture finishes.
    pub fn expect(&mut self, headers: &HeaderMap) {
        if headers.contains_key(http::header::TRANSFER_ENCODING) || self.overflow.is_some() {
            return;
        }
        let Some(length) = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<usize>().ok())
        else {
            return;
        };
        let held = self.reservation.held();
        if length > self.limit || length <= held {
            return;
        }
        if self.reservation.grow(length - held) {
            self.buf.reserve(length - self.buf.len());
        }
    }

    /// Appends a chunk; returns false once the capture has been given up.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.overflow.is_some() {
            return false;
        }
        let length = self.buf.len() + chunk.len();
        if length > self.limit {
            return self.give_up(SkipReason::BodyTooLarge);
        }
        let held = self.reservation.held();
        if length > held && !self.reservation.grow(length - held) {
            return self.give_up(SkipReason::QueueFull);
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    fn give_up(&mut self, reason: SkipReason) -> bool {
        self.overflow = Some(reason);
        self.buf = BytesMut::new();
        self.reservation.release();
        false
    }

    /// Why the capture was given up, if it was.
    pub fn overflow(&self) -> Option<SkipReason> {
        self.overflow
    }

    /// The captured bytes and what they hold of the budget, or the reason the capture was given up.
    pub fn finish(mut self) -> Result<(Bytes, Reservation), SkipReason> {
        match self.overflow {
            Some(reason) => Err(reason),
            None => {
                self.reservation.shrink_to(self.buf.len());
                Ok((self.buf.freeze(), self.reservation))
            }
        }
    }
}

/// A token bucket: `per_second` tokens a second, bursts up to one second's worth.
#[derive(Debug)]
pub(super) struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(super) fn new(limit: RateLimit) -> RateLimiter {
        let burst = limit.per_second.max(1.0);
        RateLimiter {
            per_second: limit.per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token now, going into debt if there is none; returns how long
    /// to wait until that token would have been there. Writes queue this way
    /// (a write is never dropped for the rate), and reads see no token until
    /// the debt is paid.
    pub(super) fn reserve(&self) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        let left = refilled - 1.0;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.per_second)
        }
    }

    pub(super) fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            true
        } else {
            *state = (refilled, now);
            false
        }
    }
}

/// Whether a request falls inside a route's sample. With a sample key the
/// choice is sticky: the same key is always in or always out.
pub(super) fn sampled_in(route: &Route, headers: &HeaderMap, client_ip: IpAddr) -> bool {
    if route.sample >= 1.0 {
        return true;
    }
    if route.sample <= 0.0 {
        return false;
    }
    let key_hash = match &route.sample_key {
        Some(SampleKey::ClientIp) => Some(hash_of(&(route.name.as_str(), client_ip))),
        Some(SampleKey::Header(name)) => headers
            .get(name)
            .map(|value| hash_of(&(route.name.as_str(), value.as_bytes()))),
        None => None,
    };
    let point = match key_hash {
        // The top 53 bits as a fraction in [0, 1).
        Some(hash) => (hash >> 11) as f64 / (1u64 << 53) as f64,
        // No key (or the key header is absent): an independent draw.
        None => rand::random::<f64>(),
    };
    point < route.sample
}

fn hash_of(value: &impl Hash) -> u64 {
    // DefaultHasher::new() uses fixed keys, so the same key hashes the same
    // way for the life of the process (and across replicas of one build).
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::MirrorPolicy;

    #[test]
    fn a_capture_stops_at_max_body_and_gives_its_bytes_back() {
        let budget = MemoryBudget::new(1000);
        let mut capture = CaptureBuf::new(10, &budget);
        assert!(capture.push(b"12345"));
        assert_eq!(budget.used(), 5);
        assert!(!capture.push(b"678901"));
        assert_eq!(budget.used(), 0, "a given-up capture holds nothing");
        assert!(!capture.push(b"1"));
        assert_eq!(capture.finish().unwrap_err(), SkipReason::BodyTooLarge);
    }

    #[test]
    fn an_announced_length_is_held_at_once_and_what_it_overstated_given_back() {
        let budget = MemoryBudget::new(1000);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("100"));
        let mut capture = CaptureBuf::new(500, &budget);
        capture.expect(&headers);
        assert_eq!(budget.used(), 100, "held before the first byte");
        assert!(capture.push(&[b'x'; 60]));
        assert_eq!(budget.used(), 100);
        let (bytes, reservation) = capture.finish().unwrap();
        assert_eq!(
            (bytes.len(), budget.used()),
            (60, 60),
            "the 40 bytes never sent are given back"
        );
        drop(reservation);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_announced_length_past_the_limit_or_the_budget_holds_nothing() {
        let budget = MemoryBudget::new(50);
        let announced = |length: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static(length));
            headers
        };
        let mut capture = CaptureBuf::new(30, &budget);
        capture.expect(&announced("31"));
        assert_eq!(budget.used(), 0, "past max_body");
        capture.expect(&announced("not a number"));
        assert_eq!(budget.used(), 0);
        let mut chunked = announced("20");
        chunked.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
        capture.expect(&chunked);
        assert_eq!(budget.used(), 0, "a length beside Transfer-Encoding is not the body's");
        let mut big = CaptureBuf::new(1000, &budget);
        big.expect(&announced("60"));
        assert_eq!(budget.used(), 0, "past the budget's room");
        // Longer than announced: the chunks are held as they come, up to max_body.
        capture.expect(&announced("10"));
        assert!(capture.push(&[b'x'; 25]));
        assert_eq!(budget.used(), 25);
        assert!(!capture.push(&[b'x'; 10]));
        assert_eq!((capture.overflow(), budget.used()), (Some(SkipReason::BodyTooLarge), 0));
    }

    #[test]
    fn the_shared_budget_bounds_all_captures_together() {
        let budget = MemoryBudget::new(8);
        let mut first = CaptureBuf::new(100, &budget);
        let mut second = CaptureBuf::new(100, &budget);
        assert!(first.push(b"123456"));
        assert!(!second.push(b"123"), "only 2 bytes are left in the budget");
        assert_eq!(second.finish().unwrap_err(), SkipReason::QueueFull);
        let (bytes, reservation) = first.finish().unwrap();
        assert_eq!(bytes, "123456");
        assert_eq!(budget.used(), 6);
        let mut held = Reservation::empty(&budget);
        held.absorb(reservation);
        assert_eq!(budget.used(), 6, "absorbing moves bytes, it does not count them twice");
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_of_one_second_then_refuses() {
        let limiter = RateLimiter::new(RateLimit { per_second: 5.0 });
        let allowed = (0..20).filter(|_| limiter.try_take()).count();
        assert_eq!(allowed, 5);
        let slow = RateLimiter::new(RateLimit { per_second: 0.1 });
        assert!(slow.try_take(), "a rate below 1/s still allows one request");
        assert!(!slow.try_take());
    }

    #[test]
    fn sampling_by_key_is_deterministic_and_close_to_the_fraction() {
        let route = Route::new(
            "r",
            "GET /x",
            MirrorPolicy::Compare,
            0.25,
            Some(SampleKey::Header(http::HeaderName::from_static("x-user"))),
        )
        .unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut sampled = 0;
        for user in 0..4000 {
            let mut headers = HeaderMap::new();
            headers.insert("x-user", user.to_string().parse().unwrap());
            let first = sampled_in(&route, &headers, ip);
            assert_eq!(first, sampled_in(&route, &headers, ip), "user {user}");
            sampled += usize::from(first);
        }
        assert!((800..1200).contains(&sampled), "{sampled} of 4000 at 0.25");
    }
}
