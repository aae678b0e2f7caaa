//! Slow and long answers for accounts without the customer-service API (`late.via:
//! retries`): WeChat's three attempts at a push joined to one call, each answered as soon
//! as the answer is there, the first two otherwise left unanswered so that WeChat tries
//! again, the last answered with the answer or the holding reply; an answer later than
//! that, or the rest of a long one, kept for the user's next message (`store::kept`),
//! which gets it before the rules run (`pickup`). What is kept, and how, is `keep`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};

pub use super::keep::SlowAnswers;
use super::keep::{keep_for_next, KeptAnswer};
use super::sends::{queue_sends, SendAt};
use super::AppState;
use crate::accounts::Live;
use crate::act::call::{CallResult, Pending};
use crate::answer::{after_call, holding, replied_with, Outcome};
use crate::rules::{Late, Match};
use crate::store::dedup::{Answer, Key};
use crate::store::joined::Published;
use crate::store::kept::Swapped;
use crate::telemetry::recent::Followup;
use crate::wire::{Message, Reply};

/// When the push came and must be answered by, and what follows it on the dashboard.
pub(super) struct Asked<'a> {
    pub(super) now: u64,
    pub(super) started: Instant,
    pub(super) deadline: tokio::time::Instant,
    pub(super) after: Option<&'a Arc<Followup>>,
}

/// How long an attempt waits for the call: WeChat drops a push it has no answer for at 5 s.
pub(super) const ATTEMPT_WAIT: Duration = Duration::from_millis(4500);
/// How long an attempt left unanswered is held: past WeChat's 5 s, so that it tries again
/// (an answer WeChat no longer waits for is not an answer).
pub(super) const HOLD: Duration = Duration::from_millis(5500);
/// WeChat's attempts at one push.
const ATTEMPTS: u32 = 3;
/// The word that fetches the next part of a long answer, and the line that says so.
pub const NEXT_WORD: &str = "继续";
pub const NEXT_MARKER: &str = "\n（回复 继续 查看下一段）";
/// The answer a joined call publishes: the rule, and its reply (`None`: `success`).
#[derive(Serialize, Deserialize)]
struct JoinedAnswer {
    rule: String,
    reply: Option<Reply>,
}

/// A long text split into parts WeChat takes (each ≤ 2048 bytes), each but the last
/// telling the user how to get the next; other replies as they are.
pub(super) fn parts(reply: Reply, marker: &str) -> Vec<Reply> {
    match reply {
        Reply::Text { content } if content.len() > LIMIT => {
            let content = crate::wire::xml_safe(&content);
            crate::parts::split_with_marker(&content, LIMIT, marker)
                .into_iter()
                .map(|content| Reply::Text { content })
                .collect()
        }
        reply => vec![reply],
    }
}

/// How long the rest of a long passive reply waits for `继续`.
const PARTS_KEPT: Duration = Duration::from_secs(30 * 60);
/// WeChat's limit for a text, in bytes.
const LIMIT: usize = crate::parts::WECHAT_TEXT_LIMIT;

/// Whether `outcome` is a passive text over WeChat's limit (see `long_reply`).
pub(super) fn is_long(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Replied { reply: Reply::Text { content }, .. } if content.len() > LIMIT)
}

/// A passive text over WeChat's limit: the first part answers; the rest goes out through
/// the customer-service API (in order, before the rule's `send:`) where the account has
/// it, or else waits for `继续`, one part a message.
pub(super) async fn long_reply(
    state: &AppState,
    live: &Live,
    message: &Message,
    outcome: &mut Outcome,
    now: u64,
) {
    let Outcome::Replied {
        rule,
        reply: Reply::Text { content },
        sends,
        ..
    } = outcome
    else {
        return;
    };
    if content.len() <= LIMIT {
        return;
    }
    let rule = Arc::clone(rule);
    let by_service = live.account.customer_service();
    let marker = if by_service { "" } else { NEXT_MARKER };
    let mut items = parts(
        Reply::Text {
            content: std::mem::take(content),
        },
        marker,
    );
    let first = items.remove(0);
    let sends = std::mem::take(sends);
    if by_service {
        let mut queued: Vec<_> = items.into_iter().map(Ok).collect();
        queued.extend(sends);
        *outcome = replied_with(Arc::clone(&rule), first, message, now);
        if let Outcome::Replied { sends, .. } = outcome {
            *sends = queued;
        }
        return;
    }
    *outcome = replied_with(Arc::clone(&rule), first, message, now);
    if let Outcome::Replied { sends: left, .. } = outcome {
        *left = sends;
    }
    let keep = PARTS_KEPT;
    let words = vec![crate::rules::fold::folded(NEXT_WORD).into_owned()];
    keep_for_next(
        &state.slow,
        live,
        message.from_user(),
        &rule,
        items,
        words,
        keep,
    )
    .await;
}

/// The first attempt at a push whose rule's call answers `via: retries`: the call starts
/// in a task of its own (joined under the push's dedup key), and the attempt waits for it
/// until `ATTEMPT_WAIT`. `(outcome, joined)`: the answer; or, `joined`, the holding reply,
/// which the caller stores for the last attempt and does not send.
pub(super) async fn first_attempt(
    state: &AppState,
    live: &Arc<Live>,
    message: &Message,
    found: Match<'_>,
    asked: Asked<'_>,
    pending: Pending,
    late: &Late,
) -> (Outcome, bool) {
    let key = Key::for_message_in(live.account.scope(), message);
    let key: Arc<str> = Arc::from(key.as_str());
    let slow = Arc::clone(&state.slow);
    if !slow.joined.begin(&key).await {
        // As many pushes joined as the process may hold: this one waits as long as it may.
        let result = pending.run().await;
        let conversations = &state.conversations;
        super::converse::after_call(conversations, live, message, &found, &result, asked.now).await;
        return (
            after_call(&live.rules, message, &found, &result, asked.now),
            false,
        );
    }
    let task = {
        let (live, message, key) = (Arc::clone(live), message.clone(), Arc::clone(&key));
        let (index, captures, now) = (found.index, found.captures.clone(), asked.now);
        let user_state = found.state.clone();
        let conversations = Arc::clone(&state.conversations);
        let keep = late.keep();
        async move {
            let result = pending.run().await;
            let Some(rule) = live.rules.rules().get(index) else {
                return;
            };
            let found = Match {
                rule,
                index,
                captures,
                state: user_state,
            };
            super::converse::after_call(&conversations, &live, &message, &found, &result, now)
                .await;
            publish(&slow, &live, &message, &found, &result, &key, now, keep).await;
        }
    };
    actix_web::rt::System::current().arbiter().spawn(task);
    let until = tokio::time::Instant::from_std(asked.started + ATTEMPT_WAIT);
    match state.slow.joined.wait(&key, until).await {
        Some(published) => (outcome_of(&published, message, state.clock.now()), false),
        None => (holding(&live.rules, message, &found, asked.now), true),
    }
}

/// The call's answer, to the attempts still open, or else kept for the next message; the
/// parts of a long text after the first kept for `继续`; the rule's `send:` queued.
#[expect(clippy::too_many_arguments, reason = "one task's parts, named")]
async fn publish(
    slow: &SlowAnswers,
    live: &Live,
    message: &Message,
    found: &Match<'_>,
    result: &CallResult,
    key: &str,
    now: u64,
    keep: Duration,
) {
    let rule = found.rule.name.to_string();
    let outcome = after_call(&live.rules, message, found, result, now);
    let (reply, sends) = match outcome {
        Outcome::Replied { reply, sends, .. } => (Some(reply), sends),
        Outcome::Ignored { .. } | Outcome::Failed { .. } => (None, Vec::new()),
    };
    if !sends.is_empty() {
        let at = SendAt::of(message, now, now);
        queue_sends(slow, live, &found.rule.name, message, sends, None, at).await;
    }
    let mut items = reply
        .map(|reply| parts(reply, NEXT_MARKER))
        .unwrap_or_default();
    let first = (!items.is_empty()).then(|| items.remove(0));
    let answer = JoinedAnswer {
        rule: rule.clone(),
        reply: first.clone(),
    };
    let Ok(json) = serde_json::to_string(&answer) else {
        return;
    };
    let account = live.account.log_name();
    let user = message.from_user();
    match slow.joined.publish(key, &json).await {
        Published::ToAttempts => {
            // The rest of a long answer waits for `继续`.
            if !items.is_empty() {
                let words = vec![NEXT_WORD.to_owned()];
                keep_for_next(slow, live, user, &rule, items, words, keep).await;
            }
        }
        Published::Closed => {
            let Some(first) = first else { return };
            items.insert(0, first);
            let pickup = found
                .rule
                .call()
                .and_then(|call| call.late())
                .map(|late| late.pickup.iter().map(|w| w.to_string()).collect())
                .unwrap_or_default();
            if keep.is_zero() {
                tracing::info!(
                    event = "late_answer_dropped",
                    account,
                    rule,
                    reason = "keep is 0"
                );
                return;
            }
            keep_for_next(slow, live, user, &rule, items, pickup, keep).await;
        }
    }
}

/// The passive answer of a published call answer.
fn outcome_of(published: &str, message: &Message, now: u64) -> Outcome {
    match serde_json::from_str::<JoinedAnswer>(published) {
        Ok(JoinedAnswer {
            rule,
            reply: Some(reply),
        }) => replied_with(Arc::from(rule), reply, message, now),
        Ok(JoinedAnswer { rule, reply: None }) => Outcome::Ignored {
            rule: Some(Arc::from(rule)),
        },
        Err(_) => Outcome::Ignored { rule: None },
    }
}

/// A later attempt at a push joined to a running call (`stored` is the first attempt's
/// holding reply): the answer when it comes within `ATTEMPT_WAIT`; otherwise nothing
/// before the last attempt (held past WeChat's wait), and the holding reply at the last.
pub(super) async fn later_attempt(
    state: &AppState,
    live: &Live,
    message: &Message,
    stored: &Answer,
    started: Instant,
    encrypt: bool,
) -> HttpResponse {
    let key = Key::for_message_in(live.account.scope(), message);
    let joined = &state.slow.joined;
    let attempt = joined.attempt(key.as_str()).await;
    let until = tokio::time::Instant::from_std(started + ATTEMPT_WAIT);
    let mut answer = joined.wait(key.as_str(), until).await;
    if answer.is_none() {
        if attempt != 0 && attempt < ATTEMPTS {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + HOLD)).await;
            return HttpResponse::Ok()
                .content_type(super::PLAIN_TEXT)
                .body("success");
        }
        answer = joined.close(key.as_str()).await;
    }
    let now = state.clock.now();
    let outcome = match answer {
        Some(published) => outcome_of(&published, message, now),
        None => {
            return HttpResponse::Ok()
                .content_type(&*stored.content_type)
                .body(stored.body.clone());
        }
    };
    respond(live, &outcome, now, encrypt)
}

fn respond(live: &Live, outcome: &Outcome, now: u64, encrypt: bool) -> HttpResponse {
    match outcome {
        Outcome::Replied { xml, .. } => {
            let body = if encrypt {
                super::accept::encrypt_reply(live, xml, now)
            } else {
                xml.clone()
            };
            HttpResponse::Ok().content_type(super::XML).body(body)
        }
        _ => HttpResponse::Ok()
            .content_type(super::PLAIN_TEXT)
            .body("success"),
    }
}

/// Whether `message` may fetch an answer kept for its user: any message of an account whose
/// rules keep answers (a `call` or `send:`), else only `继续` (the rest of a long reply).
pub(super) fn may_pick_up(live: &Live, message: &Message) -> bool {
    message.msg_type() != "event"
        && (live.rules.keeps() || message.keyword_text().map(str::trim) == Some(NEXT_WORD))
}

/// The answer kept for this message's user, if the message fetches it: taken (the rest,
/// if any, left for `继续`). Only for accounts whose rules keep answers.
pub(super) async fn pickup(
    state: &AppState,
    live: &Live,
    message: &Message,
    now: u64,
) -> Option<Outcome> {
    let kept = &state.slow.kept;
    if !(kept.shared() || kept.any_here()) || !may_pick_up(live, message) {
        return None;
    }
    let text = message
        .keyword_text()
        .map(|t| crate::rules::fold::folded(t.trim()).into_owned());
    let (scope, user) = (live.account.scope(), message.from_user());
    for _ in 0..3 {
        let value = kept.get(scope, user).await?;
        let Ok(mut answer) = serde_json::from_str::<KeptAnswer>(&value) else {
            kept.swap(scope, user, Some(&value), None, Duration::ZERO)
                .await;
            return None;
        };
        let fetches = answer.pickup.is_empty()
            || text
                .as_deref()
                .is_some_and(|t| answer.pickup.iter().any(|w| w == t));
        if !fetches || answer.items.is_empty() {
            return None;
        }
        let first = answer.items.remove(0);
        let keep = Duration::from_secs(answer.keep.max(1));
        let rest = if answer.items.is_empty() {
            None
        } else {
            answer.pickup = vec![crate::rules::fold::folded(NEXT_WORD).into_owned()];
            serde_json::to_string(&answer).ok()
        };
        match kept
            .swap(scope, user, Some(&value), rest.as_deref(), keep)
            .await
        {
            Swapped::Done => {
                live.metrics().observe_kept("given");
                tracing::info!(
                    event = "kept_answer_given",
                    account = live.account.log_name(),
                    rule = &*answer.rule,
                    left = answer.items.len()
                );
                return Some(replied_with(Arc::from(answer.rule), first, message, now));
            }
            Swapped::Changed => continue,
            Swapped::Refused => return None,
        }
    }
    None
}
