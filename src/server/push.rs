//! `POST /wechat` (or an account's path): the push taken in (`server::accept`), deduplicated,
//! answered by the rules, stored for its retries, sent. Thin: extract, call the library, map
//! the error. A push takes one rules snapshot and keeps it to the end.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use super::accept::{accept, encrypt_reply, refused, Wrapping};
use super::late::ask_service;
use super::refusal::count_unrouted;
use super::sends::{queue_sends, SendAt};
use super::slow::{self, Asked};
use super::{body, converse, AppState, ServiceError};
use super::{PLAIN_TEXT, XML};
use crate::accounts::Live;
use crate::answer::{decide_found, Decision, Outcome};
use crate::rules::{Match, Subject};
use crate::store::dedup::{
    Answer, Claim, Key, Replay, Replayed, Settled, Ticket, Tier, Waiting, With,
};
use crate::store::replay::Seen;
use crate::telemetry::metrics::RequestOutcome;
use crate::telemetry::recent::{Followup, Recent, Shown};
use crate::wire::Message;

/// `POST /wechat`: verify, decrypt if needed, parse, dedup, answer.
pub(crate) async fn receive(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    // The account is the path's: `/wechat` alone without `--config`, `/wechat/NAME` (or
    // the account's own `path`) with. A path no account serves is 404, its body unread.
    // The path as routed (percent-decoded as actix decodes it for matching). One load of
    // the table: the account as it is now, its rules and secrets, kept to the end.
    let Some(live) = state.accounts().route(req.match_info().as_str()) else {
        count_unrouted(&state, &req);
        return body::refuse_unread(&ServiceError::NoAccount, &req, payload);
    };
    let (message, wrapping, replay) = match accept(&state, &live, &req, payload, started).await {
        Ok(accepted) => accepted,
        Err(refused) => return refused,
    };
    let replay = replay.as_ref().map(|pending| Replay {
        replays: &state.replays,
        pending,
    });
    // A WeChat retry of a push already answered gets that answer again, and one arriving
    // while the first attempt is still being answered waits for it. The wait (and a slow
    // Redis) is bounded by the deadline, so the answer still leaves within WeChat's 5 s.
    let deadline = tokio::time::Instant::from_std(started + state.options.deadline);
    let key = Key::for_message_in(live.account.scope(), &message);
    let ticket = match tokio::time::timeout_at(deadline, state.dedup.claim_here(&key)).await {
        Ok(Claim::First(ticket)) => ticket,
        Ok(Claim::Answered { answer, store }) => {
            // A retry answered here: its put-off replay check still comes first.
            if let Some(replay) = replay {
                if state.replays.check_pending(replay.pending).await == Seen::Other {
                    return refused(&state, &live, &ServiceError::Replayed);
                }
            }
            return answered(&state, &live, &message, &answer, store, started, wrapping).await;
        }
        Err(_) => return past_deadline(&state, &live, &message, started),
    };
    let push = Push {
        state: &state,
        live: &live,
        message: &message,
        wrapping,
        replay,
        started,
        deadline,
    };
    // The user's conversation state, for an account whose rules have one (one comparison
    // otherwise). Kept in Redis, it is read in the claim's own round trip instead, when
    // the answer made for a user in no state needs nothing more (`respond`).
    let looked = if converse::read_with_claim(&state, &live) {
        None
    } else {
        Some(converse::look_up(&state, &live, &message).await)
    };
    respond(push, ticket, looked).await
}

/// A push accepted and claimed in process, on its way to its answer.
#[derive(Clone, Copy)]
struct Push<'a> {
    state: &'a AppState,
    live: &'a Arc<Live>,
    message: &'a Message,
    wrapping: Wrapping,
    replay: Option<Replay<'a>>,
    started: Instant,
    deadline: tokio::time::Instant,
}

/// The rules' answer to a push, stored for its retries and sent. `looked` is the user's
/// conversation state, `None` when what waits for the user is not read yet
/// (`converse::read_with_claim`): the rules then run for a user with nothing waiting, and
/// an answer that needs nothing more is claimed and stored in one round trip only if the
/// user has no state and no kept answer after all; otherwise (a rule that acts, a long
/// reply, a user found in a state or with an answer kept) the push is answered again
/// knowing it.
async fn respond(
    push: Push<'_>,
    ticket: Ticket<'_>,
    looked: Option<converse::Looked>,
) -> HttpResponse {
    let Push {
        state,
        live,
        message,
        wrapping,
        replay,
        started,
        deadline,
    } = push;
    let unread = looked.is_none();
    let looked = looked.unwrap_or_default();
    let now = state.clock.now();
    let before = looked.before.as_deref();
    let subject = match before {
        None => Subject::at(message, now),
        Some(user) => Subject::at(message, now).in_state(Some(&user.name), user.tries),
    };
    let first = live.rules.find_skipping(&subject, &[]);
    // A rule that calls, sends or cools down acts beyond its reply: the push is claimed
    // everywhere (Redis too) before it acts, with its cooldown in the same round trip. Any
    // other is decided first, and its answer claimed and stored in one step (`settle`):
    // deciding twice on two instances does nothing a user could see, and only one answer
    // goes out.
    // Taking an answer kept for the user (`server::slow`) is acting too.
    // Moving a user's conversation along is acting too, so that a retry cannot move it
    // twice: a user in a state (or just out of one), or a rule that sets or clears one. A
    // user in none whose rule leaves it so moves nothing, and takes the one-step path.
    let moves = looked.before.is_some() || looked.ended.is_some();
    // With Redis, whether an answer is kept for the user is asked by the claim's own
    // script when nothing else acts (a kept one sends the push the acting way).
    let picks_up = slow::may_pick_up(live, message);
    let kept_key = if unread && picks_up {
        let scope = live.account.scope();
        state.slow.kept.redis_key(scope, message.from_user())
    } else {
        None
    };
    let acts =
        (picks_up && kept_key.is_none()) || moves || first.as_ref().is_some_and(|m| m.rule.acts());
    if unread && acts {
        // This push acts: its user's state is read first after all.
        let looked = converse::look_up(state, live, message).await;
        return Box::pin(respond(push, ticket, Some(looked))).await;
    }
    let (ticket, found) = if acts {
        let cooldown = first.as_ref().and_then(|m| {
            let seconds = m.rule.cooldown()?.as_secs();
            let account = cooldown_account(live, message);
            let user = message.from_user();
            state
                .cooldowns
                .redis_claim(&account, m.rule.name(), user, seconds)
        });
        let with = With {
            cooldown: cooldown.as_ref(),
            replay,
            state: None,
            kept: None,
        };
        let (ticket, cooled) =
            match tokio::time::timeout_at(deadline, ticket.claim_redis(with)).await {
                Ok(Ok((Claim::First(ticket), cooled))) => (ticket, cooled),
                Ok(Ok((Claim::Answered { answer, store }, _))) => {
                    return answered(state, live, message, &answer, store, started, wrapping).await
                }
                Ok(Err(Replayed)) => return refused(state, live, &ServiceError::Replayed),
                Err(_) => return past_deadline(state, live, message, started),
            };
        let found = find_unless_cooling(state, live, message, &subject, first, cooled).await;
        (Held::Claimed(ticket), found)
    } else {
        (Held::Unsettled(ticket), first)
    };
    let found = found.map(|mut m| {
        m.state.clone_from(&looked.before);
        m
    });
    let found_at = found.as_ref().map(|m| m.index);
    let at = When {
        now,
        started,
        deadline,
    };
    let Some((mut outcome, after, joined)) =
        decide(state, live, message, found, &looked, at, unread).await
    else {
        // A long reply, whose parts go out or wait: its user's state is read first.
        let looked = converse::look_up(state, live, message).await;
        return Box::pin(respond(push, ticket.into_inner(), Some(looked))).await;
    };
    let body = match (&mut outcome, wrapping) {
        (Outcome::Replied { xml, .. }, Wrapping::Safe) => encrypt_reply(live, xml, now),
        // The XML is not needed past this point: move it rather than copy it.
        (Outcome::Replied { xml, .. }, Wrapping::Plain) => std::mem::take(xml),
        _ => "success".to_owned(),
    };
    let (counted, content_type) = match &outcome {
        Outcome::Replied { .. } => (RequestOutcome::Replied, XML),
        Outcome::Ignored { .. } => (RequestOutcome::Ignored, PLAIN_TEXT),
        Outcome::Failed { .. } => (RequestOutcome::Error, PLAIN_TEXT),
    };
    // The exact bytes are stored, encrypted ones in safe mode: a retry gets this very body.
    // A push joined to a call still running: its retries find the holding reply, for the
    // last of them, and join the call.
    let stored = Arc::new(Answer {
        content_type: content_type.into(),
        body: body.into(),
        rule: outcome.shared_rule().cloned(),
        joined,
    });
    match ticket {
        Held::Claimed(ticket) => {
            // A late call's holding reply comes at `late.after`, which may be past the
            // deadline: its copy for retries still gets the time of one store (Redis
            // included).
            let store_by = deadline.max(tokio::time::Instant::now() + STORE_AT_LEAST);
            if tokio::time::timeout_at(store_by, ticket.complete(Arc::clone(&stored)))
                .await
                .is_err()
            {
                // The answer is ready: send it; only its copy for retries is missing.
                tracing::warn!(
                    event = "deadline_exceeded",
                    account = live.account.log_name(),
                    stage = "dedup_store",
                    msg_id = message.msg_id().unwrap_or("")
                );
            }
        }
        Held::Unsettled(ticket) => {
            // Another instance may be answering this push: its answer, not this one.
            let record_key = if unread && live.rules.converses() {
                let scope = converse::scope(live, message);
                state.conversations.redis_key(scope, message.from_user())
            } else {
                None
            };
            let with = With {
                replay,
                state: record_key.as_deref(),
                kept: kept_key.as_deref(),
                cooldown: None,
            };
            let settled = ticket.settle(Arc::clone(&stored), with);
            match tokio::time::timeout_at(deadline, settled).await {
                Ok(Settled::Stored) => {}
                Ok(Settled::Waiting { ticket, what }) => {
                    // Something waits for the user after all (or Redis did not say):
                    // answered again, knowing it.
                    let looked = match what {
                        Waiting::State(record) => {
                            converse::found(state, live, message, record).await
                        }
                        // Asked after the state, which the user has not.
                        Waiting::Kept => converse::Looked::default(),
                        Waiting::Unknown => converse::look_up(state, live, message).await,
                    };
                    return Box::pin(respond(push, ticket, Some(looked))).await;
                }
                Ok(Settled::Answered { answer, store }) => {
                    return answered(state, live, message, &answer, store, started, wrapping).await
                }
                Ok(Settled::Replayed) => return refused(state, live, &ServiceError::Replayed),
                Err(_) => return past_deadline(state, live, message, started),
            }
        }
    }
    // A reply waiting for its media file's upload is counted whether it answered
    // `success` or the rule's `on_error`.
    if outcome.media_pending() {
        live.metrics().observe_media_pending();
    }
    let elapsed = started.elapsed();
    live.metrics()
        .observe_request(counted, outcome.rule(), elapsed.as_secs_f64());
    if let Some(recent) = &state.recent {
        let kept = Kept {
            found_at,
            now,
            elapsed,
            after: after.as_ref(),
        };
        keep_recent(recent, live, message, &outcome, &kept);
    }
    log_outcome(live, message, &outcome, elapsed);
    if joined {
        // Left without an answer, so that WeChat tries again.
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + slow::HOLD)).await;
        return HttpResponse::Ok().content_type(PLAIN_TEXT).body("success");
    }
    HttpResponse::Ok()
        .content_type(content_type)
        .body(stored.body.clone())
}

/// A retry's answer found in the store: a push joined to a call still running goes on
/// waiting for it (`server::slow`); any other gets the stored answer.
async fn answered(
    state: &AppState,
    live: &Live,
    message: &Message,
    answer: &Answer,
    store: Tier,
    started: Instant,
    wrapping: Wrapping,
) -> HttpResponse {
    if answer.joined {
        let encrypt = matches!(wrapping, Wrapping::Safe);
        return slow::later_attempt(state, live, message, answer, started, encrypt).await;
    }
    answered_before(state, live, message, answer, store, started)
}

/// A retry of a push an earlier attempt answered: that answer, byte for byte.
fn answered_before(
    state: &AppState,
    live: &Live,
    message: &Message,
    answer: &Answer,
    store: Tier,
    started: Instant,
) -> HttpResponse {
    let elapsed = count_before(
        state,
        live,
        message,
        Before::Retry(answer.rule.as_ref()),
        started,
    );
    tracing::info!(
        event = "retry_answered",
        account = live.account.log_name(),
        store = store.as_str(),
        rule = answer.rule.as_deref().unwrap_or(""),
        msg_type = message.msg_type(),
        wx_event = message.event().unwrap_or(""),
        msg_id = message.msg_id().unwrap_or(""),
        us = micros(elapsed)
    );
    HttpResponse::Ok()
        .content_type(&*answer.content_type)
        .body(answer.body.clone())
}

/// What an earlier attempt at a push left for this one.
#[derive(Clone, Copy)]
enum Before<'a> {
    /// Its stored answer, of this rule (`None`: of no rule).
    Retry(Option<&'a Arc<str>>),
    /// Nothing yet, past the deadline.
    Deadline,
}

/// Counts a push that an earlier attempt at it settles, in the metrics and the recent
/// pushes; the time it took.
fn count_before(
    state: &AppState,
    live: &Live,
    message: &Message,
    before: Before<'_>,
    started: Instant,
) -> Duration {
    let elapsed = started.elapsed();
    let (counted, shown, rule) = match before {
        Before::Retry(rule) => (RequestOutcome::Retry, Shown::Retry, rule),
        Before::Deadline => (RequestOutcome::Deadline, Shown::Deadline, None),
    };
    live.metrics()
        .observe_request(counted, None, elapsed.as_secs_f64());
    if let Some(recent) = &state.recent {
        recent.record(
            live.account.shared_name(),
            message,
            rule,
            shown,
            state.clock.now(),
            micros(elapsed),
            None,
        );
    }
    elapsed
}

/// An earlier attempt at this push holds it past the deadline: `success`.
fn past_deadline(
    state: &AppState,
    live: &Live,
    message: &Message,
    started: Instant,
) -> HttpResponse {
    let elapsed = count_before(state, live, message, Before::Deadline, started);
    tracing::warn!(
        event = "deadline_exceeded",
        account = live.account.log_name(),
        stage = "dedup",
        msg_type = message.msg_type(),
        msg_id = message.msg_id().unwrap_or(""),
        us = micros(elapsed),
        "an earlier attempt at this push did not answer in time; answering `success`"
    );
    HttpResponse::Ok().content_type(PLAIN_TEXT).body("success")
}

/// A first attempt's hold on its push: claimed everywhere before acting, or in process
/// only, until its answer is settled.
enum Held<'a> {
    Claimed(Ticket<'a>),
    Unsettled(Ticket<'a>),
}

impl<'a> Held<'a> {
    fn into_inner(self) -> Ticket<'a> {
        match self {
            Held::Claimed(ticket) | Held::Unsettled(ticket) => ticket,
        }
    }
}

/// What the rules say about `message`, given the rule `found` (not cooling down), the
/// rule's call made and its `send:` queued; with the dashboard on, what follows the answer
/// (for a rule that calls or sends); and whether the push is joined to a call still
/// running (`server::slow`). An answer kept for the user comes first. A rule with a
/// cooldown claimed it when it was found, and keeps the claim only if it answers.
async fn decide(
    state: &AppState,
    live: &Arc<Live>,
    message: &Message,
    found: Option<Match<'_>>,
    looked: &converse::Looked,
    at: When,
    unread: bool,
) -> Option<(Outcome, Option<Arc<Followup>>, bool)> {
    let When {
        now,
        started,
        deadline,
    } = at;
    // Unread, an answer kept for the user is asked about by the claim (`respond`).
    if !unread {
        if let Some(kept) = slow::pickup(state, live, message, now).await {
            return Some((kept, None, false));
        }
    }
    // A state that ended since the user's last message: its `on_expire` answers.
    if let Some(ended) = &looked.ended {
        if let Some(outcome) = crate::converse::expired_reply(&live.rules, message, ended, now) {
            return Some((outcome, None, false));
        }
    }
    // What the user's state becomes, written once the answer is known (worked out here, as
    // the decision takes `found`); a reply that fails to render moves only the tries.
    let before = looked.before.as_deref();
    let moved = live.rules.converses().then(|| {
        crate::converse::after_answer(&live.rules, message, found.as_ref(), before, now, false)
    });
    let after = found
        .as_ref()
        .filter(|m| state.recent.is_some() && m.rule.calls_or_sends())
        .map(|_| Arc::new(Followup::default()));
    let claimed = found
        .as_ref()
        .filter(|m| m.rule.cooldown().is_some())
        .map(|m| {
            let late = m.rule.call().is_some_and(|c| c.late().is_some());
            (m.rule.shared_name(), late)
        });
    let (mut outcome, joined) = match decide_found(&live.rules, message, found, now) {
        Decision::Done(outcome) => (outcome, false),
        // Boxed: the call's state (request, task handle) would otherwise be part of every
        // push's future, making it several hundred bytes larger for rules that never call.
        Decision::Call(found) => {
            let asked = Asked {
                now,
                started,
                deadline,
                after: after.as_ref(),
            };
            Box::pin(ask_service(state, live, message, found, asked)).await
        }
    };
    if let Some(moved) = moved {
        let after = match outcome {
            Outcome::Failed { .. } if moved != crate::converse::After::Keep => {
                crate::converse::after_answer(&live.rules, message, None, before, now, true)
            }
            _ => moved,
        };
        converse::write(&state.conversations, live, message, after).await;
    }
    if unread && slow::is_long(&outcome) {
        // Its parts go out or wait for the user: not before the user's state is known.
        return None;
    }
    slow::long_reply(state, live, message, &mut outcome, now).await;
    if let Outcome::Replied { rule, sends, .. } = &mut outcome {
        if !sends.is_empty() {
            let sends = std::mem::take(sends);
            let at = SendAt::of(message, now, now);
            queue_sends(&state.slow, live, rule, message, sends, after.clone(), at).await;
        }
    }
    // A rule that claimed its cooldown and did not answer gives it back; one whose late
    // call may still answer through the outbox keeps it.
    if let Some((rule, late)) = claimed {
        if !late && !matches!(outcome, Outcome::Replied { .. }) {
            state
                .cooldowns
                .release(&cooldown_account(live, message), &rule, message.from_user())
                .await;
        }
    }
    Some((outcome, after, joined))
}

/// When the push came (its clock's second and instant) and must be answered by.
#[derive(Debug, Clone, Copy)]
struct When {
    now: u64,
    started: Instant,
    deadline: tokio::time::Instant,
}

/// What the dashboard's ring keeps of a push besides the message and its outcome.
struct Kept<'a> {
    found_at: Option<usize>,
    now: u64,
    elapsed: Duration,
    after: Option<&'a Arc<Followup>>,
}

/// Keeps the push in the dashboard's ring, and the rule's last hit.
fn keep_recent(recent: &Recent, live: &Live, message: &Message, outcome: &Outcome, kept: &Kept) {
    let Kept {
        found_at,
        now,
        elapsed,
        after,
    } = *kept;
    let shown = match outcome {
        Outcome::Replied { .. } => Shown::Replied,
        Outcome::Ignored { rule: Some(_) } => Shown::Ignored,
        Outcome::Ignored { rule: None } => Shown::NoMatch,
        Outcome::Failed { .. } => Shown::Error,
    };
    if outcome.rule().is_some() {
        if let Some(rule) = found_at.and_then(|i| live.rules.rules().get(i)) {
            rule.mark_hit(now);
        }
    }
    recent.record(
        live.account.shared_name(),
        message,
        outcome.shared_rule(),
        shown,
        now,
        micros(elapsed),
        after,
    );
}

/// The least time an answer's copy for retries gets to be stored, deadline or not: one
/// Redis command's bound (250 ms) and some.
const STORE_AT_LEAST: Duration = Duration::from_millis(300);

/// The first rule for `message` that is not cooling down for its sender, from `first`
/// (the first match, cooldown or not) on; `cooled` is whether `first`'s cooldown was
/// already claimed (in the dedup claim's round trip), `None` if not asked yet. Rules
/// without a `cooldown` cost one comparison; a rule with one, a lookup (in process, or
/// one Redis command).
async fn find_unless_cooling<'r>(
    state: &AppState,
    account: &'r Live,
    message: &Message,
    subject: &Subject<'_>,
    first: Option<Match<'r>>,
    cooled: Option<bool>,
) -> Option<Match<'r>> {
    let mut found = first?;
    let mut known = cooled;
    let mut skip = Vec::new();
    loop {
        let Some(cooldown) = found.rule.cooldown() else {
            return Some(found);
        };
        let claimed = match known.take() {
            Some(claimed) => claimed,
            None => {
                state
                    .cooldowns
                    .try_claim(
                        &cooldown_account(account, message),
                        found.rule.name(),
                        message.from_user(),
                        cooldown.as_secs(),
                    )
                    .await
            }
        };
        if claimed {
            return Some(found);
        }
        skip.push(found.index);
        found = account.rules.find_skipping(subject, &skip)?;
    }
}

/// Whose cooldowns these are: the account's ToUserName, behind the account's name when
/// the server has several.
fn cooldown_account<'m>(account: &Live, message: &'m Message) -> Cow<'m, str> {
    match account.account.scope() {
        "" => Cow::Borrowed(message.to_user()),
        scope => Cow::Owned(format!("{scope}{}", message.to_user())),
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

fn log_outcome(live: &Live, message: &Message, outcome: &Outcome, elapsed: Duration) {
    let account = live.account.log_name();
    let micros = micros(elapsed);
    let msg_type = message.msg_type();
    let event = message.event().unwrap_or("");
    let msg_id = message.msg_id().unwrap_or("");
    let rule = outcome.rule().unwrap_or("");
    tracing::debug!(from_user = message.from_user(), msg_id, "message_received");
    match outcome {
        Outcome::Replied {
            media_pending: true,
            ..
        } => tracing::warn!(
            event = "message_handled",
            account,
            outcome = "replied",
            rule,
            msg_type,
            wx_event = event,
            msg_id,
            reply = "on_error",
            media_pending = true,
            us = micros,
            "the rule's media file is not uploaded yet: its on_error answered"
        ),
        Outcome::Replied { reply, .. } => tracing::info!(
            event = "message_handled",
            account,
            outcome = "replied",
            rule,
            msg_type,
            wx_event = event,
            msg_id,
            reply = reply.msg_type(),
            us = micros
        ),
        Outcome::Ignored { .. } => tracing::info!(
            event = "message_handled",
            account,
            outcome = "ignored",
            rule,
            msg_type,
            wx_event = event,
            msg_id,
            us = micros
        ),
        Outcome::Failed { error, .. } => tracing::error!(
            event = "render_failed", account, outcome = "error", rule, msg_type, wx_event = event,
            msg_id, error = %error, us = micros
        ),
    }
}
