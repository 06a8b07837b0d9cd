//! Gossip keys and the keyring every sealed datagram is sealed and opened with.
//!
//! A [`Key`] is 32 random bytes plus a 32-bit [`KeyId`] drawn at random when the key is generated.
//! The id travels in clear in every datagram so the receiver knows which key to try; because it is
//! random rather than derived from the secret, it says nothing about the secret (no offline
//! guessing from captured traffic, whatever the key). Key and id travel together as one text:
//! ```text
//! sgk1-<id: 8 hex>-<secret: 64 hex>        e.g. sgk1-3f09a1c2-9c1e...(64 hex)
//! ```
//! A [`Keyring`] holds a primary key (used to seal) and up to [`MAX_KEYS`] - 1 others (accepted
//! when opening). A [`KeyringHandle`] shares one keyring between the transport and whoever rotates
//! it; rotation without downtime is three steps, each finished on every node before the next:
//! 1. `add(new)`: every node now opens datagrams sealed with either key, still seals with the old;
//! 2. `set_primary(new.id())`: nodes seal with the new key, which every node already accepts;
//! 3. `remove(old.id())`: the old key is no longer accepted anywhere.

use std::fmt;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

/// Most keys a keyring holds (primary included): rotation needs two, a few more cover mistakes.
pub const MAX_KEYS: usize = 8;

/// Prefix of a key's text form (format version 1).
const TEXT_PREFIX: &str = "sgk1-";

/// A secret with fewer distinct byte values than this is refused as weak or a placeholder. 32
/// random bytes have about 30 distinct values; fewer than 12 happens with probability below 1e-15.
const MIN_DISTINCT_BYTES: usize = 12;

/// Why a key or a keyring operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not `sgk1-<8 hex>-<64 hex>`.
    #[error("a gossip key must read `sgk1-<8 hex id>-<64 hex secret>` (as `senti cluster keygen` prints it)")]
    Format,
    /// The secret is all one byte, a pattern or a placeholder.
    #[error("gossip key {0} is weak (too few distinct bytes): generate one with `senti cluster keygen`")]
    Weak(KeyId),
    /// The operating system's random source failed.
    #[error("cannot draw random bytes for a gossip key: {0}")]
    Random(String),
    /// Another key of the ring has this id.
    #[error("the keyring already holds a key with id {0}")]
    DuplicateId(KeyId),
    /// No key of the ring has this id.
    #[error("the keyring holds no key with id {0}")]
    UnknownId(KeyId),
    /// The primary key cannot be removed: make another key primary first.
    #[error("key {0} is the primary key: make another key primary before removing it")]
    RemovePrimary(KeyId),
    /// The ring is full.
    #[error("a keyring holds at most {MAX_KEYS} keys")]
    Full,
}

/// The public id of a key: random, assigned when the key is generated, sent in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A 32-byte gossip key and its id. The secret is wiped from memory when the key is dropped and
/// never appears in `Debug` output.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    secret: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("id", &self.id).field("secret", &"[redacted]").finish()
    }
}

impl Key {
    /// A new key: 32 bytes and a 32-bit id from the operating system's random source.
    pub fn generate() -> Result<Key, KeyError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        let mut id = [0u8; 4];
        getrandom::getrandom(secret.as_mut()).map_err(|err| KeyError::Random(err.to_string()))?;
        getrandom::getrandom(&mut id).map_err(|err| KeyError::Random(err.to_string()))?;
        Ok(Key { id: KeyId(u32::from_be_bytes(id)), secret })
    }

    /// Parses the text form `sgk1-<8 hex id>-<64 hex secret>` (surrounding whitespace ignored).
    /// Weak secrets (all one byte, short patterns, placeholders) are refused.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let rest = text.trim().strip_prefix(TEXT_PREFIX).ok_or(KeyError::Format)?;
        let (id_hex, secret_hex) = rest.split_once('-').ok_or(KeyError::Format)?;
        if id_hex.len() != 8 || secret_hex.len() != 64 {
            return Err(KeyError::Format);
        }
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| KeyError::Format)?;
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(secret_hex, secret.as_mut()).map_err(|_| KeyError::Format)?;
        Key::from_parts(KeyId(u32::from_be_bytes(id)), *secret)
    }

    /// A key from its id and secret bytes; weak secrets are refused.
    pub fn from_parts(id: KeyId, secret: [u8; 32]) -> Result<Key, KeyError> {
        let secret = Zeroizing::new(secret);
        let mut seen = [false; 256];
        for byte in secret.iter() {
            seen[*byte as usize] = true;
        }
        if seen.iter().filter(|s| **s).count() < MIN_DISTINCT_BYTES {
            return Err(KeyError::Weak(id));
        }
        Ok(Key { id, secret })
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The text form, secret included: for key files and `senti cluster keygen`, never for logs.
    pub fn to_text(&self) -> String {
        format!("{TEXT_PREFIX}{}-{}", self.id, hex::encode(self.secret.as_ref()))
    }

    /// The secret bytes (for the AEAD).
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The secret bytes, for tests that look for them in captured traffic.
    #[cfg(feature = "testsuite")]
    pub fn secret_for_tests(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// The keys of a node: one primary (seals outgoing datagrams) and others (only open incoming ones).
/// Immutable: [`KeyringHandle`] swaps whole keyrings.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Primary first, then the others; ids are distinct.
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring of `primary` and `others`; ids must be distinct, at most [`MAX_KEYS`] keys.
    pub fn from_keys(primary: Key, others: Vec<Key>) -> Result<Keyring, KeyError> {
        let mut keyring = Keyring { keys: vec![primary] };
        for key in others {
            keyring = keyring.with_key(key)?;
        }
        Ok(keyring)
    }

    /// The key outgoing datagrams are sealed with.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with this id, if the ring holds it.
    pub fn get(&self, id: KeyId) -> Option<&Key> {
        self.keys.iter().find(|key| key.id == id)
    }

    /// Ids of every key, primary first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(Key::id).collect()
    }

    fn with_key(&self, key: Key) -> Result<Keyring, KeyError> {
        if self.get(key.id).is_some() {
            return Err(KeyError::DuplicateId(key.id));
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyError::Full);
        }
        let mut keys = self.keys.clone();
        keys.push(key);
        Ok(Keyring { keys })
    }

    fn with_primary(&self, id: KeyId) -> Result<Keyring, KeyError> {
        let position = self.keys.iter().position(|key| key.id == id).ok_or(KeyError::UnknownId(id))?;
        let mut keys = self.keys.clone();
        let key = keys.remove(position);
        keys.insert(0, key);
        Ok(Keyring { keys })
    }

    fn without(&self, id: KeyId) -> Result<Keyring, KeyError> {
        if self.primary().id == id {
            return Err(KeyError::RemovePrimary(id));
        }
        if self.get(id).is_none() {
            return Err(KeyError::UnknownId(id));
        }
        Ok(Keyring { keys: self.keys.iter().filter(|key| key.id != id).cloned().collect() })
    }
}

/// A keyring shared between sealed sockets and the code that rotates keys at runtime. Cloning
/// shares the same ring. Each datagram reads the ring once ([`KeyringHandle::snapshot`]); a change
/// applies to the next datagram.
#[derive(Debug, Clone)]
pub struct KeyringHandle {
    /// Written by `add`/`set_primary`/`remove` (rare), read once per datagram: a lock held only
    /// to clone an `Arc`, never across an await.
    current: Arc<RwLock<Arc<Keyring>>>,
}

impl KeyringHandle {
    /// Shares `keyring`.
    pub fn new(keyring: Keyring) -> KeyringHandle {
        KeyringHandle { current: Arc::new(RwLock::new(Arc::new(keyring))) }
    }

    /// The keyring as it is now.
    pub fn snapshot(&self) -> Arc<Keyring> {
        // A poisoned lock only means a writer panicked between two whole-keyring swaps: the value
        // inside is a complete keyring either way.
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Rotation step 1: accept datagrams sealed with `key` too.
    pub fn add(&self, key: Key) -> Result<(), KeyError> {
        self.update(|keyring| keyring.with_key(key))
    }

    /// Rotation step 2: seal with the key `id` from now on (the ring must hold it).
    pub fn set_primary(&self, id: KeyId) -> Result<(), KeyError> {
        self.update(|keyring| keyring.with_primary(id))
    }

    /// Rotation step 3: stop accepting the key `id` (not the primary).
    pub fn remove(&self, id: KeyId) -> Result<(), KeyError> {
        self.update(|keyring| keyring.without(id))
    }

    /// The primary key's id.
    pub fn primary_id(&self) -> KeyId {
        self.snapshot().primary().id()
    }

    /// Every key's id, primary first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.snapshot().ids()
    }

    fn update(&self, change: impl FnOnce(&Keyring) -> Result<Keyring, KeyError>) -> Result<(), KeyError> {
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = change(&current)?;
        tracing::info!(primary = %next.primary().id(), keys = ?next.ids(), "gossip keyring changed");
        *current = Arc::new(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_round_trips_through_its_text() {
        let key = Key::generate().unwrap();
        let text = key.to_text();
        assert!(text.starts_with("sgk1-"), "{text}");
        assert_eq!(text.len(), 5 + 8 + 1 + 64);
        let parsed = Key::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed.id(), key.id());
        assert_eq!(parsed.secret(), key.secret());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = Key::generate().unwrap();
        let debug = format!("{key:?} {:?}", Keyring::from_keys(key.clone(), vec![]).unwrap());
        assert!(!debug.contains(&hex::encode(key.secret())), "{debug}");
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn malformed_texts_are_refused() {
        let good = Key::generate().unwrap().to_text();
        for bad in [
            "",
            "sgk1-",
            &good[..good.len() - 1],
            &good.replace("sgk1-", "sgk2-"),
            &format!("{good}0"),
            &good.replacen('-', "", 2),
            &format!("sgk1-zzzzzzzz-{}", &good[14..]),
        ] {
            assert_eq!(Key::parse(bad).unwrap_err(), KeyError::Format, "{bad:?}");
        }
    }

    #[test]
    fn weak_and_placeholder_secrets_are_refused() {
        let zeros = format!("sgk1-00000001-{}", "00".repeat(32));
        assert_eq!(Key::parse(&zeros).unwrap_err(), KeyError::Weak(KeyId(1)));
        let pattern = format!("sgk1-00000002-{}", "0123456789abcdef".repeat(4));
        assert_eq!(Key::parse(&pattern).unwrap_err(), KeyError::Weak(KeyId(2)));
        let placeholder = format!("sgk1-00000003-{}", hex::encode(b"change-me-change-me-change-me-!!"));
        assert_eq!(Key::parse(&placeholder).unwrap_err(), KeyError::Weak(KeyId(3)));
    }

    #[test]
    fn generated_keys_are_never_weak() {
        for _ in 0..10_000 {
            let key = Key::generate().unwrap();
            Key::from_parts(key.id(), *key.secret()).unwrap();
        }
    }

    #[test]
    fn rotation_adds_switches_and_removes() {
        let old = Key::generate().unwrap();
        let new = Key::generate().unwrap();
        let handle = KeyringHandle::new(Keyring::from_keys(old.clone(), vec![]).unwrap());
        let shared = handle.clone();
        handle.add(new.clone()).unwrap();
        assert_eq!(shared.ids(), vec![old.id(), new.id()]);
        assert_eq!(handle.remove(old.id()), Err(KeyError::RemovePrimary(old.id())));
        handle.set_primary(new.id()).unwrap();
        assert_eq!(shared.primary_id(), new.id());
        handle.remove(old.id()).unwrap();
        assert_eq!(shared.ids(), vec![new.id()]);
        assert_eq!(handle.remove(old.id()), Err(KeyError::UnknownId(old.id())));
        assert_eq!(handle.set_primary(old.id()), Err(KeyError::UnknownId(old.id())));
    }

    #[test]
    fn ids_are_unique_and_rings_bounded() {
        let key = Key::generate().unwrap();
        assert_eq!(Keyring::from_keys(key.clone(), vec![key.clone()]).unwrap_err(), KeyError::DuplicateId(key.id()));
        let others = (1..MAX_KEYS).map(|_| Key::generate().unwrap()).collect();
        let handle = KeyringHandle::new(Keyring::from_keys(key, others).unwrap());
        assert_eq!(handle.add(Key::generate().unwrap()), Err(KeyError::Full));
    }
}
