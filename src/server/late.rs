//! A rule's call as the push makes it: without `late`, within the push's deadline; with
//! `late`, handed over to a task of its own at `late.after`, whose reply then goes out
//! through the outbox (`sends`).

use std::sync::Arc;
use std::time::Instant;

use super::converse;
use super::keep::SlowAnswers;
use super::sends::{queue_sends, SendAt};
use super::slow::Asked;
use super::AppState;
use crate::accounts::Live;
use crate::act::call::{CallFailure, CallResult};
use crate::answer::{after_call, holding, Outcome};
use crate::render;
use crate::rules::{Match, Via};
use crate::telemetry::recent::{Followup, Late};
use crate::wire::Message;

/// Asks `found`'s service and answers from what it says. Without `late` the push waits for
/// the call up to the deadline. With `late` it waits `late.after`; a call still running
/// then goes on in its own task, the push gets the holding reply, and the reply the call
/// leads to goes out through the outbox.
/// `(outcome, joined)`: `joined` when the call answers across WeChat's retries and has not
/// yet; the outcome is then the holding reply, for the last attempt (`server::slow`).
pub(super) async fn ask_service(
    state: &AppState,
    live: &Arc<Live>,
    message: &Message,
    found: Match<'_>,
    asked: Asked<'_>,
) -> (Outcome, bool) {
    let Asked {
        now,
        started,
        deadline,
        after,
    } = asked;
    let rules = &live.rules;
    let account = &live.account;
    let Some(call) = found.rule.call() else {
        return (Outcome::Ignored { rule: None }, false);
    };
    let rule = found.rule.shared_name();
    let scope = render::Scope {
        message,
        rule: &rule,
        captures: &found.captures,
        call: None,
        state: found.state.as_deref(),
    };
    let late = call.late();
    let budget = match late {
        Some(_) => call.timeout(),
        None => deadline.saturating_duration_since(tokio::time::Instant::now()),
    };
    let metrics = Some((live.metrics().call_metrics(), Arc::clone(&rule)));
    let pending = match state.caller.prepare(call, &scope, budget, metrics) {
        Ok(pending) => pending,
        Err(failure) => {
            let result = CallResult::Failed(failure);
            log_call(account.log_name(), &rule, message, &result, false, after);
            converse::after_call(&state.conversations, live, message, &found, &result, now).await;
            return (after_call(rules, message, &found, &result, now), false);
        }
    };
    let Some(late) = late else {
        let result = pending.run().await;
        log_call(account.log_name(), &rule, message, &result, false, after);
        converse::after_call(&state.conversations, live, message, &found, &result, now).await;
        return (after_call(rules, message, &found, &result, now), false);
    };
    // The service may answer 202 and deliver its answer later, within the call's timeout.
    let issued = state.slow.deliver_base.as_deref().and_then(|base| {
        let key = live.secrets.deliver_key();
        let issued = state
            .slow
            .deliveries
            .issue(key, live.name(), call.timeout())?;
        Some((format!("{base}{}", issued.path), issued.arrives))
    });
    let pending = match issued {
        Some((url, arrives)) => pending.deliver_to(&url, arrives),
        None => pending,
    };
    if late.via(account.customer_service()) == Via::Retries {
        return super::slow::first_attempt(state, live, message, found, asked, pending, late).await;
    }
    // The call, and what follows it if it is late, run as one task on the server's main
    // thread (the system arbiter), which outlives the workers: at a stop, the server waits
    // for late calls a little (`LateCalls`) before the outbox drains. The push waits for
    // the result on `handed` until `late.after`; once it stops waiting the task knows the
    // call is late, and sends its reply itself.
    let (hand, mut handed) = tokio::sync::oneshot::channel::<CallResult>();
    let passive_by = tokio::time::Instant::from_std(started + late.after());
    let late_call = LateCall {
        live: Arc::clone(live),
        message: message.clone(),
        index: found.index,
        captures: found.captures.clone(),
        user_state: found.state.clone(),
        now,
        metrics: live.metrics().call_metrics(),
        rule: Arc::clone(&rule),
        account: account.log_name().map(Arc::from),
        after: after.cloned(),
        _running: (state.late_calls.enter(), account.late_calls.enter()),
        slow: Arc::clone(&state.slow),
        conversations: Arc::clone(&state.conversations),
        clock: Arc::clone(&state.clock),
    };
    let task = async move {
        let started = Instant::now();
        let result = pending.uncounted().run().await;
        let took = started.elapsed();
        let on_time = late_call.label(&result, false);
        match hand.send(result) {
            Ok(()) => late_call.metrics.observe(&late_call.rule, on_time, took),
            Err(result) => {
                let late = late_call.label(&result, true);
                late_call.metrics.observe(&late_call.rule, late, took);
                late_call.finish(result).await;
            }
        }
    };
    actix_web::rt::System::current().arbiter().spawn(task);
    let result = match tokio::time::timeout_at(passive_by, &mut handed).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(_)) => Some(CallResult::Failed(CallFailure::Network(
            "the call was stopped (the server is stopping)".into(),
        ))),
        Err(_) => {
            // Closed first: a result sent from now on goes back to the task, which sends
            // it late; one that came in the same instant is still answered passively.
            handed.close();
            handed.try_recv().ok()
        }
    };
    let outcome = match result {
        Some(result) => {
            log_call(account.log_name(), &rule, message, &result, false, after);
            converse::after_call(&state.conversations, live, message, &found, &result, now).await;
            after_call(rules, message, &found, &result, now)
        }
        None => {
            if let Some(after) = after {
                after.late(Late::Waiting);
            }
            tracing::info!(
                event = "call_late",
                account = account.log_name(),
                rule = &*rule,
                msg_id = message.msg_id().unwrap_or(""),
                after_ms = u64::try_from(late.after().as_millis()).unwrap_or(u64::MAX),
                "the call has not answered: holding reply now, its reply through the customer-service API"
            );
            holding(rules, message, &found, now)
        }
    };
    (outcome, false)
}

/// What a late call's task needs once the push has been answered without it.
struct LateCall {
    /// The account's version the push took: its rules and outbox.
    live: Arc<Live>,
    message: Message,
    index: usize,
    captures: crate::rules::Captures,
    /// The user's conversation state when the push came.
    user_state: Option<Arc<crate::rules::conversation::UserState>>,
    now: u64,
    metrics: crate::act::call::CallMetrics,
    rule: Arc<str>,
    /// The account's name in log lines (`Account::log_name`).
    account: Option<Arc<str>>,
    /// What the dashboard shows of the push after its answer, when it is on.
    after: Option<Arc<Followup>>,
    /// Counted in `AppState::late_calls` and in its account's while the task lives.
    _running: (crate::act::call::Running, crate::act::call::Running),
    /// The quota and the kept answers, for what it sends.
    slow: Arc<SlowAnswers>,
    /// Users' conversation states, moved on when the call answers.
    conversations: Arc<crate::store::conversation::Conversations>,
    clock: Arc<dyn crate::clock::Clock>,
}

impl LateCall {
    /// The call's outcome label: `late` when it answered after the push had its holding
    /// reply.
    fn label(&self, result: &CallResult, late: bool) -> &'static str {
        match result {
            CallResult::Answered(_) if late => "late",
            CallResult::Answered(_) => "ok",
            CallResult::Failed(failure) => failure.outcome(),
        }
    }

    /// Queues the reply the late call leads to (with the rule's `send:`), or its
    /// `on_error` when it failed; `success` outcomes send nothing.
    async fn finish(self, result: CallResult) {
        let LateCall {
            live,
            message,
            index,
            captures,
            user_state,
            now,
            rule: name,
            account,
            after,
            slow,
            conversations,
            clock,
            ..
        } = self;
        let Some(rule) = live.rules.rules().get(index) else {
            return;
        };
        let account = account.as_deref();
        log_call(account, &name, &message, &result, true, after.as_ref());
        let late = |state: Late| {
            if let Some(after) = &after {
                after.late(state);
            }
        };
        let found = Match {
            rule,
            index,
            captures,
            state: user_state,
        };
        converse::after_call(&conversations, &live, &message, &found, &result, now).await;
        match after_call(&live.rules, &message, &found, &result, now) {
            Outcome::Replied { reply, sends, .. } => {
                // A long text goes out in parts, in order (`server::slow::parts`).
                let mut messages: Vec<_> =
                    super::slow::parts(reply, "").into_iter().map(Ok).collect();
                messages.extend(sends);
                tracing::info!(
                    event = "late_reply_queued",
                    account,
                    rule = &*name,
                    msg_id = message.msg_id().unwrap_or(""),
                    messages = messages.len()
                );
                late(Late::Queued);
                let at = SendAt::of(&message, now, clock.now());
                queue_sends(&slow, &live, &name, &message, messages, after.clone(), at).await;
            }
            Outcome::Ignored { .. } => {
                late(Late::Nothing);
                tracing::info!(
                    event = "late_reply_none",
                    account,
                    rule = &*name,
                    msg_id = message.msg_id().unwrap_or(""),
                    "nothing to send: the service said to ignore, or the call failed and the rule has no `on_error`"
                );
            }
            Outcome::Failed { error, .. } => {
                late(Late::Failed);
                tracing::error!(
                    event = "render_failed",
                    account,
                    rule = &*name,
                    msg_id = message.msg_id().unwrap_or(""),
                    late = true,
                    %error
                );
            }
        }
    }
}

/// Logs a call that failed, with its rule and reason (never the service's answer), and
/// notes it beside the push on the dashboard.
fn log_call(
    account: Option<&str>,
    rule: &str,
    message: &Message,
    result: &CallResult,
    late: bool,
    after: Option<&Arc<Followup>>,
) {
    if let CallResult::Failed(failure) = result {
        if let Some(after) = after {
            after.call_failed(failure.outcome());
        }
        tracing::warn!(
            event = "call_failed",
            account,
            rule,
            msg_id = message.msg_id().unwrap_or(""),
            outcome = failure.outcome(),
            late,
            reason = %failure
        );
    }
}
