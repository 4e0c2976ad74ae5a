//! W3C Trace Context (`traceparent`): the trace id a client's request
//! belongs to, and a child of its span for each request cutover sends on,
//! so each side's spans hang off the client's and a divergence can be found
//! in the backends' traces. `tracestate` passes through as the client sent it.
//!
//! Must never: change a `traceparent` it cannot parse (it goes on as sent),
//! invent a trace for a request that had none, or keep the client's flags
//! from reaching either side.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The W3C Trace Context header that carries the trace and parent span.
pub const TRACEPARENT: &str = "traceparent";
/// [`TRACEPARENT`] parsed once, for the lookup every request makes.
static TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);

/// A parsed `traceparent`: `version-traceid-parentid-flags`, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    version: u8,
    trace_id: [u8; 16],
    flags: u8,
    /// What a future version put after the flags (from `-` on), kept as sent.
    rest: String,
}

impl TraceParent {
    /// Parses a `traceparent` value as the W3C spec reads one: version 00
    /// exactly 55 characters; a later version at least that, with anything
    /// after the flags starting with `-`; version ff, all-zero ids and
    /// uppercase hex are invalid.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let text = std::str::from_utf8(value).ok()?;
        if text.len() < 55 || !text.is_char_boundary(55) {
            return None;
        }
        let (head, rest) = text.split_at(55);
        let mut fields = head.split('-');
        let version = hex_byte(fields.next()?)?;
        let trace_id: [u8; 16] = hex_bytes(fields.next()?)?;
        let parent_id: [u8; 8] = hex_bytes(fields.next()?)?;
        let flags = hex_byte(fields.next()?)?;
        let well_formed_rest = if version == 0 {
            rest.is_empty()
        } else {
            rest.is_empty() || rest.starts_with('-')
        };
        if version == 0xff || !well_formed_rest || trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            version,
            trace_id,
            flags,
            rest: rest.to_string(),
        })
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The same trace, with `span_id` as the parent: the value a request
    /// cutover sends carries, so the receiver's span is cutover's child.
    /// `None` only if what a later version put after the flags cannot go
    /// back into a header, which a value read from a header can always do.
    pub fn child(&self, span_id: [u8; 8]) -> Option<HeaderValue> {
        let value = format!(
            "{:02x}-{}-{}-{:02x}{}",
            self.version,
            hex(&self.trace_id),
            hex(&span_id),
            self.flags,
            self.rest
        );
        HeaderValue::from_str(&value).ok()
    }
}

/// The trace id of a request, when it carries exactly one valid `traceparent`.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    single(headers).map(|parent| parent.trace_id())
}

/// Replaces the request's `traceparent` with a child span of its own (a
/// fresh random span id); a missing, repeated or invalid one is left as it is.
pub fn give_child_span(headers: &mut HeaderMap) {
    let Some(parent) = single(headers) else {
        return;
    };
    let mut span_id = [0u8; 8];
    while span_id == [0; 8] {
        span_id = rand::random();
    }
    if let Some(child) = parent.child(span_id) {
        headers.insert(TRACEPARENT_NAME.clone(), child);
    }
}

fn single(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&TRACEPARENT_NAME).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(value.as_bytes())
}

fn hex_byte(text: &str) -> Option<u8> {
    let [byte] = hex_bytes::<1>(text)?;
    Some(byte)
}

/// Exactly `N` bytes as `2N` lowercase hex digits.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gets_a_child_of_the_same_trace_and_flags() {
        let parent = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = parent.child([1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(child, "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01");
    }

    #[test]
    fn a_later_version_keeps_what_follows_the_flags() {
        let value = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes-next";
        let parent = TraceParent::parse(value.as_bytes()).unwrap();
        assert_eq!(
            parent.child([0xab; 8]).unwrap(),
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-09-what-comes-next"
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        let invalid = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ];
        for value in invalid {
            assert_eq!(TraceParent::parse(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn each_request_gets_its_own_span_and_bad_or_repeated_ones_pass_unchanged() {
        let mut first = HeaderMap::new();
        first.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        let mut second = first.clone();
        give_child_span(&mut first);
        give_child_span(&mut second);
        let (first, second) = (&first[TRACEPARENT], &second[TRACEPARENT]);
        assert_ne!(first, VALID);
        assert_ne!(first, second, "each side its own span id");
        let mut sent = HeaderMap::new();
        sent.insert(TRACEPARENT, first.clone());
        assert_eq!(trace_id(&sent).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let mut twice = HeaderMap::new();
        twice.append(TRACEPARENT, HeaderValue::from_static(VALID));
        twice.append(TRACEPARENT, HeaderValue::from_static(VALID));
        let before = twice.clone();
        give_child_span(&mut twice);
        assert_eq!(twice, before);
        assert_eq!(trace_id(&twice), None);
        let mut bad = HeaderMap::new();
        bad.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        give_child_span(&mut bad);
        assert_eq!(bad[TRACEPARENT], "garbage");
    }
}
