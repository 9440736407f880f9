//! Opaque, tamper-evident pagination cursors.
//!
//! A cursor is `base64url(payload) "." base64url(mac)`, where the payload is the
//! JSON of the query it belongs to (its *scope*, e.g. one conversation) and the
//! position after the last item served, and the mac is HMAC-SHA256 over the
//! encoded payload with the service's cursor key (truncated to 128 bits). Any
//! change to a cursor, or using it with another query, is rejected; the query's
//! own key never comes from the cursor, so a cursor can only ever continue the
//! query it was issued for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ports::Position;

const MAC_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this service issued for this query")]
pub struct InvalidCursor;

#[derive(Serialize, Deserialize)]
struct Payload {
    /// The query's scope.
    q: String,
    /// Sort key of the last item served.
    k: String,
    /// Id of the last item served.
    i: String,
}

#[derive(Clone)]
pub struct CursorCodec {
    key: Vec<u8>,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorCodec").finish_non_exhaustive()
    }
}

impl CursorCodec {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    pub fn encode(&self, scope: &str, position: &Position) -> String {
        let payload = serde_json::to_vec(&Payload {
            q: scope.to_owned(),
            k: position.sort.clone(),
            i: position.id.clone(),
        })
        .unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES]))
    }

    /// The position a cursor holds, if this codec issued it for `scope`.
    pub fn decode(&self, scope: &str, cursor: &str) -> Result<Position, InvalidCursor> {
        let (payload, tag) = cursor.split_once('.').ok_or(InvalidCursor)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| InvalidCursor)?;
        if tag.len() != MAC_BYTES {
            return Err(InvalidCursor);
        }
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_truncated_left(&tag).map_err(|_| InvalidCursor)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| InvalidCursor)?;
        let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| InvalidCursor)?;
        if payload.q != scope {
            return Err(InvalidCursor);
        }
        Ok(Position {
            sort: payload.k,
            id: payload.i,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> Position {
        Position {
            sort: "2024-11-01T12:00:00.000000000Z#0193a1b2-0000-7000-8000-000000000000".into(),
            id: "0193a1b2-0000-7000-8000-000000000000".into(),
        }
    }

    #[test]
    fn round_trips_within_its_scope() {
        let codec = CursorCodec::new(b"key");
        let cursor = codec.encode("conversation:abc", &position());
        assert!(!cursor.contains('='), "{cursor}");
        assert_eq!(codec.decode("conversation:abc", &cursor), Ok(position()));
    }

    #[test]
    fn rejects_other_scopes_keys_and_any_change() {
        let codec = CursorCodec::new(b"key");
        let cursor = codec.encode("conversation:abc", &position());
        assert_eq!(
            codec.decode("conversation:abd", &cursor),
            Err(InvalidCursor)
        );
        assert_eq!(
            CursorCodec::new(b"other").decode("conversation:abc", &cursor),
            Err(InvalidCursor)
        );
        // Flip each character in turn: every variant is refused.
        for (i, c) in cursor.char_indices() {
            let flipped = if c == 'A' { 'B' } else { 'A' };
            let mut forged = cursor.clone();
            forged.replace_range(i..i + c.len_utf8(), &flipped.to_string());
            assert_eq!(
                codec.decode("conversation:abc", &forged),
                Err(InvalidCursor),
                "{forged}"
            );
        }
        for garbage in ["", ".", "abc", "a.b", "%%%.%%%", &format!("{cursor}x")] {
            assert_eq!(
                codec.decode("conversation:abc", garbage),
                Err(InvalidCursor)
            );
        }
    }

    #[test]
    fn a_forged_payload_with_its_own_mac_needs_the_key() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"q":"conversation:abc","k":"x","i":"y"}"#);
        let forged = format!("{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; MAC_BYTES]));
        assert_eq!(
            CursorCodec::new(b"key").decode("conversation:abc", &forged),
            Err(InvalidCursor)
        );
    }
}
