//! `ServiceError`: everything that stops a request before the rules run, and the one place
//! that decides its HTTP status. Bodies say what was wrong, never a secret.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::crypto::{CryptoError, SignatureError};
use crate::wire::WireError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Missing or wrong `signature`/`msg_signature`: 403, nothing processed.
    #[error("{0}")]
    Signature(#[from] SignatureError),
    /// `timestamp` outside the replay window: 403.
    #[error("timestamp `{0}` is outside the accepted window")]
    Stale(String),
    /// A plaintext push whose signed query came before with another body: a captured
    /// query replayed (the plaintext signature does not cover the body): 403.
    #[error("this signed query came before with another body (a replayed query)")]
    Replayed,
    /// The body is not a WeChat message: 400.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The `Encrypt` payload does not decrypt for this account: 400.
    #[error("cannot decrypt: {0}")]
    Crypto(#[from] CryptoError),
    /// An encrypted push while no EncodingAESKey is configured: 400.
    #[error("encrypted request, but WXRULES_AES_KEY and WXRULES_APPID are not set")]
    NoKey,
    /// A query that cannot be read as WeChat's (a parameter given twice): 400.
    #[error("query: {0}")]
    Query(String),
    /// The body is over the limit: 413.
    #[error("body over {0} bytes")]
    BodyTooLarge(usize),
    /// The body did not arrive in time: 408, and the connection is closed.
    #[error("body not received in time")]
    BodyTimeout,
    /// The upload broke off or is malformed (chunked framing): 400.
    #[error("body: {0}")]
    Body(String),
    /// A path no account serves: 404, the body unread.
    #[error("no account is served at this path")]
    NoAccount,
}

impl ServiceError {
    /// A stable short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceError::Signature(_) | ServiceError::Stale(_) => "bad_signature",
            ServiceError::Replayed => "replayed",
            ServiceError::BodyTooLarge(_) => "too_large",
            ServiceError::BodyTimeout => "timeout",
            ServiceError::NoAccount => "no_account",
            _ => "bad_request",
        }
    }
}

impl ResponseError for ServiceError {
    fn status_code(&self) -> StatusCode {
        match self {
            ServiceError::Signature(_) | ServiceError::Stale(_) | ServiceError::Replayed => {
                StatusCode::FORBIDDEN
            }
            ServiceError::Wire(_)
            | ServiceError::Crypto(_)
            | ServiceError::NoKey
            | ServiceError::Query(_)
            | ServiceError::Body(_) => StatusCode::BAD_REQUEST,
            ServiceError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ServiceError::NoAccount => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            // Nothing to learn for whoever forged the request.
            ServiceError::Signature(_)
            | ServiceError::Stale(_)
            | ServiceError::Replayed
            | ServiceError::NoAccount => response.finish(),
            // The rest of the body may still come: the connection cannot be reused. No
            // body: actix closes at once after an empty response (with a body, it would
            // first wait for the rest of a chunked upload; `handlers::receive`).
            ServiceError::BodyTooLarge(_) | ServiceError::BodyTimeout => {
                response.force_close().finish()
            }
            _ => response
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string()),
        }
    }
}
