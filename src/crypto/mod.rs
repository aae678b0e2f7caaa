//! WeChat's request signatures and safe-mode message encryption. Pure functions over
//! bytes: this module never logs, never reads settings, and never sees XML beyond the
//! `<Encrypt>` payload. Its errors never carry a secret or a decrypted byte.

mod aes;
mod signature;

pub use self::aes::{Cipher, CryptoError, KeyError};
pub use signature::{sign, verify_signature, SignatureError};
