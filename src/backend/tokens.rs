//! IAM tokens: issued for a verified JWT or a listed OAuth token, checked on every call,
//! revoked on request. A token is `t1.` and two base64url parts (a 16-byte id and 64 random
//! bytes), the real tokens' shape; the store keeps its SHA-256 only, with its subject and
//! expiry (12 hours). Checks are answered from a bounded in-memory cache for up to
//! [`RECHECK`], then from the store again, so a revocation made by another replica takes
//! effect within that time (one made here, at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tonic::Status;

use super::storage;
use crate::iam::{Audience, IamConfig, jwt};
use crate::json::Timestamp;
use crate::store::{IssuedToken, Store, StoreError, now_nanos};

/// How long an IAM token lives, as the real ones.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a cached check stands before the store is asked again.
const RECHECK: Duration = Duration::from_secs(30);
/// Most tokens cached; past it the cache starts over (a flood of distinct valid tokens costs
/// store reads, never memory).
const CACHE_ENTRIES: usize = 100_000;
/// Longest token read.
const MAX_TOKEN_BYTES: usize = 1024;

/// Who calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The service account or user account id.
    pub id: String,
    /// `serviceAccount` or `userAccount`, as access bindings name subject types.
    pub kind: &'static str,
}

/// The caller of one call, put in its request's extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A valid IAM token's subject.
    Subject(Subject),
    /// No valid token (only with `--auth none`): an opaque id derived from whatever
    /// `Authorization` held, for `created_by` and idempotency scopes.
    Anonymous(String),
}

impl Caller {
    /// The id that `created_by` shows and idempotency keys are scoped by.
    pub fn id(&self) -> &str {
        match self {
            Self::Subject(s) => &s.id,
            Self::Anonymous(id) => id,
        }
    }
}

/// Why a token is not accepted.
#[derive(Debug)]
pub(crate) enum TokenError {
    /// The caller's: no token, a bad one, an expired or revoked one (UNAUTHENTICATED).
    Refused(String),
    /// Ours.
    Store(StoreError),
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Refused(why) => Status::unauthenticated(why),
            TokenError::Store(e) => e.into(),
        }
    }
}

fn refused(why: impl Into<String>) -> TokenError {
    TokenError::Refused(why.into())
}

/// The hex SHA-256 of a token: its key in the store.
fn hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the OS random source works");
    out
}

struct Cached {
    subject: Subject,
    expires_nanos: u64,
    checked: Instant,
}

/// Issues and checks tokens over the store.
pub(crate) struct Tokens {
    store: Arc<dyn Store>,
    config: Arc<IamConfig>,
    audience: Audience,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Tokens {
    pub(crate) fn new(store: Arc<dyn Store>, config: Arc<IamConfig>, audience: Audience) -> Self {
        Self {
            store,
            config,
            audience,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A new token for `subject`, stored before it is handed out.
    pub(crate) async fn issue(&self, subject: Subject) -> Result<(String, Timestamp), TokenError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "t1.{}.{}",
            b64.encode(random::<16>()),
            b64.encode(random::<64>())
        );
        let expires_nanos = (now_nanos() + TOKEN_LIFETIME.as_nanos()) as u64;
        let record = IssuedToken {
            subject_id: subject.id.clone(),
            subject_type: subject.kind.to_string(),
            expires_nanos,
            revoked: false,
        };
        let key = hash(&token);
        storage::write(&*self.store, move |tx| {
            tx.put_issued_token(&key, &record)
                .map_err(TokenError::Store)
        })
        .await?;
        let expires = Timestamp {
            seconds: (expires_nanos / 1_000_000_000) as i64,
            nanos: (expires_nanos % 1_000_000_000) as i32,
        };
        Ok((token, expires))
    }

    /// The service account a JWT speaks for, once it verifies with its stored key.
    pub(crate) fn subject_of_jwt(&self, jwt_text: &str) -> Result<Subject, TokenError> {
        let kid = jwt::key_id(jwt_text).map_err(|e| refused(e.0))?;
        let key = storage::read(&*self.store, |tx| tx.service_account_key(&kid))?
            .ok_or_else(|| refused(format!("the JWT's key {kid} is unknown or deleted")))?;
        let now = (now_nanos() / 1_000_000_000) as i64;
        let id = jwt::verify(jwt_text, &key, &self.audience, now).map_err(|e| refused(e.0))?;
        Ok(Subject {
            id,
            kind: "serviceAccount",
        })
    }

    /// The user account of an OAuth token the config lists.
    pub(crate) fn subject_of_oauth(&self, token: &str) -> Result<Subject, TokenError> {
        self.config
            .oauth_tokens
            .get(token)
            .map(|id| Subject {
                id: id.clone(),
                kind: "userAccount",
            })
            .ok_or_else(|| refused("the OAuth token is not valid here"))
    }

    /// The subject of a valid (issued, unexpired, unrevoked) token.
    pub(crate) fn check(&self, token: &str) -> Result<Subject, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(refused("the IAM token is invalid or has expired"));
        }
        let key = hash(token);
        let now = now_nanos() as u64;
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(&key)
                && c.checked.elapsed() < RECHECK
                && c.expires_nanos > now
            {
                return Ok(c.subject.clone());
            }
        }
        let record = storage::read(&*self.store, |tx| tx.issued_token(&key))?;
        let Some(record) = record.filter(|r| !r.revoked && r.expires_nanos > now) else {
            self.forget(&key);
            return Err(refused("the IAM token is invalid or has expired"));
        };
        let subject = Subject {
            id: record.subject_id,
            kind: if record.subject_type == "userAccount" {
                "userAccount"
            } else {
                "serviceAccount"
            },
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            key,
            Cached {
                subject: subject.clone(),
                expires_nanos: record.expires_nanos,
                checked: Instant::now(),
            },
        );
        Ok(subject)
    }

    fn forget(&self, key: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Revokes a token; its subject. A token that is unknown, expired or already revoked is
    /// refused as any invalid token is.
    pub(crate) async fn revoke(&self, token: &str) -> Result<Subject, TokenError> {
        let subject = self.check(token)?;
        let key = hash(token);
        let stored = key.clone();
        storage::write(&*self.store, move |tx| {
            let Some(mut record) = tx.issued_token(&stored)? else {
                return Err(refused("the IAM token is invalid or has expired"));
            };
            record.revoked = true;
            tx.put_issued_token(&stored, &record)?;
            Ok(())
        })
        .await?;
        self.forget(&key);
        Ok(subject)
    }

    /// The config the tokens and permissions come from.
    pub(crate) fn config(&self) -> &IamConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_real_shape() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "t1.{}.{}",
            b64.encode(random::<16>()),
            b64.encode(random::<64>())
        );
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts[0], "t1");
        assert_eq!(parts[2].len(), 86);
        assert_ne!(hash(&token), hash("t1.other"));
        assert_eq!(hash(&token).len(), 64);
    }
}
