//! What a decision asks for beyond the passive reply: a rule's `call` to the account's own
//! service (`call`, its answer's own reply read by `service_reply`), and the `outbox` of
//! customer-service messages sent after it; `media`: replies' files uploaded as permanent
//! material in the background. Only the server makes calls and sends;
//! `explain` and `test` stub them.

pub mod call;
pub mod deliver;
pub mod media;
pub mod outbox;
mod service_reply;
