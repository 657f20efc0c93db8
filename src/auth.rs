//! Credentials: password hashing, session and API tokens, and the failed-login throttle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the account does not exist, so that a login for an unknown
/// name takes as long as one with a wrong password.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("muster-dummy-password").expect("hashing works"))
}

pub fn check_password_strength(password: &str) -> Result<(), String> {
    if password.chars().count() < 8 {
        return Err("password must have at least 8 characters".into());
    }
    Ok(())
}

/// A fresh secret token: 256 random bits, hex-encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Tokens are stored only as their SHA-256 (they are random, so no salt or slow hash is
/// needed).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Counts failed logins per key (account name, client address) and locks a key out for a
/// while after too many. In memory: with several instances each keeps its own count, which
/// still bounds guessing to a small multiple of the limit.
///
/// Hand-written because rate-limiting crates limit request rates, not failures.
pub struct LoginThrottle {
    max_failures: u32,
    lockout: Duration,
    entries: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        Self {
            max_failures,
            lockout,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` while `key` is locked out.
    pub fn locked(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("throttle lock");
        let until = entries.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failure; returns the lockout it caused, if any.
    pub fn fail(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("throttle lock");
        if entries.len() > 100_000 {
            entries.retain(|_, f| now.duration_since(f.first) < self.lockout);
        }
        let entry = entries.entry(key.to_string()).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.duration_since(entry.first) > self.lockout {
            *entry = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count >= self.max_failures {
            entry.locked_until = Some(now + self.lockout);
            entry.count = 0;
            entry.first = now;
            return Some(self.lockout);
        }
        None
    }

    pub fn succeed(&self, key: &str) {
        self.entries.lock().expect("throttle lock").remove(key);
    }
}

/// Creates a staff account bound to the unit with `unit_code`; `password_hash` from
/// [`hash_password`].
pub async fn add_account(
    store: &crate::store::Store,
    username: &str,
    display_name: &str,
    role: crate::domain::access::StaffRole,
    unit_code: &str,
    password_hash: &str,
    actor: &str,
) -> anyhow::Result<crate::store::StaffAccount> {
    let username = username.trim();
    if username.is_empty()
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        anyhow::bail!(
            "username {username:?}: use letters, digits, '.', '-' and '_' only (pinyin for Chinese names)"
        );
    }
    let unit = store
        .unit_by_code(unit_code)
        .await
        .map_err(|e| anyhow::anyhow!("unit {unit_code:?}: {e}"))?;
    let new = crate::store::NewAccount {
        username: username.to_lowercase(),
        display_name: if display_name.trim().is_empty() {
            username.to_string()
        } else {
            display_name.trim().to_string()
        },
        password_hash: password_hash.to_string(),
        role,
        unit_id: unit.id,
    };
    Ok(store.create_account(&new, actor).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn throttle_locks_after_the_limit_and_success_resets() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        assert!(throttle.fail("u").is_none());
        throttle.succeed("u");
        assert!(throttle.fail("u").is_none());
        assert!(throttle.fail("u").is_none());
        assert!(throttle.locked("u").is_none());
        assert!(throttle.fail("u").is_some());
        assert!(throttle.locked("u").is_some());
        assert!(throttle.locked("other").is_none());
    }

    #[test]
    fn tokens_are_long_and_hashed() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t).len(), 64);
        assert_ne!(token_hash(&t), t);
    }
}
