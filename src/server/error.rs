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
}

impl ServiceError {
    /// A stable short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ServiceError::Signature(_) | ServiceError::Stale(_) => "bad_signature",
            _ => "bad_request",
        }
    }
}

impl ResponseError for ServiceError {
    fn status_code(&self) -> StatusCode {
        match self {
            ServiceError::Signature(_) | ServiceError::Stale(_) => StatusCode::FORBIDDEN,
            ServiceError::Wire(_)
            | ServiceError::Crypto(_)
            | ServiceError::NoKey
            | ServiceError::Query(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            // Nothing to learn for whoever forged the request.
            ServiceError::Signature(_) | ServiceError::Stale(_) => response.finish(),
            _ => response
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string()),
        }
    }
}
