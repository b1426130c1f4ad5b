//! Issued secrets: `<prefix><random><check>` (CONTRACT §1).
//!
//! The checksum lets the service refuse a mistyped or forged secret without
//! touching storage, and lets secret scanners recognise ours.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::authorization::Authorization;
use crate::error::Reason;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// The longest credential we look at; anything longer is refused unread.
pub(crate) const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// What a secret is, told by its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    WorkspaceKey,
    PersonalKey,
    AccessToken,
    RefreshToken,
    AuthorizationCode,
    ClientSecret,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 6] = [
        CredentialKind::WorkspaceKey,
        CredentialKind::PersonalKey,
        CredentialKind::AccessToken,
        CredentialKind::RefreshToken,
        CredentialKind::AuthorizationCode,
        CredentialKind::ClientSecret,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            CredentialKind::WorkspaceKey => "vel_",
            CredentialKind::PersonalKey => "velu_",
            CredentialKind::AccessToken => "velo_",
            CredentialKind::RefreshToken => "velr_",
            CredentialKind::AuthorizationCode => "velc_",
            CredentialKind::ClientSecret => "vels_",
        }
    }

    /// The kind whose prefix starts `text`, if any. No prefix is a prefix of
    /// another (`vel_` vs `velu_` differ at the fourth byte).
    pub fn of(text: &str) -> Option<CredentialKind> {
        Self::ALL.into_iter().find(|k| text.starts_with(k.prefix()))
    }
}

/// A secret in full. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    kind: CredentialKind,
    text: String,
}

impl Secret {
    /// A fresh secret from the OS CSPRNG.
    pub fn generate(kind: CredentialKind) -> Secret {
        let mut random = String::with_capacity(RANDOM_LEN);
        // Rejection sampling keeps every base62 character equally likely.
        let mut buf = [0u8; 64];
        while random.len() < RANDOM_LEN {
            #[expect(
                clippy::expect_used,
                reason = "without the OS RNG no secret can be issued safely; nothing to serve through"
            )]
            OsRng
                .try_fill_bytes(&mut buf)
                .expect("the OS random number generator failed");
            for byte in buf {
                let b = byte & 0x3f;
                if (b as usize) < BASE62.len() && random.len() < RANDOM_LEN {
                    random.push(BASE62[b as usize] as char);
                }
            }
        }
        let mut text = String::with_capacity(kind.prefix().len() + RANDOM_LEN + CHECK_LEN);
        text.push_str(kind.prefix());
        text.push_str(&random);
        let check = checksum(&text);
        text.push_str(&check);
        Secret { kind, text }
    }

    /// Parses a presented secret, checking shape and checksum without storage.
    pub fn parse(text: &str) -> Result<Secret, Reason> {
        let kind = Self::validate(text)?;
        Ok(Secret {
            kind,
            text: text.to_owned(),
        })
    }

    /// Checks shape and checksum without copying the secret: what
    /// Authenticate needs before it hashes the text for the lookup.
    pub fn validate(text: &str) -> Result<CredentialKind, Reason> {
        if text.len() > MAX_CREDENTIAL_LEN {
            return Err(Reason::CredentialMalformed);
        }
        let kind = CredentialKind::of(text).ok_or(Reason::CredentialMalformed)?;
        let body = &text[kind.prefix().len()..];
        if body.len() != RANDOM_LEN + CHECK_LEN || !all_base62(body) {
            return Err(Reason::CredentialMalformed);
        }
        let (signed, check) = text.split_at(text.len() - CHECK_LEN);
        if !bool::from(checksum_digits(signed).ct_eq(check.as_bytes())) {
            return Err(Reason::CredentialChecksumMismatch);
        }
        Ok(kind)
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The full secret, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.text)
    }

    /// Non-secret form for listings: `vel_Ab3d…9xZq`.
    pub fn display_form(&self) -> String {
        let prefix = self.kind.prefix();
        let body = &self.text[prefix.len()..];
        format!("{prefix}{}…{}", &body[..4], &body[body.len() - 4..])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}<redacted>)", self.kind.prefix())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<redacted>", self.kind.prefix())
    }
}

/// Authenticate's credential field tolerates the `Bearer` scheme, as the
/// header parser reads it; anything else is taken as the bare credential.
pub(crate) fn strip_bearer(credential: &str) -> &str {
    Authorization::bearer_or_bare(credential).unwrap_or_else(|_| credential.trim())
}

fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Every byte base62. Without stopping at the first that is not, so the
/// loop vectorises: every Authenticate checks its credential's 38 bytes,
/// and a malformed one is refused either way.
fn all_base62(text: &str) -> bool {
    text.bytes().fold(true, |all, b| all & is_base62(b))
}

/// CRC32 of `signed`, as six zero-padded base62 digits.
pub fn checksum(signed: &str) -> String {
    checksum_digits(signed).iter().map(|&b| b as char).collect()
}

fn checksum_digits(signed: &str) -> [u8; CHECK_LEN] {
    let mut n = crc32fast::hash(signed.as_bytes()) as u64;
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// SHA-256 of a secret: the only form in which secrets are stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

/// By its [`fingerprint`](SecretHash::fingerprint) alone: equal digests
/// have equal fingerprints, and the rest adds nothing to a uniform value.
impl Hash for SecretHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint());
    }
}

impl SecretHash {
    /// The first eight bytes: SHA-256 output, so already uniform; what the
    /// known-key filter and [`DigestHasher`] take as the digest's hash.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(first)
    }

    pub fn of(secret: &str) -> SecretHash {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<SecretHash> {
        <[u8; 32]>::try_from(bytes).ok().map(SecretHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality, for where a stored digest is compared.
    pub(crate) fn ct_eq(&self, other: &SecretHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// The hasher of maps keyed by [`SecretHash`] (the verification cache):
/// the fingerprint as it is, where the default SipHash would spend more
/// than the rest of a cached lookup on every Authenticate to scramble an
/// already uniform value. Nobody can crowd such a map with chosen digests:
/// its entries are only what storage knows or this replica issued (hashes
/// of secrets we generated) and verified sessions. Other values are folded
/// in by eight bytes, so it is a correct `Hasher` for any key.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DigestHasher(u64);

pub(crate) type DigestHasherBuilder = BuildHasherDefault<DigestHasher>;

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    /// A lone write (a `SecretHash`) is kept as it is.
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(29) ^ n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasher;

    #[test]
    fn a_digest_hashes_to_its_fingerprint_and_other_keys_still_spread() {
        let hash = Secret::generate(CredentialKind::WorkspaceKey).hash();
        let builder = DigestHasherBuilder::default();
        assert_eq!(builder.hash_one(hash), hash.fingerprint());
        assert_eq!(
            hash.fingerprint().to_le_bytes(),
            hash.as_bytes()[..8],
            "the digest's first bytes"
        );
        let strings: std::collections::HashSet<u64> = (0..100)
            .map(|n| builder.hash_one(format!("a key of some length {n}")))
            .collect();
        assert_eq!(strings.len(), 100);
    }

    #[test]
    fn generated_secrets_have_the_contract_shape() {
        for kind in CredentialKind::ALL {
            let secret = Secret::generate(kind);
            let text = secret.expose();
            assert!(text.starts_with(kind.prefix()));
            assert_eq!(text.len(), kind.prefix().len() + 38);
            assert_eq!(Secret::parse(text), Ok(secret.clone()));
        }
    }

    #[test]
    fn checksum_is_crc32_in_six_base62_digits() {
        let crc = crc32fast::hash(b"vel_") as u64;
        let mut expected = String::new();
        let mut n = crc;
        while n > 0 {
            expected.insert(0, BASE62[(n % 62) as usize] as char);
            n /= 62;
        }
        while expected.len() < 6 {
            expected.insert(0, '0');
        }
        assert_eq!(checksum("vel_"), expected);
        assert_eq!(checksum("").len(), 6);
        assert_eq!(checksum(""), "000000", "CRC32 of nothing is 0");
    }

    #[test]
    fn a_flipped_character_fails_the_checksum() {
        let secret = Secret::generate(CredentialKind::WorkspaceKey);
        let mut bytes = secret.expose().as_bytes().to_vec();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let forged = String::from_utf8(bytes).unwrap();
        assert_eq!(
            Secret::parse(&forged),
            Err(Reason::CredentialChecksumMismatch)
        );
    }

    #[test]
    fn malformed_secrets_are_refused() {
        let good = Secret::generate(CredentialKind::PersonalKey);
        let text = good.expose();
        for bad in [
            "",
            "vel_",
            "xyz_abc",
            &text[..text.len() - 1],
            &format!("{text}0"),
            &text.replace(&text[6..7], "-"),
            &"a".repeat(MAX_CREDENTIAL_LEN + 1),
        ] {
            assert_eq!(
                Secret::parse(bad),
                Err(Reason::CredentialMalformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let secret = Secret::generate(CredentialKind::WorkspaceKey);
        let body = &secret.expose()[4..];
        assert!(!format!("{secret:?}").contains(body));
        assert!(!format!("{secret}").contains(body));
        assert!(!secret.display_form().contains(&body[4..body.len() - 4]));
    }

    #[test]
    fn display_form_keeps_prefix_and_ends() {
        let secret = Secret::generate(CredentialKind::WorkspaceKey);
        let text = secret.expose();
        let shown = secret.display_form();
        assert!(shown.starts_with(&text[..8]));
        assert!(shown.ends_with(&text[text.len() - 4..]));
        assert!(shown.contains('…'));
    }

    #[test]
    fn hashes_are_sha256_of_the_full_text() {
        let secret = Secret::generate(CredentialKind::AccessToken);
        let expected: [u8; 32] = Sha256::digest(secret.expose().as_bytes()).into();
        assert_eq!(secret.hash().0, expected);
        assert!(secret.hash().ct_eq(&SecretHash::of(secret.expose())));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,64}") {
            let _ = Secret::parse(&text);
        }

        #[test]
        fn random_bodies_with_a_prefix_rarely_pass(body in "[0-9A-Za-z]{38}") {
            let text = format!("vel_{body}");
            if let Ok(secret) = Secret::parse(&text) {
                prop_assert_eq!(checksum(&text[..text.len() - 6]), &text[text.len() - 6..]);
                prop_assert_eq!(secret.kind(), CredentialKind::WorkspaceKey);
            }
        }
    }
}
