//! A push's user's conversation state: looked up before the rules run (only for an
//! account whose rules converse: others pay one comparison), and written once the push
//! has its answer (`converse::after`), or once its call has answered.

use std::sync::Arc;

use super::AppState;
use crate::accounts::Live;
use crate::act::call::CallResult;
use crate::converse::{self, After};
use crate::rules::conversation::UserState;
use crate::rules::Match;
use crate::store::conversation::{Conversations, Found, Record};
use crate::wire::Message;

/// What the push found of its user's state.
#[derive(Debug, Default)]
pub(super) struct Looked {
    /// The state the user is in, as the rules see it during this push.
    pub(super) before: Option<Arc<UserState>>,
    /// A state that ended since the user's last message (for its `on_expire`).
    pub(super) ended: Option<Record>,
}

/// Whose states these are: the account's scope (OpenIDs are the account's own). The
/// page counts an account's users per state under the same key.
pub(super) fn scope<'a>(live: &'a Live, _message: &Message) -> &'a str {
    live.account.scope()
}

/// Whether what waits for the user (a conversation state, an answer kept by
/// `server::slow`) is read in the push's dedup claim (`store::dedup::With`'s `state` and
/// `kept`) rather than before the rules run: for an account whose rules converse or keep
/// answers, with Redis. A user with nothing waiting (most of them) then costs no round
/// trip more.
pub(super) fn read_with_claim(state: &AppState, live: &Live) -> bool {
    (live.rules.converses() && state.conversations.shared())
        || (live.rules.keeps() && state.slow.kept.shared())
}

/// The user's state, for an account whose rules converse.
pub(super) async fn look_up(state: &AppState, live: &Live, message: &Message) -> Looked {
    if !live.rules.converses() {
        return Looked::default();
    }
    let found = state
        .conversations
        .get(scope(live, message), message.from_user())
        .await;
    classify(state, live, message, found).await
}

/// `look_up`, from the user's record as Redis held it, read in the dedup claim's round
/// trip.
pub(super) async fn found(
    state: &AppState,
    live: &Live,
    message: &Message,
    record: String,
) -> Looked {
    let found = state
        .conversations
        .found_in_redis(scope(live, message), message.from_user(), Some(record))
        .await;
    classify(state, live, message, found).await
}

/// What a push makes of its user's record.
async fn classify(state: &AppState, live: &Live, message: &Message, found: Found) -> Looked {
    match found {
        Found::None => Looked::default(),
        Found::Live(record) => Looked {
            before: Some(Arc::new(converse::seen(&record, message))),
            ended: None,
        },
        Found::Expired(record) if !converse::counts(message) => {
            // An event (a location report) does not take the `on_expire` meant for the
            // user's next message: put back as it was.
            state
                .conversations
                .put(scope(live, message), message.from_user(), &record)
                .await;
            Looked::default()
        }
        Found::Expired(record) => Looked {
            before: None,
            ended: Some(record),
        },
    }
}

/// Writes what the user's state became.
pub(super) async fn write(
    conversations: &Conversations,
    live: &Live,
    message: &Message,
    after: After,
) {
    let user = message.from_user();
    match after {
        After::Keep => {}
        After::Put(record) => {
            conversations.put(scope(live, message), user, &record).await;
        }
        After::Clear => conversations.clear(scope(live, message), user).await,
    }
}

/// For a rule with a `call` and a `set:`/`clear:`: its transition once the call has
/// ended (applied when the service answered; otherwise the user has one more try). A
/// rule with a call but no transition has its try counted by the push.
pub(super) async fn after_call(
    conversations: &Conversations,
    live: &Live,
    message: &Message,
    found: &Match<'_>,
    result: &CallResult,
    now: u64,
) {
    if !live.rules.converses() || found.rule.transition().is_none() {
        return;
    }
    let after = converse::after_call(&live.rules, message, found, result, now);
    write(conversations, live, message, after).await;
}
