//! Who may call: API keys checked against the store, with a short per-process
//! cache so that most requests cost no read. A revoked key is refused once the
//! cache entry that holds it expires (`API_KEY_CACHE_SECONDS`, default 30).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tracing::warn;

use crate::domain::Scope;
use crate::domain::access::{AccessError, ApiKey, authorize, bearer_key, key_hash};
use crate::ports::{ApiKeyStore, StoreError};

/// `last_used_at` is written at most this often per key and process.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Entries kept at most; the cache starts over beyond it.
const CACHE_LIMIT: usize = 1024;

/// The caller a request was authenticated as: safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Refused(#[from] AccessError),
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

struct Cached {
    hash: String,
    key: ApiKey,
    read_at: Instant,
    touched_at: Option<Instant>,
}

pub struct Authenticator<K> {
    store: K,
    ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl<K: ApiKeyStore> Authenticator<K> {
    pub fn new(store: K, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `Authorization: Bearer <key>` for a route needing `scope`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<Caller, AuthError> {
        let hash = key_hash(bearer_key(authorization)?);
        let key = match self.cached(&hash) {
            Some(key) => Some(key),
            None => self.read(&hash).await?,
        };
        let key = authorize(key.as_ref(), scope)?;
        self.touch(&hash, key).await;
        Ok(Caller {
            key_id: key.key_id.clone(),
        })
    }

    fn cached(&self, hash: &str) -> Option<ApiKey> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(hash)
            .filter(|entry| entry.read_at.elapsed() < self.ttl)
            // The map found the entry by hash; the stored hash is compared
            // again in constant time before the entry is trusted.
            .filter(|entry| bool::from(entry.hash.as_bytes().ct_eq(hash.as_bytes())))
            .map(|entry| entry.key.clone())
    }

    async fn read(&self, hash: &str) -> Result<Option<ApiKey>, AuthError> {
        let Some(key) = self.store.api_key(hash).await? else {
            return Ok(None);
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        let touched_at = cache.get(hash).and_then(|entry| entry.touched_at);
        cache.insert(
            hash.to_owned(),
            Cached {
                hash: hash.to_owned(),
                key: key.clone(),
                read_at: Instant::now(),
                touched_at,
            },
        );
        Ok(Some(key))
    }

    /// Updates `last_used_at`, at most once a minute per key and process; a
    /// failure only logs (the request is authenticated either way).
    async fn touch(&self, hash: &str, key: &ApiKey) {
        let due = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get_mut(hash) {
                Some(entry) if entry.touched_at.is_some_and(|t| t.elapsed() < TOUCH_EVERY) => false,
                Some(entry) => {
                    entry.touched_at = Some(Instant::now());
                    true
                }
                None => false,
            }
        };
        if due
            && let Err(e) = self
                .store
                .touch_api_key(hash, OffsetDateTime::now_utc())
                .await
        {
            warn!(key_id = %key.key_id, error = %e, "could not record the API key's last use");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// One key in memory, counting reads and touches.
    struct OneKey {
        hash: String,
        key: Mutex<ApiKey>,
        reads: AtomicUsize,
        touches: AtomicUsize,
    }

    impl ApiKeyStore for OneKey {
        async fn api_key(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok((hash == self.hash).then(|| self.key.lock().unwrap().clone()))
        }

        async fn touch_api_key(&self, _hash: &str, _now: OffsetDateTime) -> Result<(), StoreError> {
            self.touches.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    const KEY: &str = "msk_0123456789ab_secret-secret-secret-secret";

    fn authenticator(ttl: Duration) -> Authenticator<OneKey> {
        Authenticator::new(
            OneKey {
                hash: key_hash(KEY),
                key: Mutex::new(ApiKey {
                    key_id: "msk_0123456789ab".into(),
                    name: "test".into(),
                    scopes: vec![Scope::MessagesSend],
                    created_at: OffsetDateTime::UNIX_EPOCH,
                    last_used_at: None,
                    revoked_at: None,
                }),
                reads: AtomicUsize::new(0),
                touches: AtomicUsize::new(0),
            },
            ttl,
        )
    }

    fn bearer(key: &str) -> String {
        format!("Bearer {key}")
    }

    #[tokio::test]
    async fn a_cached_key_costs_one_read_and_one_touch() {
        let auth = authenticator(Duration::from_secs(30));
        for _ in 0..5 {
            let caller = auth
                .authenticate(Some(&bearer(KEY)), Scope::MessagesSend)
                .await
                .unwrap();
            assert_eq!(caller.key_id, "msk_0123456789ab");
        }
        assert_eq!(auth.store.reads.load(Ordering::SeqCst), 1);
        assert_eq!(auth.store.touches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_revoked_key_is_refused_once_its_cache_entry_expires() {
        let auth = authenticator(Duration::from_millis(50));
        auth.authenticate(Some(&bearer(KEY)), Scope::MessagesSend)
            .await
            .unwrap();
        auth.store.key.lock().unwrap().revoked_at = Some(OffsetDateTime::now_utc());
        tokio::time::sleep(Duration::from_millis(60)).await;
        let refused = auth
            .authenticate(Some(&bearer(KEY)), Scope::MessagesSend)
            .await
            .unwrap_err();
        assert!(matches!(refused, AuthError::Refused(AccessError::Revoked)));
    }

    #[tokio::test]
    async fn unknown_keys_and_missing_scopes_are_refused() {
        let auth = authenticator(Duration::from_secs(30));
        let unknown = auth
            .authenticate(Some(&bearer("msk_ffffffffffff_other")), Scope::MessagesSend)
            .await
            .unwrap_err();
        assert!(matches!(unknown, AuthError::Refused(AccessError::Unknown)));
        let scope = auth
            .authenticate(Some(&bearer(KEY)), Scope::MessagesRead)
            .await
            .unwrap_err();
        assert!(matches!(
            scope,
            AuthError::Refused(AccessError::MissingScope(Scope::MessagesRead))
        ));
        let missing = auth
            .authenticate(None, Scope::MessagesSend)
            .await
            .unwrap_err();
        assert!(matches!(missing, AuthError::Refused(AccessError::Missing)));
    }
}
