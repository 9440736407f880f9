//! Idempotency keys: the same `Idempotency-Key` with the same request body gets
//! the first answer again; with a different body it is a conflict. The HTTP
//! edge reads the key from the `Idempotency-Key` header.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::Duration;

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::hours(24);
const MAX_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// A key that is empty, too long or not visible ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to {MAX_LEN} visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// 1 to 255 visible ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidIdempotencyKey> {
        let key = raw.trim();
        if key.is_empty() || key.len() > MAX_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey);
        }
        Ok(Self(key.to_owned()))
    }

    /// The key in the namespace of one caller (an API key id): the same key
    /// from two callers names two different requests.
    pub fn for_caller(self, caller: &str) -> Self {
        Self(format!("{caller}:{}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fingerprint of a request body that ignores key order and formatting.
pub fn fingerprint(payload: &Map<String, Value>) -> String {
    // serde_json's Map is ordered by key, so this serialization is canonical.
    let canonical = serde_json::to_string(payload).unwrap_or_default();
    format!("{:x}", Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert_eq!(
            IdempotencyKey::parse(" order-42 ").unwrap().as_str(),
            "order-42"
        );
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "   ", "has space", "ünïcode", &"k".repeat(256)] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(InvalidIdempotencyKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let a = fingerprint(&map(json!({"to": "+1", "body": "hi"})));
        let b = fingerprint(&map(serde_json::from_str(
            r#"{ "body" : "hi", "to":"+1" }"#,
        )
        .unwrap()));
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, fingerprint(&map(json!({"to": "+1", "body": "hi!"}))));
    }
}
