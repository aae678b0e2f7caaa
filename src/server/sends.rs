//! Queueing a rule's `send:` messages: WeChat's customer-service quota counted first, what
//! is past it kept for the user's next message (`keep`), the rest to the outbox.

use std::sync::Arc;

use super::keep::{keep_for_next, SlowAnswers, OVER_QUOTA_KEPT};
use crate::accounts::Live;
use crate::store::quota::Window;
use crate::telemetry::recent::Followup;
use crate::wechat_api::CustomMessage;
use crate::wire::{self, Message};

/// When a push's messages go: the window of WeChat's customer-service quota the push
/// opened, and the unix second now.
#[derive(Debug, Clone, Copy)]
pub(super) struct SendAt {
    pub(super) window: Window,
    pub(super) now: u64,
}

impl SendAt {
    /// The window `message`, received at the unix second `received`, opens.
    pub(super) fn of(message: &Message, received: u64, now: u64) -> SendAt {
        use std::hash::BuildHasher;
        let key = crate::store::dedup::Key::for_message(message);
        // Fixed seeds: every instance names an action alike.
        let action = foldhash::fast::FixedState::with_seed(0).hash_one(key.as_str());
        SendAt {
            window: Window::after(received, action, message.event()),
            now,
        }
    }
}

/// Queues a rule's rendered `send:` messages; what cannot be queued is logged (within a
/// rate limit: a full outbox refuses every push until it drains) and counted by the
/// outbox. Never waits: the network is the outbox's business. Where the account has the
/// customer-service API, WeChat's quota is counted first (`store::quota`): messages past
/// it are kept for the user's next message, never sent.
pub(super) async fn queue_sends(
    slow: &SlowAnswers,
    live: &Live,
    rule: &Arc<str>,
    message: &Message,
    sends: Vec<Result<wire::Reply, crate::render::RenderError>>,
    after: Option<Arc<Followup>>,
    at: SendAt,
) {
    let account = &live.account;
    let log_name = account.log_name();
    let failed = |error: &dyn std::fmt::Display| {
        tracing::error!(
            event = "send_render_failed",
            account = log_name,
            rule = &**rule,
            msg_id = message.msg_id().unwrap_or(""),
            %error
        );
    };
    let mut replies = Vec::with_capacity(sends.len());
    for send in sends {
        match send {
            Ok(reply) => replies.push(reply),
            Err(error) => failed(&error),
        }
    }
    if replies.is_empty() {
        return;
    }
    if account.customer_service() {
        let n = u32::try_from(replies.len()).unwrap_or(u32::MAX);
        let user = message.from_user();
        let allowed = slow
            .quota
            .take(account.scope(), user, at.window, n, at.now)
            .await;
        let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
        if allowed < replies.len() {
            let over = replies.split_off(allowed);
            tracing::info!(
                event = "quota_reached",
                source = "wxrules",
                account = log_name,
                rule = &**rule,
                msg_id = message.msg_id().unwrap_or(""),
                kept = over.len(),
                "WeChat's customer-service quota for this user is used up: the rest waits for their next message"
            );
            keep_for_next(slow, live, user, rule, over, Vec::new(), OVER_QUOTA_KEPT).await;
        }
    }
    let mut messages = Vec::with_capacity(replies.len());
    for reply in replies {
        match CustomMessage::new(message.from_user(), reply) {
            Ok(m) => messages.push(m),
            Err(error) => failed(&error),
        }
    }
    let count = messages.len();
    if count == 0 {
        return;
    }
    // Where the account has no customer-service API nothing was counted (and `check`
    // refuses what would send).
    let window = account.customer_service().then_some(at.window);
    let queued = account
        .outbox
        .enqueue_followed(rule, messages, after, window);
    if let Err(why) = queued.await {
        super::refusal::log_outbox_refused(log_name, rule, count, message.msg_id(), &why);
    }
}
