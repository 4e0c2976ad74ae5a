//! Translation: what a route rewrites before its request goes to a side
//! (path parameters, query parameters, JSON body fields), through the map.
//!
//! Must never: guess: an ID with no pair is forwarded unchanged and reported.

use std::borrow::Cow;

use serde_json::Value;

use crate::compare::pointer::{for_each_match_mut, PatternSet};

use super::learn::id_text;
use super::{IdMap, Side};

/// What a route translates before its request goes to the shadow.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// Path segments (by index) holding an ID of a kind (`{param:kind}`).
    pub path: Vec<(usize, String)>,
    /// Query parameters holding an ID of a kind.
    pub query: Vec<(String, String)>,
    /// JSON body fields holding an ID of a kind.
    pub body: PatternSet<String>,
}

/// A request as the shadow gets it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Translated {
    pub path_and_query: Option<String>,
    /// The rewritten JSON body, when a body ID changed.
    pub body: Option<Vec<u8>>,
    /// IDs with no pair (forwarded unchanged): (kind, primary ID).
    pub unmapped: Vec<(String, String)>,
}

impl Translation {
    pub fn is_empty(&self) -> bool {
        self.path.is_empty() && self.query.is_empty() && self.body.is_empty()
    }

    /// Rewrites primary IDs into shadow IDs (see [`Translation::to_side`]).
    pub fn apply(&self, ids: &IdMap, path_and_query: &str, body: &[u8]) -> Translated {
        self.to_side(ids, Side::Shadow, path_and_query, body)
    }

    /// Rewrites the request's IDs into the space of `side`: the other
    /// side's IDs are translated, this side's own are kept (clients that
    /// saw both sides serve hold both kinds). Only what changed is returned;
    /// everything else (other query parameters, their encoding) is left as
    /// it was. IDs the map knows on neither side are reported as unmapped.
    pub fn to_side(&self, ids: &IdMap, side: Side, path_and_query: &str, body: &[u8]) -> Translated {
        let mut out = Translated::default();
        if self.is_empty() {
            return out;
        }
        let mut translate = |kind: &str, id: &str| -> Option<String> {
            match ids.to_side(side, kind, id) {
                Ok(mapped) => mapped,
                Err(()) => {
                    let unmapped = (kind.to_string(), id.to_string());
                    if !out.unmapped.contains(&unmapped) {
                        out.unmapped.push(unmapped);
                    }
                    None
                }
            }
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut changed = false;
        let mut segments: Vec<Cow<'_, str>> = path.split('/').map(Cow::Borrowed).collect();
        for (index, kind) in &self.path {
            // Segment 0 is the empty text before the leading '/'.
            if let Some(segment) = segments.get_mut(index + 1) {
                let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
                if let Some(mapped) = translate(kind, &decoded) {
                    *segment = Cow::Owned(encode_segment(&mapped));
                    changed = true;
                }
            }
        }
        let mut pieces: Vec<Cow<'_, str>> = query
            .map(|q| q.split('&').map(Cow::Borrowed).collect())
            .unwrap_or_default();
        for piece in pieces.iter_mut() {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode_form(name);
            let Some((_, kind)) = self.query.iter().find(|(query_name, _)| *query_name == name) else {
                continue;
            };
            if let Some(mapped) = translate(kind, &decode_form(value)) {
                let encoded: String = form_urlencoded::byte_serialize(mapped.as_bytes()).collect();
                let raw_name = piece.split_once('=').map_or(piece.as_ref(), |(raw, _)| raw).to_string();
                *piece = Cow::Owned(format!("{raw_name}={encoded}"));
                changed = true;
            }
        }
        if changed {
            let mut rebuilt = segments.join("/");
            if query.is_some() {
                rebuilt.push('?');
                rebuilt.push_str(&pieces.join("&"));
            }
            out.path_and_query = Some(rebuilt);
        }
        if !self.body.is_empty() && !body.is_empty() {
            if let Ok(mut document) = serde_json::from_slice::<Value>(body) {
                let mut body_changed = false;
                for_each_match_mut(&self.body, &mut document, &mut |kind, value| {
                    if let Some(id) = id_text(value) {
                        if let Some(mapped) = translate(kind, &id) {
                            *value = Value::String(mapped);
                            body_changed = true;
                        }
                    }
                });
                if body_changed {
                    out.body = serde_json::to_vec(&document).ok();
                }
            }
        }
        out
    }
}

fn decode_form(text: &str) -> String {
    form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// Characters a path segment cannot hold as they are (RFC 3986 §3.3).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A value as one path segment.
pub fn encode_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}
