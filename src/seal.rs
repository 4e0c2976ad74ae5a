//! Sealing: what a replay needs but nothing may keep in clear. A drifted
//! write whose query or body carries a secret (a `password` field, a
//! `token` query value) is kept sealed with XChaCha20-Poly1305 under a key
//! from the environment (`CUTOVER_REPLAY_KEY`), so the ledger holds no
//! secret and a replay still sends the write exactly as the client did.
//!
//! Must never: keep or log the key, accept a key of the wrong length, or
//! hand back anything but the sealed bytes exactly (a tampered or foreign
//! record fails to open).

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// The environment variable that holds the replay key: 32 bytes, as 64 hex
/// digits or as base64.
pub const REPLAY_KEY_ENV: &str = "CUTOVER_REPLAY_KEY";

const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("expected 32 bytes as 64 hex digits or as base64 (e.g. from `openssl rand -hex 32`)")]
    KeyShape,
    #[error("not a sealed record (bad base64 or too short)")]
    Shape,
    #[error("does not open with this key: sealed under another key, or altered")]
    Open,
}

/// The key that seals and opens replay data.
#[derive(Clone)]
pub struct SealKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

impl SealKey {
    /// A key from its text: 64 hex digits, or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<SealKey, SealError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            (0..32)
                .map(|index| u8::from_str_radix(&text[2 * index..2 * index + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SealError::KeyShape)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| SealError::KeyShape)?
        };
        if bytes.len() != 32 {
            return Err(SealError::KeyShape);
        }
        Ok(SealKey {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// Seals `plain` under a fresh random nonce: base64 of nonce ‖ ciphertext.
    pub fn seal(&self, plain: &[u8]) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        // Encryption fails only past the cipher's length limit (256 GiB),
        // which no captured body reaches (mirror.max_body is at most 1 GiB).
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`SealKey::seal`] sealed under this key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::Shape)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Shape);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn what_is_sealed_opens_exactly_under_the_same_key_only() {
        let key = SealKey::parse(HEX).unwrap();
        let sealed = key.seal(br#"{"password":"hunter2"}"#);
        assert!(!sealed.contains("hunter2"));
        assert_eq!(key.open(&sealed).unwrap(), br#"{"password":"hunter2"}"#);
        assert_ne!(key.seal(b"same"), key.seal(b"same"), "a fresh nonce each time");
        let other = SealKey::parse(&HEX.replace("1f", "ff")).unwrap();
        assert_eq!(other.open(&sealed), Err(SealError::Open));
        let mut tampered = base64::engine::general_purpose::STANDARD.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        assert_eq!(key.open(&tampered), Err(SealError::Open));
        assert_eq!(key.open("!!"), Err(SealError::Shape));
    }

    #[test]
    fn keys_are_32_bytes_in_hex_or_base64() {
        let base64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(SealKey::parse(&base64).is_ok());
        for bad in [
            "",
            "abc",
            &HEX[..62],
            &base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
        ] {
            assert_eq!(SealKey::parse(bad).unwrap_err(), SealError::KeyShape, "{bad}");
        }
        assert_eq!(format!("{:?}", SealKey::parse(HEX).unwrap()), "SealKey([redacted])");
    }
}
