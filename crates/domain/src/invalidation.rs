//! What a change makes stale in every replica's verification cache. The
//! store writes these to an append-only log in the same transaction as the
//! change, so no replica can miss one: each polls the log (and PostgreSQL
//! replicas are woken by NOTIFY as soon as it commits).

use crate::credential::SecretHash;
use crate::directory::UserId;
use crate::oauth::ClientId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// An API key was revoked.
    KeyRevoked(SecretHash),
    /// An API key was created: known-key filters must learn its hash.
    KeyCreated(SecretHash),
    /// A user's memberships changed.
    Membership(UserId),
    /// OAuth tokens were revoked (by family, app deletion or RFC 7009).
    AccessTokens,
    /// An OAuth app changed (its secret, its settings) or was deleted.
    App(ClientId),
}

impl Invalidation {
    pub fn encode(&self) -> String {
        match self {
            Invalidation::KeyRevoked(hash) => format!("key-revoked:{}", hex(hash)),
            Invalidation::KeyCreated(hash) => format!("key-created:{}", hex(hash)),
            Invalidation::Membership(user) => format!("membership:{user}"),
            Invalidation::AccessTokens => "access-tokens".to_owned(),
            Invalidation::App(client_id) => format!("app:{client_id}"),
        }
    }

    pub fn decode(text: &str) -> Option<Invalidation> {
        match text.split_once(':') {
            Some(("key-revoked", h)) => unhex(h).map(Invalidation::KeyRevoked),
            Some(("key-created", h)) => unhex(h).map(Invalidation::KeyCreated),
            Some(("membership", user)) => Some(Invalidation::Membership(UserId(user.to_owned()))),
            Some(("app", client_id)) => Some(Invalidation::App(ClientId(client_id.to_owned()))),
            None if text == "access-tokens" => Some(Invalidation::AccessTokens),
            _ => None,
        }
    }
}

fn hex(hash: &SecretHash) -> String {
    hash.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<SecretHash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(SecretHash(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for inv in [
            Invalidation::KeyRevoked(SecretHash([0xab; 32])),
            Invalidation::KeyCreated(SecretHash([1; 32])),
            Invalidation::Membership(UserId("u:1".into())),
            Invalidation::AccessTokens,
            Invalidation::App(ClientId("0192f3a4b5c6".into())),
        ] {
            assert_eq!(Invalidation::decode(&inv.encode()), Some(inv));
        }
        assert_eq!(Invalidation::decode("key-revoked:zz"), None);
        assert_eq!(Invalidation::decode("nonsense"), None);
    }
}
