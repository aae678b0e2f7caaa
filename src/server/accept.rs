//! A push's way in: the query's signature checked before the body is read, the body read
//! within its limits, the message verified (and decrypted in safe mode) and parsed, and the
//! replay check of a plaintext push. A refusal is counted and answered here; nothing of an
//! unsigned body is parsed or logged.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use rand::distributions::{Alphanumeric, DistString};

use super::query::{required, WechatQuery};
use super::refusal::count_refused;
use super::{body, AppState, ServiceError};
use crate::accounts::Live;
use crate::crypto::{sign, verify_signature};
use crate::store::replay::Pending;
use crate::wire::{self, Message};

/// Whether the query's `signature` (and timestamp) was checked before the body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryCheck {
    Done,
    /// A safe-mode push without `signature`: only `msg_signature`, over the body, can tell.
    Pending,
}

/// How the request came, and so how the answer goes back.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wrapping {
    Plain,
    Safe,
}

/// Checks the query, reads the body and decodes the message, or answers the refusal
/// (counted, and logged within the rate limit). With Redis, a plaintext push's replay
/// check is returned to be made with the dedup claim.
pub(super) async fn accept(
    state: &AppState,
    live: &Live,
    req: &HttpRequest,
    payload: web::Payload,
    started: Instant,
) -> Result<(Message, Wrapping, Option<Pending>), HttpResponse> {
    // The query's signature is checked before the body is read whenever the query has one
    // (always in plaintext mode; WeChat adds it in safe mode too): a client that cannot
    // sign is answered 403 at once, and cannot hold the connection by sending its body
    // slowly. Safe mode's `msg_signature` covers the body, so is checked after it.
    let checked = WechatQuery::parse(req.query_string()).and_then(|query| {
        let checked = if query.signature.is_some() || query.encrypt_type.as_deref() != Some("aes") {
            state.verify_plain(live, &query)?;
            QueryCheck::Done
        } else {
            QueryCheck::Pending
        };
        Ok((query, checked))
    });
    let (query, checked) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            count_refused(state, Some(live), &e);
            return Err(body::refuse_unread(&e, req, payload));
        }
    };
    let mut payload = payload;
    let body = match body::read(state, req, &mut payload, started).await {
        Ok(body) => body,
        Err(e) => {
            // Over the size limit (413), too slow (408), or a broken upload (400).
            count_refused(state, Some(live), &e);
            return Err(body::refuse_unread(&e, req, payload));
        }
    };
    let refuse = |e: ServiceError| refused(state, live, &e);
    let (message, wrapping) = decode(state, live, &query, checked, &body).map_err(refuse)?;
    // The body of a plaintext push is not signed: its query must not have come with
    // another one (one hash of the body, one memory insert; with Redis, made with the
    // dedup claim).
    let replay = match wrapping {
        Wrapping::Plain => state
            .check_replay(live, &query, &body)
            .await
            .map_err(refuse)?,
        Wrapping::Safe => None,
    };
    Ok((message, wrapping, replay))
}

/// A refusal after the body was read: counted, logged within the rate limit, answered.
pub(super) fn refused(state: &AppState, live: &Live, e: &ServiceError) -> HttpResponse {
    count_refused(state, Some(live), e);
    e.error_response()
}

/// Verifies the request and turns its body into a message.
fn decode(
    state: &AppState,
    account: &Live,
    q: &WechatQuery,
    checked: QueryCheck,
    body: &[u8],
) -> Result<(Message, Wrapping), ServiceError> {
    let verify_plain = || match checked {
        QueryCheck::Done => Ok(()),
        QueryCheck::Pending => state.verify_plain(account, q),
    };
    let safe = q.encrypt_type.as_deref() == Some("aes");
    let cipher = match (safe, account.secrets.cipher()) {
        (false, _) => None,
        (true, Some(cipher)) => Some(cipher),
        (true, None) => {
            // Compatible mode also carries the plain fields: answer those plainly rather
            // than lose the message; a safe-mode-only body cannot be read.
            verify_plain()?;
            return match Message::parse(body) {
                Ok(m) => {
                    tracing::warn!(event = "encrypted_without_key", "answering the plain fields of a compatible-mode push; set WXRULES_AES_KEY to answer encrypted");
                    Ok((m, Wrapping::Plain))
                }
                Err(_) => Err(ServiceError::NoKey),
            };
        }
    };
    let Some(cipher) = cipher else {
        verify_plain()?;
        return Ok((Message::parse(body)?, Wrapping::Plain));
    };
    let timestamp = required(&q.timestamp, "timestamp")?;
    let nonce = required(&q.nonce, "nonce")?;
    let msg_signature = required(&q.msg_signature, "msg_signature")?;
    // The signature first, over the `Encrypt` text found by a plain search: nothing of an
    // unsigned body is parsed, and so nothing of it reaches an error or the log.
    let signed = wire::find_encrypt(body);
    verify_signature(
        msg_signature,
        &[account.secrets.token(), timestamp, nonce, signed],
    )?;
    state.check_fresh(timestamp)?;
    let encrypt = wire::parse_encrypted(body)?;
    if encrypt != signed {
        return Err(wire::WireError::EncryptMismatch.into());
    }
    let inner = cipher.decrypt(&encrypt)?;
    let message = Message::parse(&inner)?;
    Ok((message, Wrapping::Safe))
}

/// Encrypts a reply for safe mode with fresh random bytes, signed with a fresh nonce.
pub(super) fn encrypt_reply(account: &Live, xml: &str, now: u64) -> String {
    let Some(cipher) = account.secrets.cipher() else {
        return "success".to_owned();
    };
    let encrypt = cipher.encrypt(xml.as_bytes());
    let nonce = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
    let signature = sign(&[account.secrets.token(), &now.to_string(), &nonce, &encrypt]);
    wire::write_encrypted(&encrypt, &signature, now, &nonce)
}
