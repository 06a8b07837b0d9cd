//! The sealed datagram: chitchat's bytes and a timestamp under XChaCha20-Poly1305.
//!
//! ```text
//! offset  len  field                   in clear?
//! 0       1    format (0xC1: v1)       yes  \
//! 1       4    key id (u32 BE)         yes   } associated data: authenticated, not encrypted
//! 5       24   nonce (random)          yes  /
//! 29      8    sent at, unix ms (LE)   encrypted
//! 37      n    chitchat message        encrypted
//! 37+n    16   Poly1305 tag
//! ```
//! 53 bytes of overhead. XChaCha20's 192-bit nonce is drawn at random for every datagram: no
//! counter to keep across restarts, and no realistic chance of reuse (96-bit random nonces would
//! allow ~2^32 datagrams per key; 192-bit ones, far more than a cluster ever sends). The key id
//! is random (keyring.rs), so nothing in clear is derived from the key.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::keyring::{Key, KeyId, Keyring};
use crate::wire::CHITCHAT_MAGIC;

/// First byte of a v1 sealed datagram (never the first byte of a chitchat message, 0x53).
pub const FORMAT_V1: u8 = 0xC1;
/// Format, key id, nonce.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const NONCE_LEN: usize = 24;
const TIMESTAMP_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to the chitchat message it carries.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TIMESTAMP_LEN + TAG_LEN;

/// Why a datagram did not open. The labels are those of `senti_gossip_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// A plain chitchat message: a node without sealing, or a forger without the key.
    #[error("unsealed chitchat message")]
    Unsealed,
    /// Too short or an unknown format byte.
    #[error("malformed sealed datagram")]
    Malformed,
    /// Sealed with a key this keyring does not hold.
    #[error("unknown key id {0}")]
    UnknownKey(KeyId),
    /// The tag does not verify: wrong key, or bytes changed on the way.
    #[error("authentication failed")]
    Auth,
}

/// A datagram that opened: authentic, sealed with a key of the ring.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The key it was sealed with.
    pub key_id: KeyId,
    /// The sender's clock when it sealed, unix ms.
    pub sent_unix_ms: u64,
    /// The nonce: unique per datagram, so it identifies one for the replay window.
    pub nonce: [u8; NONCE_LEN],
    /// The chitchat message.
    pub plaintext: &'a [u8],
}

/// Seals `plaintext` with `key` into `out` (cleared first).
pub fn seal(key: &Key, sent_unix_ms: u64, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).map_err(|err| SealError(err.to_string()))?;
    out.clear();
    out.reserve(SEAL_OVERHEAD + plaintext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&key.id().0.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sent_unix_ms.to_le_bytes());
    out.extend_from_slice(plaintext);
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let cipher = XChaCha20Poly1305::new(key.secret().into());
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), header, body)
        .map_err(|_| SealError("message too long for the cipher".into()))?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// Sealing failed: the operating system's random source is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot seal a gossip datagram: {0}")]
pub struct SealError(String);

/// Opens `datagram` in place with the key its id names. Nothing of the content is looked at before
/// the tag verifies.
pub fn open<'a>(keyring: &Keyring, datagram: &'a mut [u8]) -> Result<Opened<'a>, OpenError> {
    if datagram.len() >= 2 && datagram[..2] == CHITCHAT_MAGIC.to_le_bytes() {
        return Err(OpenError::Unsealed);
    }
    if datagram.len() < SEAL_OVERHEAD || datagram[0] != FORMAT_V1 {
        return Err(OpenError::Malformed);
    }
    let key_id = KeyId(u32::from_be_bytes([datagram[1], datagram[2], datagram[3], datagram[4]]));
    let key = keyring.get(key_id).ok_or(OpenError::UnknownKey(key_id))?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&datagram[5..HEADER_LEN]);
    let tag_at = datagram.len() - TAG_LEN;
    let (sealed, tag) = datagram.split_at_mut(tag_at);
    let (header, body) = sealed.split_at_mut(HEADER_LEN);
    let cipher = XChaCha20Poly1305::new(key.secret().into());
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(&nonce), header, body, Tag::from_slice(tag))
        .map_err(|_| OpenError::Auth)?;
    let (sent, plaintext) = body.split_at(TIMESTAMP_LEN);
    let mut sent_le = [0u8; TIMESTAMP_LEN];
    sent_le.copy_from_slice(sent);
    Ok(Opened { key_id, sent_unix_ms: u64::from_le_bytes(sent_le), nonce, plaintext })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (Key, Keyring) {
        let key = Key::generate().unwrap();
        (key.clone(), Keyring::from_keys(key, vec![]).unwrap())
    }

    /// Random and mutated datagrams (20,000 in `make test`; `make fuzz`: a million): only an
    /// untouched sealed datagram opens; everything else is refused, never a panic.
    #[test]
    fn random_and_mutated_datagrams_are_refused_never_panicked_on() {
        let cases = senti_engine::testsuite::fuzz_cases(20_000);
        let (key, keyring) = ring();
        let seeds: Vec<Vec<u8>> = [&b"x"[..], b"ready=true", &[0u8; 300]]
            .iter()
            .map(|plaintext| {
                let mut datagram = Vec::new();
                seal(&key, 1_234, plaintext, &mut datagram).unwrap();
                datagram
            })
            .collect();
        let (mut opened, mut refused) = (0_u64, 0_u64);
        for mut bytes in senti_engine::testsuite::fuzz_inputs(&seeds, cases, 13, 400) {
            let untouched = seeds.contains(&bytes);
            match open(&keyring, &mut bytes) {
                Ok(_) => {
                    assert!(untouched, "a changed datagram opened");
                    opened += 1;
                }
                Err(_) => refused += 1,
            }
        }
        eprintln!("datagram fuzz: {cases} inputs, {opened} opened (untouched), {refused} refused");
        assert!(refused > 0);
    }

    #[test]
    fn a_sealed_datagram_opens_with_the_ring_and_hides_its_content() {
        let (key, keyring) = ring();
        let plaintext = b"needle: ready=true model=senti-zh-small@1.0.0";
        let mut datagram = Vec::new();
        seal(&key, 1_234, plaintext, &mut datagram).unwrap();
        assert_eq!(datagram.len(), plaintext.len() + SEAL_OVERHEAD);
        let window = |needle: &[u8]| datagram.windows(needle.len()).any(|w| w == needle);
        assert!(!window(b"needle") && !window(b"senti-zh"));
        assert!(!window(key.secret()) && !window(&key.secret()[..8]));
        let start = datagram[HEADER_LEN + TIMESTAMP_LEN..].as_ptr();
        let opened = open(&keyring, &mut datagram).unwrap();
        assert_eq!((opened.key_id, opened.sent_unix_ms, opened.plaintext), (key.id(), 1_234, &plaintext[..]));
        assert!(std::ptr::eq(opened.plaintext.as_ptr(), start), "opened in place");
    }

    #[test]
    fn every_flipped_bit_fails_authentication() {
        let (key, keyring) = ring();
        let mut datagram = Vec::new();
        seal(&key, 99, b"hello", &mut datagram).unwrap();
        for bit in 0..datagram.len() * 8 {
            let mut changed = datagram.clone();
            changed[bit / 8] ^= 1 << (bit % 8);
            let expected = match bit / 8 {
                0 => OpenError::Malformed,
                1..=4 => {
                    OpenError::UnknownKey(KeyId(u32::from_be_bytes([changed[1], changed[2], changed[3], changed[4]])))
                }
                _ => OpenError::Auth,
            };
            assert_eq!(open(&keyring, &mut changed).unwrap_err(), expected, "bit {bit}");
        }
    }

    #[test]
    fn another_key_with_the_same_id_fails_authentication() {
        let (key, keyring) = ring();
        let impostor = Key::from_parts(key.id(), *Key::generate().unwrap().secret()).unwrap();
        let mut datagram = Vec::new();
        seal(&impostor, 1, b"hello", &mut datagram).unwrap();
        assert_eq!(open(&keyring, &mut datagram).unwrap_err(), OpenError::Auth);
    }

    #[test]
    fn plain_chitchat_and_short_datagrams_are_told_apart() {
        let (_, keyring) = ring();
        assert_eq!(open(&keyring, &mut [0x53, 0xB0, 0, 3]).unwrap_err(), OpenError::Unsealed);
        assert_eq!(open(&keyring, &mut [FORMAT_V1; SEAL_OVERHEAD - 1]).unwrap_err(), OpenError::Malformed);
        assert_eq!(open(&keyring, &mut []).unwrap_err(), OpenError::Malformed);
    }

    #[test]
    fn nonces_differ_between_datagrams() {
        let (key, _) = ring();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        seal(&key, 1, b"same", &mut a).unwrap();
        seal(&key, 1, b"same", &mut b).unwrap();
        assert_ne!(a[5..HEADER_LEN], b[5..HEADER_LEN]);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }
}
