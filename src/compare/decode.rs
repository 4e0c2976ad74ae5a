//! Body decoding before comparison: content encodings (gzip, deflate, br,
//! zstd, stacked in any order), the charset of text, and what kind of body
//! it is (empty, JSON, text, binary).
//!
//! Decoded bodies are bounded: a body that would decode past the limit is a
//! recorded reason, never an allocation the size of a decompression bomb.
//!
//! Must never: panic on any bytes, or read more than the limit.

use std::io::Read;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;
use serde_json::Value;

/// A decoded body, ready to compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Empty,
    Json(Value),
    Text(String),
    Binary(Bytes),
}

impl Body {
    /// A short name of the body's kind, for differences between kinds.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Body::Empty => "empty body",
            Body::Json(_) => "JSON body",
            Body::Text(_) => "text body",
            Body::Binary(_) => "binary body",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content-encoding \"{0}\"")]
    UnsupportedEncoding(String),
    #[error("{encoding} body does not decode: {message}")]
    Corrupt { encoding: String, message: String },
    #[error("body decodes to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body is not valid {charset}")]
    Charset { charset: String },
}

/// Decodes a captured body by its headers, producing at most `limit` bytes.
pub fn decode(headers: &HeaderMap, body: &Bytes, limit: usize) -> Result<Body, DecodeError> {
    let bytes = decode_content(headers, body, limit)?;
    if bytes.is_empty() {
        return Ok(Body::Empty);
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let (essence, charset) = media_type(content_type);
    if is_json(&essence) {
        return parse_json_or_text(bytes, charset.as_deref());
    }
    if essence.is_empty() {
        return Ok(sniff(bytes));
    }
    if is_text(&essence) {
        return Ok(Body::Text(to_text(&bytes, charset.as_deref())?));
    }
    Ok(Body::Binary(bytes))
}

/// The media type's essence (lowercase `type/subtype`) and its charset, if any.
pub fn media_type(content_type: &str) -> (String, Option<String>) {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset = parts.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    });
    (essence, charset)
}

fn is_json(essence: &str) -> bool {
    essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
}

fn is_text(essence: &str) -> bool {
    essence.starts_with("text/")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/xml" | "application/javascript" | "application/x-www-form-urlencoded" | "application/x-ndjson"
        )
}

/// A declared JSON body that does not parse is compared as text (or binary),
/// so two sides sending the same broken JSON still match.
fn parse_json_or_text(bytes: Bytes, charset: Option<&str>) -> Result<Body, DecodeError> {
    if charset.is_none_or(|c| c == "utf-8" || c == "utf8") {
        // JSON is UTF-8 (RFC 8259): parse the bytes as they are, no copy.
        if let Ok(value) = serde_json::from_slice(&bytes) {
            return Ok(Body::Json(value));
        }
    }
    let text = to_text(&bytes, charset)?;
    match serde_json::from_str(&text) {
        Ok(value) => Ok(Body::Json(value)),
        Err(_) => Ok(Body::Text(text)),
    }
}

/// No content type: JSON if it parses as an object or array, else text if UTF-8, else binary.
fn sniff(bytes: Bytes) -> Body {
    let starts_like_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    if starts_like_json {
        if let Ok(value) = serde_json::from_slice(&bytes) {
            return Body::Json(value);
        }
    }
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(_) => Body::Binary(bytes),
    }
}

fn to_text(bytes: &[u8], charset: Option<&str>) -> Result<String, DecodeError> {
    let label = charset.unwrap_or("utf-8");
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes()).unwrap_or(encoding_rs::UTF_8);
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    if had_errors {
        return Err(DecodeError::Charset {
            charset: encoding.name().to_string(),
        });
    }
    Ok(text.into_owned())
}

/// Undoes the content codings, last applied first.
fn decode_content(headers: &HeaderMap, body: &Bytes, limit: usize) -> Result<Bytes, DecodeError> {
    let codings: Vec<String> = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty() && coding != "identity")
        .collect();
    let mut bytes = body.clone();
    for coding in codings.iter().rev() {
        if bytes.is_empty() {
            break;
        }
        bytes = match coding.as_str() {
            "gzip" | "x-gzip" => read_bounded(flate2::read::MultiGzDecoder::new(&bytes[..]), coding, limit)?,
            "deflate" => {
                // RFC 9110 says zlib-wrapped; some servers send raw deflate.
                read_bounded(flate2::read::ZlibDecoder::new(&bytes[..]), coding, limit)
                    .or_else(|_| read_bounded(flate2::read::DeflateDecoder::new(&bytes[..]), coding, limit))?
            }
            "br" => read_bounded(brotli_decompressor::Decompressor::new(&bytes[..], 4096), coding, limit)?,
            "zstd" => {
                let decoder =
                    ruzstd::decoding::StreamingDecoder::new(&bytes[..]).map_err(|err| DecodeError::Corrupt {
                        encoding: coding.clone(),
                        message: err.to_string(),
                    })?;
                read_bounded(decoder, coding, limit)?
            }
            other => return Err(DecodeError::UnsupportedEncoding(other.to_string())),
        };
    }
    Ok(bytes)
}

fn read_bounded(reader: impl Read, encoding: &str, limit: usize) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|err| DecodeError::Corrupt {
            encoding: encoding.to_string(),
            message: err.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    fn zlib(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn json_is_parsed_through_stacked_encodings() {
        let body = gzip(&zlib(br#"{"a":1}"#));
        let h = headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "deflate, gzip"),
        ]);
        assert_eq!(
            decode(&h, &body, 1000).unwrap(),
            Body::Json(serde_json::json!({"a": 1}))
        );
    }

    #[test]
    fn brotli_and_zstd_decode() {
        let h = headers(&[("content-type", "text/plain"), ("content-encoding", "br")]);
        let br = Bytes::from(uncompressed_brotli(b"hello hello hello"));
        assert_eq!(decode(&h, &br, 100).unwrap(), Body::Text("hello hello hello".into()));
        let zstd =
            ruzstd::encoding::compress_to_vec(&b"hello hello hello"[..], ruzstd::encoding::CompressionLevel::Fastest);
        let h = headers(&[("content-type", "text/plain"), ("content-encoding", "zstd")]);
        assert_eq!(
            decode(&h, &Bytes::from(zstd), 100).unwrap(),
            Body::Text("hello hello hello".into())
        );
    }

    /// A valid brotli stream holding `data` as one uncompressed metablock.
    fn uncompressed_brotli(data: &[u8]) -> Vec<u8> {
        assert!(!data.is_empty() && data.len() <= 65536);
        let mut bits: Vec<bool> = Vec::new();
        let push = |value: u32, count: u32, bits: &mut Vec<bool>| {
            for i in 0..count {
                bits.push((value >> i) & 1 == 1);
            }
        };
        push(0, 1, &mut bits); // WBITS = 16
        push(0, 1, &mut bits); // ISLAST = 0
        push(0, 2, &mut bits); // MNIBBLES = 4
        push((data.len() - 1) as u32, 16, &mut bits); // MLEN - 1
        push(1, 1, &mut bits); // ISUNCOMPRESSED
        while bits.len() % 8 != 0 {
            bits.push(false);
        }
        let mut out: Vec<u8> = bits
            .chunks(8)
            .map(|chunk| {
                chunk
                    .iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
            })
            .collect();
        out.extend_from_slice(data);
        out.push(0b0000_0011); // ISLAST = 1, ISLASTEMPTY = 1
        out
    }

    #[test]
    fn a_decompression_bomb_is_stopped_at_the_limit() {
        let body = gzip(&vec![b'a'; 1_000_000]);
        let h = headers(&[("content-encoding", "gzip")]);
        assert_eq!(
            decode(&h, &body, 64 * 1024).unwrap_err(),
            DecodeError::TooLarge { limit: 64 * 1024 }
        );
    }

    #[test]
    fn broken_or_unknown_encodings_are_reasons_not_panics() {
        let h = headers(&[("content-encoding", "gzip")]);
        assert!(matches!(
            decode(&h, &Bytes::from_static(b"not gzip"), 100),
            Err(DecodeError::Corrupt { .. })
        ));
        let h = headers(&[("content-encoding", "compress")]);
        assert_eq!(
            decode(&h, &Bytes::from_static(b"x"), 100).unwrap_err(),
            DecodeError::UnsupportedEncoding("compress".into())
        );
    }

    #[test]
    fn kinds_follow_the_content_type_and_sniffing() {
        let json = headers(&[("content-type", "application/problem+json; charset=UTF-8")]);
        assert!(matches!(
            decode(&json, &Bytes::from_static(b"[1]"), 100).unwrap(),
            Body::Json(_)
        ));
        assert_eq!(
            decode(&json, &Bytes::from_static(b"{broken"), 100).unwrap(),
            Body::Text("{broken".into())
        );
        assert_eq!(decode(&json, &Bytes::new(), 100).unwrap(), Body::Empty);
        let none = HeaderMap::new();
        assert!(matches!(
            decode(&none, &Bytes::from_static(b" {\"a\":1}"), 100).unwrap(),
            Body::Json(_)
        ));
        assert_eq!(
            decode(&none, &Bytes::from_static(b"plain"), 100).unwrap(),
            Body::Text("plain".into())
        );
        assert!(matches!(
            decode(&none, &Bytes::from_static(&[0xff, 0x00]), 100).unwrap(),
            Body::Binary(_)
        ));
        let png = headers(&[("content-type", "image/png")]);
        assert!(matches!(
            decode(&png, &Bytes::from_static(b"abc"), 100).unwrap(),
            Body::Binary(_)
        ));
    }

    #[test]
    fn text_is_decoded_from_its_charset() {
        let latin1 = headers(&[("content-type", "text/plain; charset=ISO-8859-1")]);
        assert_eq!(
            decode(&latin1, &Bytes::from_static(&[0x63, 0x61, 0x66, 0xe9]), 100).unwrap(),
            Body::Text("café".into())
        );
        let utf8 = headers(&[("content-type", "text/plain; charset=utf-8")]);
        assert_eq!(
            decode(&utf8, &Bytes::from_static(&[0x63, 0xe9]), 100).unwrap_err(),
            DecodeError::Charset {
                charset: "UTF-8".into()
            }
        );
    }

    #[test]
    fn media_types_are_read_case_insensitively() {
        assert_eq!(
            media_type("Application/JSON; Charset=\"UTF-8\""),
            ("application/json".to_string(), Some("utf-8".to_string()))
        );
    }
}
