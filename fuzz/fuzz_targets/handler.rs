//! The whole request handler: the real actix App (`server::configure`, built once through
//! the integration tests' own helpers) answering `POST /wechat` with an arbitrary body
//! behind a valid signature. The first input byte picks how the body is sent:
//!
//! - 0: plaintext mode, the input is the body;
//! - 1: safe mode, the input is the outer body and `msg_signature` signs its `Encrypt`;
//! - 2: safe mode, the input is the inner XML, sealed with the account's key;
//! - 3: plaintext mode with a fixture body, the input is the `timestamp` and `nonce`.
//!
//! Every answer must be 200, 400, 403 or 413: a 5xx or a panic is a crash.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use actix_http::Request;
use actix_service::boxed::{self, BoxService};
use actix_web::dev::ServiceResponse;
use libfuzzer_sys::fuzz_target;
use wxrules::crypto::Cipher;
use wxrules::server::Options;
use wxrules::accounts::Secrets;
use wxrules::Sources;

/// The official samples' EncodingAESKey and the Python sample's AppID.
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

/// The repository root: `common::root()` is this crate's own directory here.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shipped() -> Sources {
    Sources {
        rules: repo().join("tests/data/shipped/rules.yaml"),
        templates: repo().join("tests/data/shipped/templates"),
    }
}

type App = BoxService<Request, ServiceResponse, actix_web::Error>;

struct Harness {
    runner: actix_rt::SystemRunner,
    app: App,
    cipher: Cipher,
    /// The text fixture, the body of mode 3.
    text: Vec<u8>,
}

thread_local! {
    // Leaked on purpose: at exit, thread-local destructors run in no set order, and an
    // App dropped after actix-http's own thread-local pools would panic in teardown.
    static HARNESS: &'static Harness = Box::leak(Box::new({
        let runner = actix_rt::System::new();
        let secrets = Secrets::new(common::TOKEN, Some((KEY, APP_ID))).unwrap();
        let state = common::state_for(shipped(), secrets, Options::default());
        let app = runner.block_on(async { boxed::service(common::app(state).await) });
        let text = std::fs::read(repo().join("tests/data/messages/msg_text.xml")).unwrap();
        Harness { runner, app, cipher: Cipher::new(KEY, APP_ID).unwrap(), text }
    }));
}

/// Percent-encodes every byte, so any input makes a valid URI.
fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn safe_query(encrypt: &str) -> String {
    let ts = common::NOW.to_string();
    let nonce = "1320562132";
    format!(
        "timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
        common::sign(&[common::TOKEN, &ts, nonce, encrypt])
    )
}

fn request(h: &Harness, data: &[u8]) -> (String, Vec<u8>) {
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    match mode % 4 {
        0 => (common::signed_query(), rest.to_vec()),
        1 => {
            let encrypt = wxrules::wire::parse_encrypted(rest).unwrap_or_default();
            (safe_query(&encrypt), rest.to_vec())
        }
        2 => {
            let encrypt = h.cipher.encrypt_with(rest, [7; 16]);
            let body = format!(
                "<xml><ToUserName><![CDATA[gh_1]]></ToUserName>\
                 <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            );
            (safe_query(&encrypt), body.into_bytes())
        }
        _ => {
            let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let (ts, nonce) = (&rest[..cut], rest.get(cut + 1..).unwrap_or_default());
            let signature = common::sign(&[
                common::TOKEN,
                &String::from_utf8_lossy(ts),
                &String::from_utf8_lossy(nonce),
            ]);
            let query = format!(
                "timestamp={}&nonce={}&signature={signature}",
                encode(ts),
                encode(nonce)
            );
            (query, h.text.clone())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let (query, body) = request(h, data);
        let (status, text) = h.runner.block_on(common::post(&h.app, &query, body));
        assert!(
            matches!(status, 200 | 400 | 403 | 413),
            "status {status}: {text}"
        );
    });
});
