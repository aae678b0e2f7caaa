//! The HTTP face of wxrules: routes, request handling and the mapping of errors to status
//! codes. The only module that imports actix_web.

mod accept;
mod admin;
mod app;
mod body;
mod converse;
mod dashboard;
mod deliver;
mod editor;
mod error;
mod health;
mod keep;
mod late;
mod push;
mod query;
mod refusal;
mod sends;
pub mod signin;
pub mod slow;

pub(crate) use admin::Signed;
pub use admin::{configure_admin, Admin};
pub use app::{
    configure, AppState, Options, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_DEADLINE,
};
pub use error::ServiceError;

/// The content types of answers: a reply, or `success`.
const XML: &str = "text/xml";
const PLAIN_TEXT: &str = "text/plain; charset=utf-8";
