//! `sha1(sorted([token, timestamp, nonce(, encrypt)]).join(""))`, as hex, and its
//! constant-time check.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Why a request's signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing query parameter `{0}`")]
    Missing(&'static str),
    #[error("signature does not match")]
    Mismatch,
}

/// Signs the given parts the way WeChat does: sort them, join them, SHA-1, lowercase hex.
pub fn sign(parts: &[&str]) -> String {
    hex::encode(digest(parts))
}

/// The SHA-1 of the parts, sorted and joined.
fn digest(parts: &[&str]) -> [u8; 20] {
    let mut sorted: Vec<&str> = parts.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Checks `given` (hex, any case) against the signature of `parts`, in constant time. The
/// digests are compared as bytes: no string is made (writing the expected hex and lowering
/// the given one were 1,300 instructions of every push).
pub fn verify_signature(given: &str, parts: &[&str]) -> Result<(), SignatureError> {
    let mut given_digest = [0u8; 20];
    // Not 40 hex digits: no signature of ours. (Its length is no secret.)
    hex::decode_to_slice(given.trim(), &mut given_digest).map_err(|_| SignatureError::Mismatch)?;
    if bool::from(digest(parts).ct_eq(&given_digest)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_parts_does_not_matter() {
        assert_eq!(sign(&["b", "a", "c"]), sign(&["c", "b", "a"]));
        assert_eq!(
            sign(&["a", "b", "c"]),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn wrong_nonce_is_a_mismatch() {
        let good = sign(&["token", "1409304348", "nonce"]);
        assert_eq!(
            verify_signature(&good, &["token", "1409304348", "other"]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature("", &["token", "1", "n"]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_signature_that_is_not_forty_hex_digits_is_a_mismatch_and_spaces_around_it_are_not() {
        let parts = ["token", "1409304348", "nonce"];
        let good = sign(&parts);
        assert_eq!(verify_signature(&format!(" {good}\n"), &parts), Ok(()));
        let not_hex = format!("{}zz", &good[..38]);
        let short = &good[..39];
        let long = format!("{good}0");
        let inner_space = format!("{} {}", &good[..20], &good[20..]);
        for bad in [not_hex.as_str(), short, &long, &inner_space, "\u{4e2d}"] {
            assert_eq!(
                verify_signature(bad, &parts),
                Err(SignatureError::Mismatch),
                "{bad:?}"
            );
        }
    }

    // WeChat's official sample vectors for `msg_signature = sign([token, timestamp, nonce,
    // Encrypt])`, the same payloads that crypto::aes's tests decrypt. Sources:
    // - Python sample Sample.py, as vendored in github.com/Abdurihim/weixin_encodingAES
    //   (file Sample.py): token "spamtest", timestamp "1409735669", nonce "1320562132".
    // - C++ sample, as vendored in github.com/rdxz/FE11 (file SampleCode/C++/src/Sample.cpp):
    //   token "spamtest", timestamp "1410349438", nonce "298025754".
    // - Java sample's WXBizMsgCryptTest.testVerifyUrl, as vendored in
    //   github.com/bys-ray-zhang/wechat (file src/com/qq/weixin/mp/aes/WXBizMsgCryptTest.java):
    //   token "QDG6eK", timestamp "1409659589", nonce "263014780", signed over the echostr.
    const PY_ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
    const CPP_ENCRYPT: &str = "mfBCs65c67CeJw22u4VT2TD73q5H06+ocrAIxswCaeZ/d/Lw0msSZFHY0teqgSYiI1zR2gD2DKrB3TIrmX/liNSDrGqS8jSI/WPeKB5VPr7Ezr7gomZAyGCwJSgT1TRFWPfONGJMxuj2nk4faTuspAuVIFQ6SHwZuJBZC7mcJp7Cgr9cUhATQWDbOPaE7ukZBTV2YqyzH+UI2AK+J1S47cE79k1RX8t0hcTz/O0hlK8DGXKnvYv88qKQcI7z4iaajqHfRVZKBNyOODabs+It+ZfM3dWTeFcPgDbGtIEnpt/EDtuuA/zMvtkaKdHdswPnVZQ+xdwbYr3ldGvfT8HlEYEgkgKaThxTFobVlwzu2ZkXCjicbP3xdr15Iq48ObgzPpqYuZ3IEoyggZDKClquk0u0orMck4GTF/XyE8yGzc4=";
    const URL_ECHOSTR: &str =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";

    #[test]
    fn msg_signature_matches_the_official_samples() {
        let cases: [([&str; 4], &str); 3] = [
            (
                ["spamtest", "1409735669", "1320562132", PY_ENCRYPT],
                "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
            ),
            (
                ["spamtest", "1410349438", "298025754", CPP_ENCRYPT],
                "003fee52ecc56afb46c00b5c7721be87860ce785",
            ),
            (
                ["QDG6eK", "1409659589", "263014780", URL_ECHOSTR],
                "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
            ),
        ];
        for (parts, expected) in cases {
            assert_eq!(sign(&parts), expected);
            assert_eq!(verify_signature(expected, &parts), Ok(()));
            assert_eq!(
                verify_signature(&expected.to_ascii_uppercase(), &parts),
                Ok(())
            );
        }
    }
}
