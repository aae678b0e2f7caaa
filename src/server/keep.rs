//! What is kept for a user's next message: `SlowAnswers` (the stores: calls joined across
//! WeChat's attempts, the answers kept, WeChat's customer-service quota), keeping an answer
//! after what is already kept (`keep_for_next`), and the outbox's messages WeChat refused
//! over a user's quota (45047: `SlowAnswers` is the outbox's `OverQuota`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accounts::Live;
use crate::act::outbox::{OverQuota, Spent};
use crate::clock::Clock;
use crate::store::joined::Joined;
use crate::store::kept::{Kept, Swapped};
use crate::store::quota::{Quota, Window};
use crate::telemetry::metrics::Metrics;
use crate::wechat_api::CustomMessage;
use crate::wire::Reply;

/// What slow answers keep: the attempts joined to calls, and the answers kept for users'
/// next messages.
pub struct SlowAnswers {
    /// Calls waiting for their answer's delivery (`act::deliver`).
    pub deliveries: Arc<crate::act::deliver::Deliveries>,
    /// Where a `late` call's service delivers its answer later (`--deliver-url`: this
    /// server's public listener as the service reaches it); `None` sends no URL.
    pub deliver_base: Option<String>,
    pub joined: Joined,
    pub kept: Kept,
    /// WeChat's customer-service quota per user.
    pub quota: Quota,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SlowAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowAnswers")
            .field("deliveries", &self.deliveries)
            .field("deliver_base", &self.deliver_base)
            .field("joined", &self.joined)
            .field("kept", &self.kept)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl SlowAnswers {
    /// In process, and in Redis through `link` when given.
    pub fn new(clock: Arc<dyn Clock>, link: Option<Arc<crate::store::Link>>) -> SlowAnswers {
        SlowAnswers {
            deliveries: crate::act::deliver::Deliveries::new(Arc::clone(&clock)),
            deliver_base: None,
            joined: Joined::new(link.clone()),
            quota: Quota::new(link.clone()),
            kept: Kept::new(Arc::clone(&clock), link),
            clock,
        }
    }
}

/// WeChat refused a user's message with 45047: the user's quota counts as spent (as if
/// our own count had reached it), and the messages are kept for the user's next message,
/// as the quota's overflow is (`sends::queue_sends`): the first given by any message, the
/// rest by `继续`.
impl OverQuota for SlowAnswers {
    fn keep<'a>(
        &'a self,
        spent: Spent<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let Spent {
                scope,
                metrics,
                user,
                rule,
                windows,
                messages,
            } = spent;
            let now = self.clock.now();
            // Spending a window older than the user's latest does nothing: WeChat's spent
            // window is the latest one.
            for window in &windows {
                self.quota.spent(scope, user, *window, now).await;
            }
            if windows.is_empty() {
                // Counted against no window: the one spent starts now, and the user's
                // next action opens a new one.
                let window = Window::after(now, 0, None);
                self.quota.spent(scope, user, window, now).await;
            }
            let items = messages
                .into_iter()
                .map(CustomMessage::into_reply)
                .collect();
            let owner = Owner {
                scope,
                account: metrics.account(),
                metrics,
            };
            keep_for(self, &owner, user, rule, items, Vec::new(), OVER_QUOTA_KEPT).await
        })
    }
}

/// An answer kept for a user: replies in order, given one a message.
#[derive(Serialize, Deserialize)]
pub(super) struct KeptAnswer {
    pub(super) rule: String,
    pub(super) items: Vec<Reply>,
    /// The folded keywords that fetch the first item; empty: any message.
    pub(super) pickup: Vec<String>,
    /// How long what is left is kept, in seconds.
    pub(super) keep: u64,
}

/// How long messages past the quota wait for the user's next message.
pub(super) const OVER_QUOTA_KEPT: std::time::Duration = std::time::Duration::from_secs(48 * 3600);

/// The account an answer is kept for: its stores' scope, its name in log lines, its
/// metrics.
struct Owner<'a> {
    scope: &'a str,
    account: Option<&'a str>,
    metrics: &'a Metrics,
}

/// Keeps `items` for `user`'s next message, after what is already kept for them.
pub(super) async fn keep_for_next(
    slow: &SlowAnswers,
    live: &Live,
    user: &str,
    rule: &str,
    items: Vec<Reply>,
    pickup: Vec<String>,
    keep: Duration,
) {
    let owner = Owner {
        scope: live.account.scope(),
        account: live.account.log_name(),
        metrics: live.metrics(),
    };
    keep_for(slow, &owner, user, rule, items, pickup, keep).await;
}

/// `keep_for_next`, for `owner`'s account: whether they were kept (else they are lost,
/// logged and counted as dropped).
async fn keep_for(
    slow: &SlowAnswers,
    owner: &Owner<'_>,
    user: &str,
    rule: &str,
    items: Vec<Reply>,
    pickup: Vec<String>,
    keep: Duration,
) -> bool {
    let Owner {
        scope,
        account,
        metrics,
    } = *owner;
    for _ in 0..3 {
        let old = slow.kept.get(scope, user).await;
        let merged = match old
            .as_deref()
            .and_then(|o| serde_json::from_str::<KeptAnswer>(o).ok())
        {
            // What was kept first is given first.
            Some(mut before) => {
                before.items.extend(items.iter().cloned());
                before
            }
            None => KeptAnswer {
                rule: rule.to_owned(),
                items: items.clone(),
                pickup: pickup.clone(),
                keep: keep.as_secs(),
            },
        };
        let Ok(json) = serde_json::to_string(&merged) else {
            return false;
        };
        match slow
            .kept
            .swap(scope, user, old.as_deref(), Some(&json), keep)
            .await
        {
            Swapped::Done => {
                metrics.observe_kept("kept");
                tracing::info!(
                    event = "answer_kept",
                    account,
                    rule,
                    parts = merged.items.len()
                );
                return true;
            }
            Swapped::Changed => continue,
            Swapped::Refused => break,
        }
    }
    metrics.observe_kept("dropped");
    tracing::warn!(
        event = "answer_not_kept",
        account,
        rule,
        "the kept answers are full (or this one is too large): the answer is lost"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn text(content: &str) -> CustomMessage {
        let reply = Reply::Text {
            content: content.into(),
        };
        CustomMessage::new("u", reply).unwrap()
    }

    async fn kept_items(slow: &SlowAnswers, user: &str) -> KeptAnswer {
        let kept = slow.kept.get("a=x:", user).await.unwrap();
        serde_json::from_str(&kept).unwrap()
    }

    /// WeChat's 45047 counts as the quota spent, exactly as our own count reaching it
    /// would, and the messages wait for the user's next message, any message fetching the
    /// first.
    #[tokio::test]
    async fn wechats_45047_spends_the_window_and_keeps_the_messages() {
        let slow = SlowAnswers::new(Arc::new(ManualClock::new(1_000)), None);
        let metrics = Metrics::new();
        let window = Window::after(1_000, 7, None);
        assert_eq!(slow.quota.take("a=x:", "u", window, 2, 1_000).await, 2);
        let spent = Spent {
            scope: "a=x:",
            metrics: &metrics,
            user: "u",
            rule: "r",
            windows: vec![window],
            messages: vec![text("m3"), text("m4")],
        };
        assert!(slow.keep(spent).await);
        assert_eq!(
            slow.quota.take("a=x:", "u", window, 1, 1_000).await,
            0,
            "nothing more until the user's next action"
        );
        let kept = kept_items(&slow, "u").await;
        let texts: Vec<_> = ["m3", "m4"].map(|t| text(t).into_reply()).into();
        assert_eq!(kept.items, texts);
        assert!(kept.pickup.is_empty(), "any message fetches the first");
        assert_eq!(kept.keep, OVER_QUOTA_KEPT.as_secs());
        let next = Window::after(1_001, 8, None);
        assert_eq!(
            slow.quota.take("a=x:", "u", next, 5, 1_001).await,
            5,
            "the next action opens a new window"
        );
        // Messages counted against no window: the window spent starts now.
        let spent = Spent {
            scope: "a=x:",
            metrics: &metrics,
            user: "v",
            rule: "r",
            windows: Vec::new(),
            messages: vec![text("m")],
        };
        assert!(slow.keep(spent).await);
        let before = Window::after(999, 9, None);
        assert_eq!(slow.quota.take("a=x:", "v", before, 1, 1_000).await, 0);
        assert_eq!(kept_items(&slow, "v").await.items.len(), 1);
        assert_eq!(
            metrics
                .render()
                .lines()
                .find(|l| l.starts_with("wxrules_kept_answers_total{outcome=\"kept\"}")),
            Some("wxrules_kept_answers_total{outcome=\"kept\"} 2")
        );
    }
}
