//! SHA-256 as hex, for the identity of an input file.

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes`, lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
