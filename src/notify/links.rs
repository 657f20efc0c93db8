//! Personal invitation links. The token is HMAC-SHA256 over the invitation id and a random
//! per-invitation nonce (128 bits) under muster's link key: every message about an invitation
//! can carry the same link without the token ever being stored. Only its SHA-256 is stored, to
//! find the invitation when the link is opened.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// 128 random bits, hex.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A fresh link key (256 random bits, hex); created once and kept in the database.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The token in an invitation's link: 160 bits of the HMAC, hex.
pub fn link_token(key: &str, invitation_id: i64, nonce: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("invitation:{invitation_id}:{nonce}").as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_per_invitation_and_differ_across() {
        let key = new_key();
        let nonce = new_nonce();
        assert_eq!(nonce.len(), 32);
        let token = link_token(&key, 7, &nonce);
        assert_eq!(token.len(), 40);
        assert_eq!(token, link_token(&key, 7, &nonce));
        assert_ne!(token, link_token(&key, 8, &nonce));
        assert_ne!(token, link_token(&key, 7, &new_nonce()));
        assert_ne!(token, link_token(&new_key(), 7, &nonce));
    }
}
