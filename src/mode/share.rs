//! The sticky share of a ramp: which requests the candidate serves while
//! only part of the traffic is switched (`cutover switch candidate
//! --percent 5 --key header:x-user`).
//!
//! A request is in the share when a stable hash of its key falls under the
//! share's percentage. The hash is SHA-256 of the key alone — not of the
//! route, the instance or the time — so one user is on one side on every
//! route, on every replica and after every restart, and a user in the 5%
//! share stays in it at 25%.
//!
//! Must never: put a request without a key in the share (it goes to the
//! primary), or depend on anything but the key and the percentage.

use std::fmt;
use std::net::IpAddr;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The hash's buckets: a percentage is kept in hundredths of a percent.
const BUCKETS: u64 = 10_000;

/// What identifies a client for the share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareKey {
    /// The value of a request header (its first occurrence).
    Header(HeaderName),
    /// The value of a cookie.
    Cookie(String),
    /// The address of the connection's peer.
    ClientIp,
}

/// Why a share could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    #[error("a share's key is header:NAME, cookie:NAME or client-ip; got \"{0}\"")]
    Key(String),
    #[error("\"{0}\" is not a header name")]
    HeaderName(String),
    #[error("a cookie's name is a token (letters, digits, !#$%&'*+-.^_`|~); got \"{0}\"")]
    CookieName(String),
    #[error("a share's percent is more than 0 and at most 100, in steps of 0.01; got {0}")]
    Percent(String),
    #[error("a key chooses who is in a share: give a percent with it")]
    KeyWithoutPercent,
}

impl ShareKey {
    pub fn parse(text: &str) -> Result<ShareKey, ShareError> {
        if text == "client-ip" {
            return Ok(ShareKey::ClientIp);
        }
        match text.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(ShareKey::Header)
                .map_err(|_| ShareError::HeaderName(name.to_string())),
            Some(("cookie", name)) if is_token(name) => Ok(ShareKey::Cookie(name.to_string())),
            Some(("cookie", name)) => Err(ShareError::CookieName(name.to_string())),
            _ => Err(ShareError::Key(text.to_string())),
        }
    }

    /// The key's value in a request, if it has one.
    fn value<'a>(&self, headers: &'a HeaderMap, client: IpAddr) -> Option<KeyValue<'a>> {
        match self {
            ShareKey::Header(name) => headers
                .get(name)
                .map(|value| value.as_bytes().trim_ascii())
                .filter(|value| !value.is_empty())
                .map(KeyValue::Borrowed),
            ShareKey::Cookie(name) => cookie(headers, name).map(KeyValue::Borrowed),
            ShareKey::ClientIp => Some(KeyValue::Ip(client)),
        }
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The first non-empty value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|b| *b == b'=')?;
            (pair[..at].trim_ascii() == name.as_bytes()).then(|| pair[at + 1..].trim_ascii())
        })
        .find(|value| !value.is_empty())
}

enum KeyValue<'a> {
    Borrowed(&'a [u8]),
    Ip(IpAddr),
}

impl fmt::Display for ShareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareKey::Header(name) => write!(f, "header:{name}"),
            ShareKey::Cookie(name) => write!(f, "cookie:{name}"),
            ShareKey::ClientIp => f.write_str("client-ip"),
        }
    }
}

impl Serialize for ShareKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ShareKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ShareKey, D::Error> {
        let text = String::deserialize(deserializer)?;
        ShareKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A share of traffic the candidate serves: `percent` of the keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// In hundredths of a percent, 1..=9999.
    #[serde(rename = "percent", with = "hundredths")]
    hundredths: u64,
    pub key: ShareKey,
}

impl Share {
    /// A share of `percent` (0 < percent < 100; 100 is the whole route,
    /// which is a switch without a share).
    pub fn new(percent: f64, key: ShareKey) -> Result<Share, ShareError> {
        let hundredths = (percent * 100.0).round();
        let exact = ((percent * 100.0) - hundredths).abs() < 1e-6;
        if !percent.is_finite() || !exact || hundredths < 1.0 || hundredths >= BUCKETS as f64 {
            return Err(ShareError::Percent(percent.to_string()));
        }
        Ok(Share {
            hundredths: hundredths as u64,
            key,
        })
    }

    /// The share a switch asks for: `percent` of the traffic by `key`
    /// (the client IP when no key is given). 100% is the whole route: no share.
    pub fn asked(percent: Option<f64>, key: Option<&str>) -> Result<Option<Share>, ShareError> {
        let key = key.map(ShareKey::parse).transpose()?;
        match (percent, key) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ShareError::KeyWithoutPercent),
            (Some(100.0), _) => Ok(None),
            (Some(percent), key) => Share::new(percent, key.unwrap_or(ShareKey::ClientIp)).map(Some),
        }
    }

    /// The percent in hundredths (1..=9999).
    pub fn hundredths(&self) -> u64 {
        self.hundredths
    }

    pub fn percent(&self) -> f64 {
        self.hundredths as f64 / 100.0
    }

    /// Whether the candidate serves this request: its key hashes into the share.
    pub fn includes(&self, headers: &HeaderMap, client: IpAddr) -> bool {
        self.key
            .value(headers, client)
            .is_some_and(|value| bucket(&value) < self.hundredths)
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}% by {}", self.percent(), self.key)
    }
}

/// The key's bucket, 0..BUCKETS: the same on every machine and build.
fn bucket(value: &KeyValue<'_>) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"cutover share\0");
    match value {
        KeyValue::Borrowed(bytes) => hasher.update(bytes),
        KeyValue::Ip(ip) => hasher.update(ip.to_string().as_bytes()),
    }
    let digest = hasher.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head) % BUCKETS
}

/// A share's percent in JSON: a number (5, 0.5), kept as hundredths.
mod hundredths {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hundredths: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(*hundredths as f64 / 100.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let percent = f64::deserialize(deserializer)?;
        super::Share::new(percent, super::ShareKey::ClientIp)
            .map(|share| share.hundredths)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_header(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn keys_parse_and_print_back() {
        for text in ["header:x-user", "cookie:session_id", "client-ip"] {
            assert_eq!(ShareKey::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(ShareKey::parse("user"), Err(ShareError::Key("user".into())));
        assert_eq!(ShareKey::parse("header:a b"), Err(ShareError::HeaderName("a b".into())));
        assert_eq!(ShareKey::parse("cookie:a=b"), Err(ShareError::CookieName("a=b".into())));
        assert_eq!(ShareKey::parse("cookie:"), Err(ShareError::CookieName(String::new())));
    }

    #[test]
    fn percents_are_within_the_route_in_hundredths() {
        let key = || ShareKey::ClientIp;
        assert_eq!(Share::new(5.0, key()).unwrap().percent(), 5.0);
        assert_eq!(Share::new(0.25, key()).unwrap().percent(), 0.25);
        for wrong in [0.0, -1.0, 100.0, 150.0, 0.001, f64::NAN, f64::INFINITY] {
            assert!(Share::new(wrong, key()).is_err(), "{wrong}");
        }
    }

    #[test]
    fn the_share_is_its_percent_of_keys_and_grows_without_moving_anyone_out() {
        let five = Share::new(5.0, ShareKey::parse("header:x-user").unwrap()).unwrap();
        let quarter = Share::new(25.0, ShareKey::parse("header:x-user").unwrap()).unwrap();
        let users: Vec<HeaderMap> = (0..20_000)
            .map(|n| with_header("x-user", &format!("user-{n}")))
            .collect();
        let in_five = users.iter().filter(|h| five.includes(h, LOOPBACK)).count();
        let in_quarter = users.iter().filter(|h| quarter.includes(h, LOOPBACK)).count();
        assert!((800..1200).contains(&in_five), "{in_five} of 20000 in a 5% share");
        assert!(
            (4600..5400).contains(&in_quarter),
            "{in_quarter} of 20000 in a 25% share"
        );
        assert!(
            users
                .iter()
                .all(|h| !five.includes(h, LOOPBACK) || quarter.includes(h, LOOPBACK)),
            "every user of the 5% share is in the 25% share"
        );
    }

    #[test]
    fn the_hash_is_fixed_across_builds_and_machines() {
        // Replicas of different builds must agree: these buckets are pinned.
        assert_eq!(bucket(&KeyValue::Borrowed(b"user-1")), 1_466);
        assert_eq!(bucket(&KeyValue::Borrowed(b"user-2")), 8_994);
        assert_eq!(
            bucket(&KeyValue::Ip(LOOPBACK)),
            bucket(&KeyValue::Borrowed(b"127.0.0.1"))
        );
    }

    #[test]
    fn a_switch_asks_for_a_share_by_percent_and_key() {
        assert_eq!(Share::asked(None, None), Ok(None));
        assert_eq!(Share::asked(Some(100.0), Some("cookie:sid")), Ok(None));
        assert_eq!(
            Share::asked(None, Some("cookie:sid")),
            Err(ShareError::KeyWithoutPercent)
        );
        let by_ip = Share::asked(Some(5.0), None).unwrap().unwrap();
        assert_eq!(by_ip.to_string(), "5% by client-ip");
        assert!(matches!(Share::asked(Some(5.0), Some("ip")), Err(ShareError::Key(_))));
        assert!(matches!(Share::asked(Some(101.0), None), Err(ShareError::Percent(_))));
    }

    #[test]
    fn a_request_without_the_key_is_never_in_the_share() {
        let almost_all = Share::new(99.99, ShareKey::parse("header:x-user").unwrap()).unwrap();
        assert!(!almost_all.includes(&HeaderMap::new(), LOOPBACK));
        assert!(!almost_all.includes(&with_header("x-user", "  "), LOOPBACK));
        let by_cookie = Share::new(99.99, ShareKey::parse("cookie:sid").unwrap()).unwrap();
        assert!(!by_cookie.includes(&with_header("cookie", "other=1; sid="), LOOPBACK));
        assert!(!by_cookie.includes(&with_header("cookie", "xsid=abc"), LOOPBACK));
    }

    #[test]
    fn cookies_are_found_among_others_and_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; theme=dark"));
        headers.append(COOKIE, HeaderValue::from_static("sid = abc ;b=2"));
        assert_eq!(cookie(&headers, "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&headers, "theme"), Some(&b"dark"[..]));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn a_share_round_trips_through_json() {
        let share = Share::new(12.5, ShareKey::parse("cookie:sid").unwrap()).unwrap();
        let json = serde_json::to_value(&share).unwrap();
        assert_eq!(json, serde_json::json!({"percent": 12.5, "key": "cookie:sid"}));
        assert_eq!(serde_json::from_value::<Share>(json).unwrap(), share);
        let wrong = serde_json::json!({"percent": 100, "key": "cookie:sid"});
        assert!(serde_json::from_value::<Share>(wrong).is_err());
    }
}
