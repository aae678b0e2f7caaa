//! What a decision asks for beyond the passive reply: a rule's `call` to the account's own
//! service (`call`, its answer's own reply read by `service_reply`). Only the server makes
//! calls; `explain` and `test` stub them.

pub mod call;
mod service_reply;
