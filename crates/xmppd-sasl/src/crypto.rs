//! Hash-function dispatch for the SCRAM family: H(), HMAC() and Hi() (PBKDF2) over the three
//! supported hashes, plus the randomness the exchanges need.
//!
//! Deliberately not generic over digest traits: three concrete hashes keep the bounds readable
//! and the dispatch is one `match` per primitive.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::HashAlg;

/// H(data).
pub(crate) fn hash(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    match alg {
        HashAlg::Sha1 => Sha1::digest(data).to_vec(),
        HashAlg::Sha256 => Sha256::digest(data).to_vec(),
        HashAlg::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// HMAC(key, parts[0] || parts[1] || ...).
pub(crate) fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    macro_rules! run {
        ($d:ty) => {{
            // HMAC is defined for keys of every length, so this cannot fail.
            let mut mac =
                <Hmac<$d> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }};
    }
    match alg {
        HashAlg::Sha1 => run!(Sha1),
        HashAlg::Sha256 => run!(Sha256),
        HashAlg::Sha512 => run!(Sha512),
    }
}

/// Hi(password, salt, iterations) of RFC 5802, which is PBKDF2 with HMAC as the PRF and one
/// output block.
pub(crate) fn hi(alg: HashAlg, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; alg.output_len()];
    match alg {
        HashAlg::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
        HashAlg::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        HashAlg::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out),
    }
    out
}

/// a XOR b; callers check the lengths first.
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// `n` bytes from the thread-local CSPRNG.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lengths_match_hash() {
        for alg in HashAlg::ALL {
            assert_eq!(hash(alg, b"x").len(), alg.output_len());
            assert_eq!(hmac(alg, b"k", &[b"x"]).len(), alg.output_len());
            assert_eq!(hi(alg, b"p", b"s", 2).len(), alg.output_len());
        }
    }

    #[test]
    fn hmac_parts_are_concatenated() {
        assert_eq!(
            hmac(HashAlg::Sha256, b"key", &[b"ab", b"cd"]),
            hmac(HashAlg::Sha256, b"key", &[b"abcd"])
        );
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random_bytes(24), random_bytes(24));
    }
}
