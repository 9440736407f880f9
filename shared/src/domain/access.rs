//! API access: API keys, the scopes they hold, and who may send.

use std::fmt;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::validation::{is_e164, is_email};

/// What an API key allows. A key holds any subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /messages/outbound`.
    MessagesSend,
    /// `POST /messages/inbound`.
    MessagesInbound,
    /// `GET /messages/{id}`, the conversation routes, reading suppressions.
    MessagesRead,
    /// Adding and lifting suppressions.
    SuppressionsWrite,
}

impl Scope {
    pub const ALL: [Self; 4] = [
        Self::MessagesSend,
        Self::MessagesInbound,
        Self::MessagesRead,
        Self::SuppressionsWrite,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MessagesSend => "messages:send",
            Self::MessagesInbound => "messages:inbound",
            Self::MessagesRead => "messages:read",
            Self::SuppressionsWrite => "suppressions:write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
    }

    /// A comma-separated list (`messages:send,messages:read`); `*` or `all` is
    /// every scope. Unknown names are an error naming them.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let s = s.trim();
        if s == "*" || s == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut scopes = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let scope = Self::parse(name).ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {name:?}; known: {}", known.join(", "))
            })?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        if scopes.is_empty() {
            return Err("at least one scope is required".to_owned());
        }
        scopes.sort();
        Ok(scopes)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_parse_and_refuse_unknown_names() {
        assert_eq!(
            Scope::parse_list(" messages:read , messages:send,messages:read").unwrap(),
            vec![Scope::MessagesSend, Scope::MessagesRead]
        );
        assert_eq!(Scope::parse_list("all").unwrap(), Scope::ALL.to_vec());
        assert!(
            Scope::parse_list("messages:write")
                .unwrap_err()
                .contains("messages:write")
        );
        assert!(Scope::parse_list(" , ").is_err());
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
    }
}

/// The visible start of every key this service issues.
pub const KEY_PREFIX: &str = "msk_";

/// An API key as stored: never the key itself, only its hash (the item's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Safe to log and show: `msk_` and 12 hex digits.
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

impl ApiKey {
    /// The record of a new key: its id derived from the key, never used, not revoked.
    pub fn new(key: &str, name: &str, scopes: &[Scope], now: OffsetDateTime) -> Self {
        Self {
            key_id: key_id(key),
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        }
    }
}

/// A presented key's hash: SHA-256 of the whole key, hex. Keys carry 256
/// random bits, so a plain hash is enough (nothing to brute-force).
pub fn key_hash(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// The key id of a key: the `msk_<12 hex>` a generated key starts with; for
/// a key registered as given (a team's shared development key), `msk_` and the
/// first 12 hex digits of its hash.
pub fn key_id(key: &str) -> String {
    if let Some(rest) = key.strip_prefix(KEY_PREFIX)
        && let Some((id, _)) = rest.split_once('_')
        && id.len() == 12
        && id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return format!("{KEY_PREFIX}{id}");
    }
    format!("{KEY_PREFIX}{}", &key_hash(key)[..12])
}

/// A new random key: `msk_<12 hex id>_<43 base64url characters>` (256
/// random bits of secret).
pub fn generate_key() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    format!("{KEY_PREFIX}{id}_{secret}")
}

/// A key given from outside (`MESSAGING_API_KEY`): 20 to 200 visible ASCII
/// characters, registered as given.
pub fn check_given_key(key: &str) -> Result<(), String> {
    if (20..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("an API key must be 20 to 200 visible ASCII characters".to_owned())
    }
}

/// Why a request's key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("an API key is required: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the Authorization header must be `Bearer <key>`")]
    Malformed,
    #[error("the API key is not valid")]
    Unknown,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key lacks the {0} scope this route requires")]
    MissingScope(Scope),
}

/// The key a request presents in `Authorization: Bearer <key>`.
pub fn bearer_key(authorization: Option<&str>) -> Result<&str, AccessError> {
    let value = authorization.ok_or(AccessError::Missing)?.trim();
    let (scheme, key) = value.split_once(' ').ok_or(AccessError::Malformed)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || key.is_empty()
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(AccessError::Malformed);
    }
    Ok(key)
}

/// Whether a stored key (if any) lets its holder use a route needing `scope`.
pub fn authorize(key: Option<&ApiKey>, scope: Scope) -> Result<&ApiKey, AccessError> {
    let key = key.ok_or(AccessError::Unknown)?;
    if key.revoked_at.is_some() {
        return Err(AccessError::Revoked);
    }
    if !key.scopes.contains(&scope) {
        return Err(AccessError::MissingScope(scope));
    }
    Ok(key)
}

/// Who may send: `ALLOWED_SENDERS` entries, each an E.164 number, an email
/// address or `@domain`. Empty allows every sender.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Senders(Vec<String>);

impl Senders {
    /// A comma-separated list; entries are normalized as conversation
    /// participants are (emails and domains lower-cased).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let entry = entry.to_ascii_lowercase();
            let valid = if let Some(domain) = entry.strip_prefix('@') {
                is_email(&format!("postmaster@{domain}"))
            } else {
                is_e164(&entry) || is_email(&entry)
            };
            if !valid {
                return Err(format!(
                    "{entry:?} is not an E.164 number, an email address or @domain"
                ));
            }
            entries.push(entry);
        }
        Ok(Self(entries))
    }

    /// No list: any sender.
    pub fn allows_any(&self) -> bool {
        self.0.is_empty()
    }

    pub fn allows(&self, from: &str) -> bool {
        if self.allows_any() {
            return true;
        }
        let from = from.trim().to_ascii_lowercase();
        self.0.iter().any(|entry| match entry.strip_prefix('@') {
            Some(domain) => from
                .rsplit_once('@')
                .is_some_and(|(_, from_domain)| from_domain == domain),
            None => *entry == from,
        })
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    fn key(scopes: &[Scope], revoked: bool) -> ApiKey {
        ApiKey {
            key_id: "msk_0123456789ab".into(),
            name: "test".into(),
            scopes: scopes.to_vec(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            last_used_at: None,
            revoked_at: revoked.then_some(OffsetDateTime::UNIX_EPOCH),
        }
    }

    #[test]
    fn generated_keys_are_random_and_carry_their_id() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(
            a.starts_with(KEY_PREFIX) && a.len() == 4 + 12 + 1 + 43,
            "{a}"
        );
        assert_eq!(key_id(&a), a[..16]);
        assert!(check_given_key(&a).is_ok());
        assert_eq!(key_hash(&a).len(), 64);
        assert_ne!(key_hash(&a), key_hash(&b));
    }

    #[test]
    fn given_keys_get_an_id_from_their_hash() {
        let given = "team-shared-development-key";
        assert!(check_given_key(given).is_ok());
        assert_eq!(key_id(given), format!("msk_{}", &key_hash(given)[..12]));
        assert!(!key_id(given).contains("team"));
        for bad in ["short", "has a space in the middle of it", &"k".repeat(201)] {
            assert!(check_given_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_keys_are_read_from_the_authorization_header() {
        assert_eq!(bearer_key(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_key(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_key(None), Err(AccessError::Missing));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc", "Bearer a b"] {
            assert_eq!(bearer_key(Some(bad)), Err(AccessError::Malformed), "{bad}");
        }
    }

    #[test]
    fn only_live_keys_with_the_scope_pass() {
        let send = key(&[Scope::MessagesSend], false);
        assert!(authorize(Some(&send), Scope::MessagesSend).is_ok());
        assert_eq!(
            authorize(Some(&send), Scope::MessagesRead),
            Err(AccessError::MissingScope(Scope::MessagesRead))
        );
        assert_eq!(
            authorize(Some(&key(&Scope::ALL, true)), Scope::MessagesSend),
            Err(AccessError::Revoked)
        );
        assert_eq!(
            authorize(None, Scope::MessagesSend),
            Err(AccessError::Unknown)
        );
    }

    #[test]
    fn senders_cover_numbers_addresses_and_domains() {
        let senders = Senders::parse("+18045551234, Ops@Example.com ,@usehatchapp.com").unwrap();
        assert!(senders.allows("+18045551234"));
        assert!(senders.allows("ops@example.com"));
        assert!(senders.allows("anyone@UseHatchApp.com"));
        assert!(!senders.allows("+18045559999"));
        assert!(!senders.allows("ops@example.org"));
        assert!(!senders.allows("x@evil-usehatchapp.com"));
        assert!(!senders.allows("usehatchapp.com@evil.com"));
        assert!(Senders::parse("").unwrap().allows("+1999"));
        assert!(Senders::parse("not-a-sender").is_err());
    }
}
