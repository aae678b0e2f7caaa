//! Safe-mode (安全模式) payloads: AES-256-CBC over WeChat's framing, padded to 32 bytes.
//! Owns the key and the AppID check; never logs, and its errors never carry the key or
//! a decrypted byte of the message.

use std::fmt;

use aes::Aes256;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};

/// Length of an EncodingAESKey: 32 key bytes in base64, without its one `=`.
const KEY_CHARS: usize = 43;
/// The random prefix of every plaintext.
const RANDOM_LEN: usize = 16;
/// Random prefix plus the 4-byte big-endian message length.
const HEADER_LEN: usize = RANDOM_LEN + 4;
/// WeChat pads with PKCS#7 to 32 bytes, not to the 16-byte AES block.
const PAD_BLOCK: usize = 32;
const AES_BLOCK: usize = 16;
/// Longest AppID we echo back in an error. Real ones are 18 characters (`wx` + 16 hex).
const APP_ID_SHOWN_MAX: usize = 32;

/// Decodes the EncodingAESKey. 43 characters carry 258 bits, of which the key uses 256.
/// WeChat's console makes keys of random letters and digits, so the 2 spare bits are
/// usually not zero (the official samples' key ends in `G`), and the official SDKs
/// ignore them. A strict decoder would reject most real keys.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Decodes `Encrypt`. WeChat sends standard base64 with `=` padding; a payload that lost
/// its padding is still accepted, as the Java SDK's decoder (commons-codec) does.
const PAYLOAD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type Encryptor = cbc::Encryptor<Aes256>;
type Decryptor = cbc::Decryptor<Aes256>;

/// The account's safe-mode key and AppID. Built once from settings; cheap to clone.
#[derive(Clone)]
pub struct Cipher {
    /// `base64(EncodingAESKey + "=")`. Its first 16 bytes are also the IV.
    key: [u8; 32],
    /// AES-256 with `key`'s round keys expanded once: each request clones it rather than
    /// expanding them again.
    aes: Aes256,
    /// Appended to every plaintext and checked on every decrypt. Not a secret.
    app_id: String,
}

/// Why an EncodingAESKey was refused. The key itself is never part of the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The key does not have 43 characters.
    #[error("EncodingAESKey must be 43 characters of base64, got {0}")]
    Length(usize),
    /// A character (1-based `position`) is outside `A-Z a-z 0-9 + /`.
    #[error(
        "EncodingAESKey is not valid base64: character {position} is not in A-Z, a-z, 0-9, + or /"
    )]
    NotBase64 { position: usize },
}

/// Why an `Encrypt` payload could not be opened. No variant carries message bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("encrypted payload is not valid base64")]
    BadBase64,
    /// The decoded ciphertext has this many bytes.
    #[error("ciphertext is {0} bytes, not a positive multiple of 16")]
    BadLength(usize),
    #[error("padding of the decrypted payload is invalid")]
    BadPadding,
    #[error("message length prefix points past the end of the decrypted payload")]
    BadLengthPrefix,
    /// `received` is the AppID the payload names, when it looks like one (at most 32
    /// ASCII letters, digits, `_` or `-`); otherwise only its length is given, so that
    /// a malformed payload cannot smuggle message bytes into a log line.
    #[error("payload is for AppID {received}, not the configured one")]
    AppIdMismatch { received: String },
    #[error("decrypted message is not UTF-8")]
    NotUtf8,
}

impl Cipher {
    /// Checks and decodes the EncodingAESKey (43 characters of standard base64).
    pub fn new(encoding_aes_key: &str, app_id: &str) -> Result<Cipher, KeyError> {
        let chars = encoding_aes_key.chars().count();
        if chars != KEY_CHARS {
            return Err(KeyError::Length(chars));
        }
        if let Some(index) = encoding_aes_key
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
        {
            return Err(KeyError::NotBase64 {
                position: index + 1,
            });
        }
        let mut key = [0u8; 32];
        // The checks above make 43 base64 characters plus `=` decode to exactly 32
        // bytes; any failure here is still reported, never unwrapped.
        match KEY_BASE64.decode_slice(format!("{encoding_aes_key}="), &mut key) {
            Ok(32) => Ok(Cipher {
                key,
                aes: Aes256::new(&key.into()),
                app_id: app_id.to_owned(),
            }),
            _ => Err(KeyError::NotBase64 {
                position: KEY_CHARS,
            }),
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Opens a base64 `Encrypt` payload and returns the inner message XML, which is
    /// checked to be UTF-8. Fails if the padding or framing is wrong or the payload was
    /// sealed for another AppID.
    ///
    /// Check `msg_signature` first: CBC alone does not authenticate, and the signature
    /// is what keeps forged ciphertexts (and padding-oracle probes) from reaching here.
    pub fn decrypt(&self, encrypt: &str) -> Result<Vec<u8>, CryptoError> {
        let ciphertext = PAYLOAD_BASE64
            .decode(encrypt.trim())
            .map_err(|_| CryptoError::BadBase64)?;
        let len = ciphertext.len();
        if len == 0 || len % AES_BLOCK != 0 {
            return Err(CryptoError::BadLength(len));
        }
        let mut plain = self
            .decryptor()
            .decrypt_padded_vec_mut::<NoPadding>(&ciphertext)
            .map_err(|_| CryptoError::BadLength(len))?;

        let unpadded = unpad(&plain)?;
        if unpadded < HEADER_LEN {
            return Err(CryptoError::BadLengthPrefix);
        }
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&plain[RANDOM_LEN..HEADER_LEN]);
        let end = usize::try_from(u32::from_be_bytes(prefix))
            .ok()
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&end| end <= unpadded)
            .ok_or(CryptoError::BadLengthPrefix)?;

        let received = &plain[end..unpadded];
        if received != self.app_id.as_bytes() {
            return Err(CryptoError::AppIdMismatch {
                received: describe_app_id(received),
            });
        }
        if std::str::from_utf8(&plain[HEADER_LEN..end]).is_err() {
            return Err(CryptoError::NotUtf8);
        }
        plain.truncate(end);
        plain.drain(..HEADER_LEN);
        Ok(plain)
    }

    /// Seals `xml` for WeChat with 16 fresh random bytes from the OS-seeded thread RNG.
    pub fn encrypt(&self, xml: &[u8]) -> String {
        self.encrypt_with(xml, rand::random())
    }

    /// Seals `xml` with the given random prefix; the output is fully determined by its
    /// inputs, for byte-stable tests and golden files.
    ///
    /// The length prefix is 32 bits. A message of 4 GiB or more cannot be framed: its
    /// prefix saturates and WeChat will refuse the result. Replies are a few KiB.
    pub fn encrypt_with(&self, xml: &[u8], random: [u8; 16]) -> String {
        let prefix = u32::try_from(xml.len()).unwrap_or(u32::MAX);
        let unpadded = HEADER_LEN + xml.len() + self.app_id.len();
        // Always 1..=32: a message that already ends on a block boundary gets a whole
        // block of padding, so the last byte always says how much to strip.
        let pad = PAD_BLOCK - unpadded % PAD_BLOCK;

        let mut plain = Vec::with_capacity(unpadded + pad);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&prefix.to_be_bytes());
        plain.extend_from_slice(xml);
        plain.extend_from_slice(self.app_id.as_bytes());
        plain.resize(unpadded + pad, pad as u8);

        // `plain` is a whole number of 32-byte blocks, so NoPadding has nothing to add.
        let ciphertext = self.encryptor().encrypt_padded_vec_mut::<NoPadding>(&plain);
        STANDARD.encode(ciphertext)
    }

    fn encryptor(&self) -> Encryptor {
        Encryptor::inner_iv_init(self.aes.clone(), &self.iv().into())
    }

    fn decryptor(&self) -> Decryptor {
        Decryptor::inner_iv_init(self.aes.clone(), &self.iv().into())
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cipher")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// Returns the length of `plain` without its PKCS#7 padding.
///
/// Stricter than the official SDKs: Java, C# and Python read only the last byte and
/// (Java, C#) strip nothing when it is out of range; C++ rejects 0 and values over 32.
/// Here the value must be 1..=32 and every padding byte must equal it, which is what
/// every official encoder writes. Padding to 16-byte blocks (a value of 1..=16 on a
/// ciphertext that is a multiple of 16 but not of 32) is accepted like any other.
fn unpad(plain: &[u8]) -> Result<usize, CryptoError> {
    let pad = plain.last().copied().ok_or(CryptoError::BadPadding)?;
    let pad_len = usize::from(pad);
    if !(1..=PAD_BLOCK).contains(&pad_len) || pad_len > plain.len() {
        return Err(CryptoError::BadPadding);
    }
    let body = plain.len() - pad_len;
    if plain[body..].iter().all(|&b| b == pad) {
        Ok(body)
    } else {
        Err(CryptoError::BadPadding)
    }
}

/// Renders a received AppID for an error message, or only its length when it does not
/// look like an AppID (it could then be a run of decrypted message bytes).
fn describe_app_id(received: &[u8]) -> String {
    let looks_like_app_id = !received.is_empty()
        && received.len() <= APP_ID_SHOWN_MAX
        && received
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match std::str::from_utf8(received) {
        Ok(id) if looks_like_app_id => format!("`{id}`"),
        _ => format!("<{} bytes, not an AppID>", received.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The official samples' EncodingAESKey, shared by the Python, C++ and Java samples.
    const SAMPLE_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    // Python sample (Sample.py, "WXBizMsgCrypt 使用demo文件", Tencent 2014), as vendored in
    // github.com/Abdurihim/weixin_encodingAES, file Sample.py: token "spamtest",
    // timestamp "1409735669", nonce "1320562132", msg_sign
    // "5d197aaffba7e9b25a30732f161a50dee96bd5fa" (checked in signature.rs).
    const PY_APP_ID: &str = "wx2c2769f8efd9abc2";
    const PY_ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
    // The sample only prints its plaintext. This is what it decrypts to (lines joined by
    // "\n", no trailing newline); third-party ports' test suites assert the same text.
    const PY_PLAIN: &str = "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n\
<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n\
<CreateTime>1409735668</CreateTime>\n\
<MsgType><![CDATA[text]]></MsgType>\n\
<Content><![CDATA[abcdteT]]></Content>\n\
<MsgId>6054768590064713728</MsgId>\n\
</xml>";

    // C++ sample (Sample.cpp), as vendored in github.com/rdxz/FE11, file
    // SampleCode/C++/src/Sample.cpp: token "spamtest", appid "wx2c2769f8efd9abc2",
    // timestamp "1410349438", nonce "298025754", msg_signature
    // "003fee52ecc56afb46c00b5c7721be87860ce785" (checked in signature.rs).
    const CPP_ENCRYPT: &str = "mfBCs65c67CeJw22u4VT2TD73q5H06+ocrAIxswCaeZ/d/Lw0msSZFHY0teqgSYiI1zR2gD2DKrB3TIrmX/liNSDrGqS8jSI/WPeKB5VPr7Ezr7gomZAyGCwJSgT1TRFWPfONGJMxuj2nk4faTuspAuVIFQ6SHwZuJBZC7mcJp7Cgr9cUhATQWDbOPaE7ukZBTV2YqyzH+UI2AK+J1S47cE79k1RX8t0hcTz/O0hlK8DGXKnvYv88qKQcI7z4iaajqHfRVZKBNyOODabs+It+ZfM3dWTeFcPgDbGtIEnpt/EDtuuA/zMvtkaKdHdswPnVZQ+xdwbYr3ldGvfT8HlEYEgkgKaThxTFobVlwzu2ZkXCjicbP3xdr15Iq48ObgzPpqYuZ3IEoyggZDKClquk0u0orMck4GTF/XyE8yGzc4=";
    // The C++ sample only prints its plaintext; this is what it decrypts to, and what
    // third-party ports' tests assert (same user and text as the Python sample, but
    // CreateTime 1410349438 and another MsgId).
    const CPP_PLAIN: &str = "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n\
<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n\
<CreateTime>1410349438</CreateTime>\n\
<MsgType><![CDATA[text]]></MsgType>\n\
<Content><![CDATA[abcdteT]]></Content>\n\
<MsgId>6057404712141979648</MsgId>\n\
</xml>";

    // Java sample's unit test (WXBizMsgCryptTest.java, testAesEncrypt/testAesEncrypt2:
    // fixed randomStr, exact expected ciphertext), as vendored in
    // github.com/bys-ray-zhang/wechat, file src/com/qq/weixin/mp/aes/WXBizMsgCryptTest.java.
    const JAVA_APP_ID: &str = "wxb11529c136998cb6";
    const JAVA_RANDOM: &[u8; 16] = b"aaaabbbbccccdddd";
    const JAVA_REPLY: &str = "我是中文abcd123";
    const JAVA_ENCRYPTED: &str =
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";
    const JAVA_REPLY2: &str = "<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]></Description></Video></xml>";
    const JAVA_ENCRYPTED2: &str = "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb";

    // Java sample's unit test testVerifyUrl (same file as above): token "QDG6eK",
    // timestamp "1409659589", nonce "263014780", msg_signature
    // "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3" (checked in signature.rs). The test only
    // asserts that verifyUrl succeeds; the echostr decrypts to the number below.
    const URL_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const URL_APP_ID: &str = "wx5823bf96d3bd56c7";
    const URL_ECHOSTR: &str =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
    const URL_PLAIN: &str = "1616140317555161061";

    fn cipher(app_id: &str) -> Cipher {
        Cipher::new(SAMPLE_KEY, app_id).unwrap()
    }

    /// Encrypts an already padded plaintext with the raw cipher, bypassing the framing
    /// and padding of `encrypt_with`, to build malformed payloads.
    fn seal_raw(cipher: &Cipher, plain: &[u8]) -> String {
        assert_eq!(
            plain.len() % AES_BLOCK,
            0,
            "raw plaintext must be block-aligned"
        );
        STANDARD.encode(
            cipher
                .encryptor()
                .encrypt_padded_vec_mut::<NoPadding>(plain),
        )
    }

    /// Frames `xml` + `app_id` behind a 16-byte random prefix and a length prefix of
    /// `claimed` bytes, without padding.
    fn frame(claimed: u32, xml: &[u8], app_id: &[u8]) -> Vec<u8> {
        let mut plain = vec![7u8; RANDOM_LEN];
        plain.extend_from_slice(&claimed.to_be_bytes());
        plain.extend_from_slice(xml);
        plain.extend_from_slice(app_id);
        plain
    }

    fn pad_to(mut plain: Vec<u8>, block: usize) -> Vec<u8> {
        let pad = block - plain.len() % block;
        plain.resize(plain.len() + pad, pad as u8);
        plain
    }

    #[test]
    fn decrypts_the_python_sample_vector() {
        let xml = cipher(PY_APP_ID).decrypt(PY_ENCRYPT).unwrap();
        assert_eq!(String::from_utf8(xml).unwrap(), PY_PLAIN);
    }

    #[test]
    fn decrypts_the_cpp_sample_vector() {
        let xml = cipher(PY_APP_ID).decrypt(CPP_ENCRYPT).unwrap();
        assert_eq!(String::from_utf8(xml).unwrap(), CPP_PLAIN);
    }

    #[test]
    fn decrypts_the_java_verify_url_vector() {
        let c = Cipher::new(URL_KEY, URL_APP_ID).unwrap();
        assert_eq!(c.decrypt(URL_ECHOSTR).unwrap(), URL_PLAIN.as_bytes());
    }

    #[test]
    fn encrypt_with_reproduces_the_java_test_vectors() {
        let c = cipher(JAVA_APP_ID);
        let random = *JAVA_RANDOM;
        assert_eq!(
            c.encrypt_with(JAVA_REPLY.as_bytes(), random),
            JAVA_ENCRYPTED
        );
        assert_eq!(
            c.encrypt_with(JAVA_REPLY2.as_bytes(), random),
            JAVA_ENCRYPTED2
        );
        assert_eq!(c.decrypt(JAVA_ENCRYPTED).unwrap(), JAVA_REPLY.as_bytes());
        assert_eq!(c.decrypt(JAVA_ENCRYPTED2).unwrap(), JAVA_REPLY2.as_bytes());
    }

    #[test]
    fn encrypt_with_fixed_random_round_trips() {
        let c = cipher("wx0123456789abcdef");
        for len in [0usize, 1, 11, 12, 13, 43, 44, 45, 300] {
            let xml = vec![b'x'; len];
            let sealed = c.encrypt_with(&xml, [9; 16]);
            assert_eq!(sealed, c.encrypt_with(&xml, [9; 16]), "len {len}");
            assert_eq!(STANDARD.decode(&sealed).unwrap().len() % PAD_BLOCK, 0);
            assert_eq!(c.decrypt(&sealed).unwrap(), xml, "len {len}");
        }
    }

    #[test]
    fn encrypt_uses_fresh_random_bytes_and_round_trips() {
        let c = cipher(PY_APP_ID);
        let first = c.encrypt(PY_PLAIN.as_bytes());
        let second = c.encrypt(PY_PLAIN.as_bytes());
        assert_ne!(first, second);
        assert_eq!(c.decrypt(&first).unwrap(), PY_PLAIN.as_bytes());
        assert_eq!(c.decrypt(&second).unwrap(), PY_PLAIN.as_bytes());
    }

    #[test]
    fn wrong_app_id_is_a_mismatch_naming_the_received_id() {
        let err = cipher("wx0000000000000000")
            .decrypt(PY_ENCRYPT)
            .unwrap_err();
        assert_eq!(
            err,
            CryptoError::AppIdMismatch {
                received: format!("`{PY_APP_ID}`")
            }
        );
        assert!(err.to_string().contains(PY_APP_ID));
    }

    #[test]
    fn app_id_mismatch_never_echoes_message_bytes() {
        // A zero length prefix turns the whole message into the "AppID".
        let c = cipher(PY_APP_ID);
        let plain = pad_to(frame(0, b"<xml>secret</xml>", PY_APP_ID.as_bytes()), 32);
        let err = c.decrypt(&seal_raw(&c, &plain)).unwrap_err();
        assert!(matches!(err, CryptoError::AppIdMismatch { .. }));
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn bad_base64_is_rejected() {
        let c = cipher(PY_APP_ID);
        assert_eq!(c.decrypt("not base64!"), Err(CryptoError::BadBase64));
        assert_eq!(c.decrypt("hyzA e4Oz"), Err(CryptoError::BadBase64));
    }

    #[test]
    fn surrounding_whitespace_and_missing_padding_are_tolerated() {
        let c = cipher(PY_APP_ID);
        let padded = c.decrypt(&format!("\n  {PY_ENCRYPT} \n")).unwrap();
        assert_eq!(padded, PY_PLAIN.as_bytes());
        let unpadded = c.decrypt(PY_ENCRYPT.trim_end_matches('=')).unwrap();
        assert_eq!(unpadded, PY_PLAIN.as_bytes());
    }

    #[test]
    fn truncated_ciphertext_is_a_bad_length() {
        let c = cipher(PY_APP_ID);
        let bytes = STANDARD.decode(PY_ENCRYPT).unwrap();
        let cut = STANDARD.encode(&bytes[..bytes.len() - 5]);
        assert_eq!(
            c.decrypt(&cut),
            Err(CryptoError::BadLength(bytes.len() - 5))
        );
        assert_eq!(c.decrypt(""), Err(CryptoError::BadLength(0)));
        // Cut on a block boundary, the last block's padding no longer checks out.
        let cut = STANDARD.encode(&bytes[..bytes.len() - 16]);
        assert_eq!(c.decrypt(&cut), Err(CryptoError::BadPadding));
    }

    #[test]
    fn tampered_padding_is_rejected() {
        let c = cipher(PY_APP_ID);
        let good = pad_to(frame(5, b"<xml>", PY_APP_ID.as_bytes()), 32);
        assert_eq!(c.decrypt(&seal_raw(&c, &good)).unwrap(), b"<xml>");

        let pad = usize::from(*good.last().unwrap());
        assert!(pad >= 2, "the test needs at least two padding bytes");
        let mut uneven = good.clone();
        let first_pad = uneven.len() - pad;
        uneven[first_pad] ^= 1;
        assert_eq!(
            c.decrypt(&seal_raw(&c, &uneven)),
            Err(CryptoError::BadPadding)
        );

        for last in [0u8, 33, 255] {
            let mut bad = good.clone();
            *bad.last_mut().unwrap() = last;
            assert_eq!(c.decrypt(&seal_raw(&c, &bad)), Err(CryptoError::BadPadding));
        }
    }

    #[test]
    fn padding_to_16_byte_blocks_is_accepted() {
        // Not what WeChat writes, but well-formed PKCS#7; the length prefix and the
        // AppID still have to check out.
        let c = cipher(PY_APP_ID);
        let plain = pad_to(frame(5, b"<xml>", PY_APP_ID.as_bytes()), 16);
        assert_ne!(plain.len() % 32, 0);
        assert_eq!(c.decrypt(&seal_raw(&c, &plain)).unwrap(), b"<xml>");
    }

    #[test]
    fn length_prefix_past_the_end_is_rejected() {
        let c = cipher(PY_APP_ID);
        // 5 bytes of XML and an 18-byte AppID: 23 is the whole rest, 24 is one too many.
        for claimed in [24, 1000, u32::MAX] {
            let plain = pad_to(frame(claimed, b"<xml>", PY_APP_ID.as_bytes()), 32);
            assert_eq!(
                c.decrypt(&seal_raw(&c, &plain)),
                Err(CryptoError::BadLengthPrefix),
                "claimed {claimed}"
            );
        }
        // Too short to even hold the random bytes and the prefix.
        let short = pad_to(vec![1u8; 10], 16);
        assert_eq!(
            c.decrypt(&seal_raw(&c, &short)),
            Err(CryptoError::BadLengthPrefix)
        );
    }

    #[test]
    fn non_utf8_message_is_rejected() {
        let c = cipher(PY_APP_ID);
        let plain = pad_to(frame(2, &[0xff, 0xfe], PY_APP_ID.as_bytes()), 32);
        assert_eq!(c.decrypt(&seal_raw(&c, &plain)), Err(CryptoError::NotUtf8));
    }

    #[test]
    fn a_42_character_key_is_refused_without_echoing_it() {
        let key = &SAMPLE_KEY[..42];
        let err = Cipher::new(key, PY_APP_ID).unwrap_err();
        assert_eq!(err, KeyError::Length(42));
        let shown = err.to_string();
        assert!(!shown.contains(key), "{shown}");
        assert!(!shown.contains("abcdefgh"), "{shown}");
    }

    #[test]
    fn a_non_base64_key_is_refused_without_echoing_it() {
        for key in [
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF=",
            "abcdefghijklmnopqrstuvwxyz-123456789ABCDEFG",
        ] {
            let err = Cipher::new(key, PY_APP_ID).unwrap_err();
            assert!(matches!(err, KeyError::NotBase64 { .. }), "{key}: {err:?}");
            let shown = err.to_string();
            assert!(!shown.contains(key), "{shown}");
            assert!(!shown.contains("abcdefgh"), "{shown}");
        }
        // 43 characters, but not 43 bytes.
        let err = Cipher::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF密", "wx").unwrap_err();
        assert_eq!(err, KeyError::NotBase64 { position: 43 });
    }

    #[test]
    fn debug_shows_the_app_id_but_not_the_key() {
        let c = cipher(PY_APP_ID);
        let shown = format!("{c:?}");
        assert!(shown.contains(PY_APP_ID), "{shown}");
        assert!(!shown.contains("key"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &c.key[..4])), "{shown}");
        assert_eq!(c.app_id(), PY_APP_ID);
    }
}
