//! The path a route is matched on: the request's path in its one canonical
//! spelling, so that `/q/charge/`, `//q/charge`, `/q/./charge`,
//! `/q/%63harge` and `/q/x/../charge` all fall in the route `/q/charge` does
//! (RFC 3986 §6.2.2: percent-encoding of unreserved characters, then dot
//! segments), with empty segments collapsed and, where configured, ASCII
//! case folded.
//!
//! Must never: change what is sent upstream (upstreams get the path as the
//! client sent it), or decode an escape whose meaning depends on whether it
//! is escaped (`%2F`, `%3F`, `%25` stay as they are).

use std::borrow::Cow;

/// The path as routes see it. Borrowed when it is already canonical, which
/// is what nearly every request sends.
pub fn route_path(path: &str, fold_case: bool) -> Cow<'_, str> {
    if is_canonical(path, fold_case) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut canonical = String::with_capacity(decoded.len());
    for segment in segments {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if canonical.is_empty() {
        canonical.push('/');
    }
    if fold_case {
        canonical.make_ascii_lowercase();
    }
    Cow::Owned(canonical)
}

/// No escape, no empty or dot segment, no trailing slash, no upper case to fold.
fn is_canonical(path: &str, fold_case: bool) -> bool {
    if path == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let foldable = fold_case && path.bytes().any(|byte| byte.is_ascii_uppercase());
    !path.contains('%') && !foldable && rest.split('/').all(|segment| !matches!(segment, "" | "." | ".."))
}

/// Decodes `%XX` where XX spells an unreserved character (ALPHA, DIGIT,
/// `-`, `.`, `_`, `~`); every other escape stays, with its hex digits in
/// upper case so that `%2f` and `%2F` are one spelling.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[index + 1]), hex(bytes[index + 2])) {
                let decoded = high << 4 | low;
                if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(decoded));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[index + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[index + 2].to_ascii_uppercase()));
                }
                index += 3;
                continue;
            }
        }
        // Paths reaching here are ASCII (the proxy refuses raw non-ASCII
        // targets); a stray byte of a multi-byte character is copied whole.
        let width = path[index..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[index..index + width]);
        index += width;
    }
    out
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_one_path_routes_as_that_path() {
        for variant in [
            "/q/charge",
            "/q/charge/",
            "//q/charge",
            "/q/./charge",
            "/q/%63harge",
            "/q/%63%68arge",
            "/q/x/../charge",
            "/q//charge//",
            "/q/%2e/charge",
            "/q/x/%2E%2E/charge",
        ] {
            assert_eq!(route_path(variant, false), "/q/charge", "{variant}");
        }
        assert_eq!(route_path("/Q/charge", false), "/Q/charge");
        assert_eq!(route_path("/Q/Charge", true), "/q/charge");
    }

    #[test]
    fn escapes_that_mean_something_escaped_stay_escaped() {
        assert_eq!(route_path("/a%2fb", false), "/a%2Fb");
        assert_eq!(route_path("/a%3Fb", false), "/a%3Fb");
        assert_eq!(route_path("/a%25b", false), "/a%25b");
        assert_eq!(route_path("/caf%C3%A9", false), "/caf%C3%A9");
        // Broken escapes are not escapes.
        assert_eq!(route_path("/a%", false), "/a%");
        assert_eq!(route_path("/a%6", false), "/a%6");
        assert_eq!(route_path("/a%zz", false), "/a%zz");
    }

    #[test]
    fn dot_segments_never_climb_above_the_root() {
        assert_eq!(route_path("/../../etc", false), "/etc");
        assert_eq!(route_path("/..", false), "/");
        assert_eq!(route_path("//", false), "/");
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        assert!(matches!(route_path("/api/task/abc", false), Cow::Borrowed(_)));
        assert!(matches!(route_path("/", false), Cow::Borrowed(_)));
        assert!(matches!(route_path("/api/Task", true), Cow::Owned(_)));
    }
}
