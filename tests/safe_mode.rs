//! Safe mode (安全模式) and compatible mode (兼容模式) through the real App. Requests are
//! sealed and replies opened by `wechat`, an AES-256-CBC implementation written here on
//! the `aes`, `cbc` and `base64` crates, never `wxrules::crypto`: a mistake the server's
//! cipher shares with its own round-trip tests cannot pass here unnoticed.

mod common;

use common::*;
use wxrules::accounts::Secrets;
use wxrules::server::Options;
use wxrules::wire::Message;

/// The official samples' EncodingAESKey and AppID.
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";
/// The account the pushes are for (`ToUserName`).
const ACCOUNT: &str = "gh_10f6c3c3ac5a";
const USER: &str = "oUserOpenId123";
const NONCE: &str = "1320562132";

/// WeChat's framing, written from the contract: `base64(AES-256-CBC(key, iv = key[..16],
/// random16 ‖ len_be32 ‖ xml ‖ app_id ‖ PKCS#7 to 32 bytes))`, key =
/// `base64(EncodingAESKey + "=")`.
mod wechat {
    use aes::Aes256;
    use base64::alphabet;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
    use base64::Engine as _;
    use cbc::cipher::block_padding::NoPadding;
    use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};

    /// 43 characters carry 258 bits: the console's keys (and the samples', ending in `G`)
    /// have non-zero spare bits, which WeChat's SDKs ignore.
    const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );

    pub(crate) fn key(encoding_aes_key: &str) -> [u8; 32] {
        let bytes = KEY_BASE64
            .decode(format!("{encoding_aes_key}="))
            .expect("EncodingAESKey is base64");
        bytes
            .try_into()
            .expect("EncodingAESKey decodes to 32 bytes")
    }

    /// `random16 ‖ claimed length (big-endian) ‖ xml ‖ app_id`, unpadded.
    pub(crate) fn frame(random: [u8; 16], claimed: u32, xml: &[u8], app_id: &str) -> Vec<u8> {
        let mut plain = random.to_vec();
        plain.extend_from_slice(&claimed.to_be_bytes());
        plain.extend_from_slice(xml);
        plain.extend_from_slice(app_id.as_bytes());
        plain
    }

    /// PKCS#7 to 32-byte blocks: 1..=32 bytes, each holding the count.
    pub(crate) fn pad32(mut plain: Vec<u8>) -> Vec<u8> {
        let pad = 32 - plain.len() % 32;
        plain.resize(plain.len() + pad, pad as u8);
        plain
    }

    /// Encrypts a block-aligned plaintext as is (no padding added) and base64-encodes it.
    pub(crate) fn seal_raw(encoding_aes_key: &str, plain: &[u8]) -> String {
        assert_eq!(plain.len() % 16, 0, "raw plaintext must be block-aligned");
        let key = key(encoding_aes_key);
        let iv: [u8; 16] = key[..16].try_into().expect("32-byte key");
        let ciphertext = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into())
            .encrypt_padded_vec_mut::<NoPadding>(plain);
        STANDARD.encode(ciphertext)
    }

    /// Seals `xml` for `app_id` as WeChat does, with the given random prefix.
    pub(crate) fn encrypt_with(
        xml: &str,
        app_id: &str,
        encoding_aes_key: &str,
        random: [u8; 16],
    ) -> String {
        let claimed = u32::try_from(xml.len()).expect("message under 4 GiB");
        let plain = pad32(frame(random, claimed, xml.as_bytes(), app_id));
        seal_raw(encoding_aes_key, &plain)
    }

    /// Seals `xml` for `app_id` with 16 fresh random bytes.
    pub(crate) fn encrypt(xml: &str, app_id: &str, encoding_aes_key: &str) -> String {
        encrypt_with(xml, app_id, encoding_aes_key, rand::random())
    }

    /// An opened payload: every part of the framing, for the test to check.
    #[derive(Debug)]
    pub(crate) struct Opened {
        pub(crate) random: [u8; 16],
        pub(crate) xml: String,
        pub(crate) app_id: String,
    }

    /// Opens a payload strictly: whole 32-byte blocks, PKCS#7 with every padding byte
    /// checked, a length prefix inside the payload, UTF-8 message and AppID.
    pub(crate) fn decrypt(encrypt: &str, encoding_aes_key: &str) -> Result<Opened, String> {
        let ciphertext = STANDARD
            .decode(encrypt)
            .map_err(|e| format!("base64: {e}"))?;
        if ciphertext.is_empty() || ciphertext.len() % 32 != 0 {
            return Err(format!(
                "ciphertext of {} bytes is not whole 32-byte blocks",
                ciphertext.len()
            ));
        }
        let key = key(encoding_aes_key);
        let iv: [u8; 16] = key[..16].try_into().expect("32-byte key");
        let plain = cbc::Decryptor::<Aes256>::new(&key.into(), &iv.into())
            .decrypt_padded_vec_mut::<NoPadding>(&ciphertext)
            .map_err(|e| format!("cbc: {e}"))?;
        let pad = usize::from(*plain.last().expect("not empty"));
        if !(1..=32).contains(&pad) || plain[plain.len() - pad..].iter().any(|&b| b != pad as u8) {
            return Err(format!("bad PKCS#7 padding (last byte {pad})"));
        }
        let plain = &plain[..plain.len() - pad];
        if plain.len() < 20 {
            return Err("too short for the random bytes and the length".into());
        }
        let claimed = u32::from_be_bytes(plain[16..20].try_into().expect("4 bytes")) as usize;
        let end = 20 + claimed;
        if end > plain.len() {
            return Err(format!("length prefix {claimed} past the end"));
        }
        Ok(Opened {
            random: plain[..16].try_into().expect("16 bytes"),
            xml: String::from_utf8(plain[20..end].to_vec()).map_err(|e| e.to_string())?,
            app_id: String::from_utf8(plain[end..].to_vec()).map_err(|e| e.to_string())?,
        })
    }
}

/// The text of `<name>` in a flat XML document, without its CDATA wrapper.
fn field<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let text = &xml[start..start + len];
    Some(
        text.strip_prefix("<![CDATA[")
            .and_then(|t| t.strip_suffix("]]>"))
            .unwrap_or(text),
    )
}

/// A safe-mode body as WeChat sends it: the account and the sealed message only.
fn safe_body(encrypt: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
}

/// A compatible-mode body: the plain message's fields plus `Encrypt`.
fn compatible_body(plain_xml: &str, encrypt: &str) -> String {
    let end = plain_xml
        .rfind("</xml>")
        .expect("a message ends with </xml>");
    format!(
        "{}<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n</xml>",
        &plain_xml[..end]
    )
}

/// The query of an encrypted push: both signatures, as WeChat sends them.
fn safe_query_with(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    format!(
        "signature={}&timestamp={timestamp}&nonce={nonce}&openid={USER}&encrypt_type=aes&msg_signature={}",
        sign(&[token, timestamp, nonce]),
        sign(&[token, timestamp, nonce, encrypt]),
    )
}

fn safe_query(encrypt: &str) -> String {
    safe_query_with(TOKEN, &NOW.to_string(), NONCE, encrypt)
}

/// A text message from `USER` to `ACCOUNT`.
fn text_message(content: &str) -> String {
    fixture("msg_text")
        .replace("<![CDATA[toUser]]>", &format!("<![CDATA[{ACCOUNT}]]>"))
        .replace("<![CDATA[fromUser]]>", &format!("<![CDATA[{USER}]]>"))
        .replace(
            "<![CDATA[this is a test]]>",
            &format!("<![CDATA[{content}]]>"),
        )
}

fn subscribe_message() -> String {
    fixture("event_subscribe")
        .replace("<![CDATA[toUser]]>", &format!("<![CDATA[{ACCOUNT}]]>"))
        .replace("<![CDATA[FromUser]]>", &format!("<![CDATA[{USER}]]>"))
}

fn keyed_state() -> wxrules::server::AppState {
    state_for(
        shipped(),
        Secrets::new(TOKEN, Some((AES_KEY, APP_ID))).expect("valid secrets"),
        Options::default(),
    )
}

fn keyless_state() -> wxrules::server::AppState {
    state_for(
        shipped(),
        Secrets::new(TOKEN, None).expect("valid token"),
        Options::default(),
    )
}

/// A safe-mode reply, checked and opened with the test's own code.
#[derive(Debug)]
struct Opened {
    encrypt: String,
    nonce: String,
    random: [u8; 16],
    /// The inner reply XML.
    xml: String,
}

/// Checks the envelope of a safe-mode reply (exactly `Encrypt`, `MsgSignature`,
/// `TimeStamp`, `Nonce`; the signature; the time), opens it with `wechat::decrypt` and
/// checks the AppID trailer.
fn open_reply(body: &str, token: &str, app_id: &str) -> Opened {
    assert!(
        body.starts_with("<xml>") && body.ends_with("</xml>"),
        "not an envelope: {body}"
    );
    let encrypt = field(body, "Encrypt").expect("Encrypt in the reply");
    let signature = field(body, "MsgSignature").expect("MsgSignature in the reply");
    let timestamp = field(body, "TimeStamp").expect("TimeStamp in the reply");
    let nonce = field(body, "Nonce").expect("Nonce in the reply");
    for absent in ["ToUserName", "FromUserName", "MsgType", "Content"] {
        assert!(
            field(body, absent).is_none(),
            "{absent} leaked in clear: {body}"
        );
    }
    assert_eq!(timestamp, NOW.to_string(), "TimeStamp is the clock's now");
    assert!(!nonce.is_empty(), "empty Nonce");
    assert_eq!(
        signature,
        sign(&[token, timestamp, nonce, encrypt]),
        "MsgSignature = sha1(sorted([token, TimeStamp, Nonce, Encrypt]))"
    );
    let opened = wechat::decrypt(encrypt, AES_KEY)
        .unwrap_or_else(|e| panic!("reply does not decrypt: {e}\n{body}"));
    assert_eq!(opened.app_id, app_id, "AppID trailer");
    Opened {
        encrypt: encrypt.to_owned(),
        nonce: nonce.to_owned(),
        random: opened.random,
        xml: opened.xml,
    }
}

/// Checks a passive text reply to a message from `USER` to `ACCOUNT`.
fn assert_text_reply(xml: &str, content_has: &str) {
    let reply = Message::parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}: {xml}"));
    assert_eq!(reply.to_user(), USER, "To and From swap: {xml}");
    assert_eq!(reply.from_user(), ACCOUNT, "To and From swap: {xml}");
    assert_eq!(reply.create_time(), NOW, "{xml}");
    assert_eq!(reply.msg_type(), "text", "{xml}");
    let content = reply.text("Content").unwrap_or_default();
    assert!(
        content.contains(content_has),
        "{content_has:?} not in {content:?}"
    );
}

// The official Python sample (Sample.py, Tencent 2014): token "spamtest", the samples'
// EncodingAESKey and AppID, and its msg_signature over this Encrypt.
const PY_TOKEN: &str = "spamtest";
const PY_TIMESTAMP: &str = "1409735669";
const PY_NONCE: &str = "1320562132";
const PY_MSG_SIGNATURE: &str = "5d197aaffba7e9b25a30732f161a50dee96bd5fa";
const PY_ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
const PY_PLAIN: &str = "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n\
<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n\
<CreateTime>1409735668</CreateTime>\n\
<MsgType><![CDATA[text]]></MsgType>\n\
<Content><![CDATA[abcdteT]]></Content>\n\
<MsgId>6054768590064713728</MsgId>\n\
</xml>";

// The Java sample's WXBizMsgCryptTest.testAesEncrypt: same EncodingAESKey, a fixed random
// prefix, and the exact expected ciphertext.
const JAVA_APP_ID: &str = "wxb11529c136998cb6";
const JAVA_RANDOM: [u8; 16] = *b"aaaabbbbccccdddd";
const JAVA_REPLY: &str = "我是中文abcd123";
const JAVA_ENCRYPTED: &str =
    "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";

#[test]
fn the_test_cipher_reproduces_the_official_vectors() {
    // Without this, the round trips below could pass on a mistake shared by both sides.
    let opened = wechat::decrypt(PY_ENCRYPT, AES_KEY).unwrap();
    assert_eq!(opened.xml, PY_PLAIN);
    assert_eq!(opened.app_id, APP_ID);
    assert_eq!(
        wechat::encrypt_with(JAVA_REPLY, JAVA_APP_ID, AES_KEY, JAVA_RANDOM),
        JAVA_ENCRYPTED
    );
    assert_eq!(
        sign(&[PY_TOKEN, PY_TIMESTAMP, PY_NONCE, PY_ENCRYPT]),
        PY_MSG_SIGNATURE
    );
}

#[actix_web::test]
async fn safe_mode_text_round_trip() {
    let app = app(keyed_state()).await;
    let encrypt = wechat::encrypt(&text_message("价格"), APP_ID, AES_KEY);
    let req = actix_web::test::TestRequest::post()
        .uri(&format!("/wechat?{}", safe_query(&encrypt)))
        .insert_header(("content-type", "text/xml"))
        .set_payload(safe_body(&encrypt))
        .to_request();
    let resp = actix_web::test::call_service(&app, req).await;
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.contains("xml"), "{content_type}");
    let body = String::from_utf8(actix_web::test::read_body(resp).await.to_vec()).unwrap();

    let opened = open_reply(&body, TOKEN, APP_ID);
    // Rule `price`: its template, sent back to the user.
    assert_text_reply(&opened.xml, "本周价格：\n· 标准版 ¥99/月");
}

#[actix_web::test]
async fn safe_mode_subscribe_round_trip() {
    let app = app(keyed_state()).await;
    let encrypt = wechat::encrypt(&subscribe_message(), APP_ID, AES_KEY);
    let (status, body) = post(&app, &safe_query(&encrypt), safe_body(&encrypt)).await;
    assert_eq!(status, 200, "{body}");
    let opened = open_reply(&body, TOKEN, APP_ID);
    // Rule `welcome`.
    assert_text_reply(
        &opened.xml,
        "欢迎关注！回复「价格」查看本周价格，回复「帮助」查看全部功能。",
    );
}

#[actix_web::test]
async fn safe_mode_ignored_push_answers_plain_success() {
    let app = app(keyed_state()).await;
    // Rule `unsubscribe` says `ignore: true`: nothing to encrypt, `success` is the answer.
    let unsubscribe = subscribe_message().replace("subscribe", "unsubscribe");
    let encrypt = wechat::encrypt(&unsubscribe, APP_ID, AES_KEY);
    let (status, body) = post(&app, &safe_query(&encrypt), safe_body(&encrypt)).await;
    assert_eq!((status, body.as_str()), (200, "success"));
}

#[actix_web::test]
async fn compatible_mode_round_trip_answers_encrypted() {
    let app = app(keyed_state()).await;
    let xml = text_message("价格");
    let encrypt = wechat::encrypt(&xml, APP_ID, AES_KEY);
    let (status, body) = post(&app, &safe_query(&encrypt), compatible_body(&xml, &encrypt)).await;
    assert_eq!(status, 200, "{body}");
    let opened = open_reply(&body, TOKEN, APP_ID);
    assert_text_reply(&opened.xml, "· 专业版 ¥199/月");
}

#[actix_web::test]
async fn compatible_mode_answers_the_signed_payload_not_the_plain_fields() {
    // msg_signature covers Encrypt; nothing signs the plain fields. When they disagree the
    // answer must come from the payload.
    let app = app(keyed_state()).await;
    let encrypt = wechat::encrypt(&text_message("价格"), APP_ID, AES_KEY);
    let body = compatible_body(&text_message("帮助"), &encrypt);
    let (status, body) = post(&app, &safe_query(&encrypt), body).await;
    assert_eq!(status, 200, "{body}");
    let opened = open_reply(&body, TOKEN, APP_ID);
    assert_text_reply(&opened.xml, "本周价格：");
}

#[actix_web::test]
async fn two_replies_to_one_message_use_fresh_nonce_and_random_bytes() {
    let app = app(keyed_state()).await;
    let encrypt = wechat::encrypt(&text_message("价格"), APP_ID, AES_KEY);
    let mut replies = Vec::new();
    for _ in 0..2 {
        let (status, body) = post(&app, &safe_query(&encrypt), safe_body(&encrypt)).await;
        assert_eq!(status, 200, "{body}");
        replies.push(open_reply(&body, TOKEN, APP_ID));
    }
    let (first, second) = (&replies[0], &replies[1]);
    assert_eq!(first.xml, second.xml, "same message, same reply");
    assert_ne!(first.nonce, second.nonce, "Nonce is fresh per reply");
    assert_ne!(
        first.random, second.random,
        "random prefix is fresh per reply"
    );
    assert_ne!(first.encrypt, second.encrypt, "ciphertext differs");
    assert_ne!(first.random, [0; 16], "random prefix is not all zero");
}

#[actix_web::test]
async fn wrong_msg_signature_is_403_with_an_empty_body() {
    let app = app(keyed_state()).await;
    let encrypt = wechat::encrypt(&text_message("价格"), APP_ID, AES_KEY);
    let other = wechat::encrypt(&text_message("帮助"), APP_ID, AES_KEY);
    let ts = NOW.to_string();
    let stale = (NOW - 301).to_string();
    let cases = [
        (
            "signed with another token",
            safe_query_with("other-token", &ts, NONCE, &encrypt),
        ),
        (
            "signed over another Encrypt",
            safe_query_with(TOKEN, &ts, NONCE, &other),
        ),
        (
            "signed over another nonce",
            safe_query_with(TOKEN, &ts, NONCE, &encrypt)
                .replace(&format!("nonce={NONCE}"), "nonce=999"),
        ),
        (
            // `signature` is right, `msg_signature` is not: safe mode checks the latter.
            "good signature, forged msg_signature",
            format!(
                "signature={}&timestamp={ts}&nonce={NONCE}&encrypt_type=aes&msg_signature={}",
                sign(&[TOKEN, &ts, NONCE]),
                "0".repeat(40)
            ),
        ),
        (
            "no msg_signature",
            format!(
                "signature={}&timestamp={ts}&nonce={NONCE}&encrypt_type=aes",
                sign(&[TOKEN, &ts, NONCE])
            ),
        ),
        (
            "stale timestamp, correctly signed",
            safe_query_with(TOKEN, &stale, NONCE, &encrypt),
        ),
    ];
    for (name, query) in cases {
        let (status, body) = post(&app, &query, safe_body(&encrypt)).await;
        assert_eq!((status, body.as_str()), (403, ""), "{name}");
    }
    // The server kept serving.
    let (status, body) = post(&app, &safe_query(&encrypt), safe_body(&encrypt)).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn undecryptable_payloads_are_400_with_the_reason() {
    let app = app(keyed_state()).await;
    let xml = text_message("价格");
    let random = [7u8; 16];
    let framed =
        |claimed: u32, app_id: &str| wechat::frame(random, claimed, xml.as_bytes(), app_id);
    let whole = u32::try_from(xml.len()).unwrap();

    let mut uneven_padding = wechat::pad32(framed(whole, APP_ID));
    let pad = usize::from(*uneven_padding.last().unwrap());
    assert!(pad >= 2, "the case needs two padding bytes or more");
    let first_pad = uneven_padding.len() - pad;
    uneven_padding[first_pad] ^= 1;
    let mut zero_padding = wechat::pad32(framed(whole, APP_ID));
    *zero_padding.last_mut().unwrap() = 0;
    let mut padding_33 = wechat::pad32(framed(whole, APP_ID));
    *padding_33.last_mut().unwrap() = 33;

    // What is left after the message is the AppID: one byte more than that is past the end.
    let past_end = whole + u32::try_from(APP_ID.len()).unwrap() + 1;
    let non_utf8 = wechat::pad32(wechat::frame(random, 2, &[0xff, 0xfe], APP_ID));

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong AppID",
            wechat::encrypt(&xml, "wx0000000000000000", AES_KEY),
            "cannot decrypt: payload is for AppID `wx0000000000000000`, not the configured one",
        ),
        (
            "sealed with another key",
            wechat::encrypt(&xml, APP_ID, "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"),
            "cannot decrypt: ",
        ),
        (
            "bad base64",
            "not*base64!".to_owned(),
            "cannot decrypt: encrypted payload is not valid base64",
        ),
        (
            "ciphertext not whole blocks",
            base64_of(&[1u8; 20]),
            "cannot decrypt: ciphertext is 20 bytes, not a positive multiple of 16",
        ),
        (
            "uneven padding bytes",
            wechat::seal_raw(AES_KEY, &uneven_padding),
            "cannot decrypt: padding of the decrypted payload is invalid",
        ),
        (
            "padding byte 0",
            wechat::seal_raw(AES_KEY, &zero_padding),
            "cannot decrypt: padding of the decrypted payload is invalid",
        ),
        (
            "padding byte 33",
            wechat::seal_raw(AES_KEY, &padding_33),
            "cannot decrypt: padding of the decrypted payload is invalid",
        ),
        (
            "length prefix one past the end",
            wechat::seal_raw(AES_KEY, &wechat::pad32(framed(past_end, APP_ID))),
            "cannot decrypt: message length prefix points past the end of the decrypted payload",
        ),
        (
            "length prefix u32::MAX",
            wechat::seal_raw(AES_KEY, &wechat::pad32(framed(u32::MAX, APP_ID))),
            "cannot decrypt: message length prefix points past the end of the decrypted payload",
        ),
        (
            "shorter than random bytes and length",
            wechat::seal_raw(AES_KEY, &wechat::pad32(vec![1u8; 10])),
            "cannot decrypt: message length prefix points past the end of the decrypted payload",
        ),
        (
            "message not UTF-8",
            wechat::seal_raw(AES_KEY, &non_utf8),
            "cannot decrypt: decrypted message is not UTF-8",
        ),
        (
            "decrypts, but not a message",
            wechat::encrypt("hello", APP_ID, AES_KEY),
            "malformed XML",
        ),
        (
            "decrypts, but no MsgType",
            wechat::encrypt(
                &xml.replace("<MsgType><![CDATA[text]]></MsgType>", ""),
                APP_ID,
                AES_KEY,
            ),
            "missing required field `MsgType`",
        ),
    ];
    for (name, encrypt, reason) in &cases {
        let (status, body) = post(&app, &safe_query(encrypt), safe_body(encrypt)).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body.starts_with(reason),
            "{name}: {body:?} does not start with {reason:?}"
        );
    }

    // A zero length prefix makes the whole message the "AppID": the 400 must not echo it.
    let zero = wechat::seal_raw(AES_KEY, &wechat::pad32(framed(0, APP_ID)));
    let (status, body) = post(&app, &safe_query(&zero), safe_body(&zero)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.starts_with("cannot decrypt: payload is for AppID <"),
        "{body}"
    );
    assert!(!body.contains("价格") && !body.contains(USER), "{body}");

    // No Encrypt element at all.
    let (status, body) = post(&app, &safe_query(""), text_message("价格")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("missing required field `Encrypt`"), "{body}");

    // None of that stopped the server.
    let good = wechat::encrypt(&xml, APP_ID, AES_KEY);
    let (status, body) = post(&app, &safe_query(&good), safe_body(&good)).await;
    assert_eq!(status, 200, "{body}");
    assert_text_reply(&open_reply(&body, TOKEN, APP_ID).xml, "本周价格：");
}

#[actix_web::test]
async fn random_ciphertexts_are_400_and_never_panic() {
    let app = app(keyed_state()).await;
    // A fixed xorshift stream: the same bytes on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.to_le_bytes()[0]
    };
    for len in (1..=20).map(|n| n * 16).chain([1, 15, 17, 33, 100]) {
        let bytes: Vec<u8> = (0..len).map(|_| next()).collect();
        let encrypt = base64_of(&bytes);
        let (status, body) = post(&app, &safe_query(&encrypt), safe_body(&encrypt)).await;
        assert_eq!(status, 400, "{len} bytes: {body}");
        assert!(body.starts_with("cannot decrypt: "), "{len} bytes: {body}");
    }
}

#[actix_web::test]
async fn no_key_compatible_body_is_answered_plainly() {
    let app = app(keyless_state()).await;
    let xml = text_message("价格");
    let encrypt = wechat::encrypt(&xml, APP_ID, AES_KEY);
    let (status, body) = post(&app, &safe_query(&encrypt), compatible_body(&xml, &encrypt)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        field(&body, "Encrypt").is_none(),
        "answered plainly: {body}"
    );
    assert_text_reply(&body, "· 标准版 ¥99/月");

    // Without a key the plain `signature` is what vouches for the request.
    let ts = NOW.to_string();
    let forged = format!(
        "signature={}&timestamp={ts}&nonce={NONCE}&encrypt_type=aes&msg_signature={}",
        "0".repeat(40),
        sign(&[TOKEN, &ts, NONCE, &encrypt])
    );
    let (status, body) = post(&app, &forged, compatible_body(&xml, &encrypt)).await;
    assert_eq!((status, body.as_str()), (403, ""));
}

#[actix_web::test]
async fn no_key_safe_only_body_is_400() {
    let app = app(keyless_state()).await;
    let encrypt = wechat::encrypt(&text_message("价格"), APP_ID, AES_KEY);
    let (status, body) = post(&app, &safe_query(&encrypt), safe_body(&encrypt)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        "encrypted request, but WXRULES_AES_KEY and WXRULES_APPID are not set"
    );
}

#[actix_web::test]
async fn plaintext_push_to_a_keyed_server_is_answered_plainly() {
    let app = app(keyed_state()).await;
    let (status, body) = post(&app, &signed_query(), text_message("价格")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        field(&body, "Encrypt").is_none(),
        "answered plainly: {body}"
    );
    assert_text_reply(&body, "本周价格：");

    // And a plaintext push still needs its `signature`.
    let ts = NOW.to_string();
    let forged = format!("signature={}&timestamp={ts}&nonce={NONCE}", "0".repeat(40));
    let (status, body) = post(&app, &forged, text_message("价格")).await;
    assert_eq!((status, body.as_str()), (403, ""));
}

#[actix_web::test]
async fn the_official_python_sample_request_is_accepted_and_answered() {
    let secrets = Secrets::new(PY_TOKEN, Some((AES_KEY, APP_ID))).unwrap();
    // The sample is from 2014: only with the replay window off is it fresh.
    let options = Options {
        max_age: 0,
        ..Options::default()
    };
    let lenient = app(state_for(shipped(), secrets, options)).await;
    let query = format!(
        "signature={}&timestamp={PY_TIMESTAMP}&nonce={PY_NONCE}&openid=oyORnuP8q7ou2gfYjqLzSIWZf0rs&encrypt_type=aes&msg_signature={PY_MSG_SIGNATURE}",
        sign(&[PY_TOKEN, PY_TIMESTAMP, PY_NONCE]),
    );
    // The sample's body: `<xml><ToUserName>…</ToUserName><Encrypt>…</Encrypt></xml>`.
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n<Encrypt><![CDATA[{PY_ENCRYPT}]]></Encrypt>\n</xml>"
    );
    let (status, reply) = post(&lenient, &query, body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let opened = open_reply(&reply, PY_TOKEN, APP_ID);
    // "abcdteT" is no keyword: the shipped `to-human` rule hands it to customer service.
    let inner = Message::parse(opened.xml.as_bytes()).unwrap();
    assert_eq!(
        inner.msg_type(),
        "transfer_customer_service",
        "{}",
        opened.xml
    );
    assert_eq!(inner.to_user(), "oyORnuP8q7ou2gfYjqLzSIWZf0rs");
    assert_eq!(inner.from_user(), "gh_10f6c3c3ac5a");
    assert_eq!(inner.create_time(), NOW);

    // With the default window the same capture is a replay: refused.
    let secrets = Secrets::new(PY_TOKEN, Some((AES_KEY, APP_ID))).unwrap();
    let strict = app(state_for(shipped(), secrets, Options::default())).await;
    let (status, reply) = post(&strict, &query, body).await;
    assert_eq!((status, reply.as_str()), (403, ""));
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
