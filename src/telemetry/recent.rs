//! What the dashboard shows of the traffic: the last `CAPACITY` pushes in a fixed-size ring
//! (OpenIDs masked as they are written, keywords cut to 20 characters, nothing on disk).
//! Kept only when the admin port serves the dashboard; one short lock per push, a few
//! hundred instructions, and no allocation once the ring has gone round. A push whose rule
//! calls a service or sends messages also gets a `Followup`, which the late call and the
//! outbox fill in as they finish: what the passive reply alone does not say. (Each rule's
//! last hit is kept on the rule itself: `Rule::mark_hit`.)

use parking_lot::Mutex;
use std::sync::Arc;

use serde::Serialize;

use crate::wire::Message;

/// Pushes kept.
pub const CAPACITY: usize = 200;
/// Characters of a keyword kept.
const KEYWORD_CHARS: usize = 20;

/// One push, as the dashboard lists it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Push {
    /// Unix seconds; shown as RFC 3339.
    #[serde(serialize_with = "crate::clock::rfc3339")]
    pub at: u64,
    pub account: Arc<str>,
    /// `text`, `image`, `event/subscribe`, …
    pub kind: String,
    /// The text (or voice recognition, or event key), cut to 20 characters.
    pub keyword: String,
    /// The sender's OpenID, masked: `oAb…x4Z`.
    pub user: String,
    pub rule: Option<Arc<str>>,
    pub outcome: Shown,
    /// Microseconds from arrival to answer.
    pub us: u64,
    /// What happened after the answer: the call, the late reply, the customer-service
    /// messages. Only for a push whose rule calls or sends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Arc<Followup>>,
}

/// What became of a push after its passive answer, filled in as it happens: shared by the
/// push's entry in the ring, its late call and its messages in the outbox. A few fields
/// behind a lock taken for one update at a time.
#[derive(Debug, Default)]
pub struct Followup(Mutex<After>);

/// What `Followup` holds, as the dashboard gets it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct After {
    /// The rule's call failed: how (`timeout`, `connect`, `status`, `invalid`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_failed: Option<&'static str>,
    /// A late call's course after the holding reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late: Option<Late>,
    /// Customer-service messages of the push (its `send:` and its late reply): waiting in
    /// the outbox, sent, failed (given up), refused (never queued), kept for the user's
    /// next message (WeChat said their quota is spent, 45047; shown only when some were).
    pub queued: u32,
    pub sent: u32,
    pub failed: u32,
    pub refused: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub kept: u32,
    /// WeChat's errcode of the last message that failed (48001: the API is not
    /// authorised; 45015: the user has been silent for 48 hours; …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
}

/// A late call's course: the holding reply went, and then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Late {
    /// The call is still running.
    Waiting,
    /// Its reply is in the outbox (see `queued`, `sent`, `failed`).
    Queued,
    /// Nothing to send: the service said to ignore, or the call failed and the rule has
    /// no `on_error`.
    Nothing,
    /// Its reply failed to render.
    Failed,
}

impl Followup {
    /// A copy of what it holds now.
    pub fn get(&self) -> After {
        self.0.lock().clone()
    }

    /// The rule's call failed, as `outcome` says.
    pub fn call_failed(&self, outcome: &'static str) {
        self.0.lock().call_failed = Some(outcome);
    }

    pub fn late(&self, late: Late) {
        self.0.lock().late = Some(late);
    }

    /// `n` messages went into the outbox.
    pub fn queued(&self, n: usize) {
        let mut after = self.0.lock();
        after.queued = after
            .queued
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// `n` messages counted as queued did not stay queued after all.
    pub fn unqueue(&self, n: usize) {
        let mut after = self.0.lock();
        after.queued = after
            .queued
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// `n` messages were refused by the outbox (full, closing, no AppSecret).
    pub fn refused(&self, n: usize) {
        let mut after = self.0.lock();
        after.refused = after
            .refused
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// One queued message was sent.
    pub fn sent(&self) {
        let mut after = self.0.lock();
        after.queued = after.queued.saturating_sub(1);
        after.sent = after.sent.saturating_add(1);
    }

    /// One queued message was kept for the user's next message (WeChat said their quota
    /// is spent).
    pub fn kept(&self) {
        let mut after = self.0.lock();
        after.queued = after.queued.saturating_sub(1);
        after.kept = after.kept.saturating_add(1);
    }

    /// One queued message failed for good, with WeChat's errcode when it gave one.
    pub fn failed(&self, errcode: Option<i64>) {
        let mut after = self.0.lock();
        after.queued = after.queued.saturating_sub(1);
        after.failed = after.failed.saturating_add(1);
        if errcode.is_some() {
            after.errcode = errcode;
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Serialize for Followup {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

/// How a push ended, as the dashboard shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shown {
    /// A reply was sent.
    #[default]
    Replied,
    /// An `ignore` rule: `success`.
    Ignored,
    /// No rule matched: `success`.
    NoMatch,
    /// The reply failed to render: `success`.
    Error,
    /// A retry, answered from the dedup store.
    Retry,
    /// An earlier attempt held the push past the deadline: `success`.
    Deadline,
}

/// The ring, and when the server started.
pub struct Recent {
    ring: Mutex<Ring>,
    /// When the server started, unix seconds.
    started_at: u64,
}

#[derive(Default)]
struct Ring {
    slots: Vec<Push>,
    /// Where the next push goes, once the ring is full.
    next: usize,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent").finish_non_exhaustive()
    }
}

impl Recent {
    pub fn new(started_at: u64) -> Recent {
        Recent {
            ring: Mutex::new(Ring {
                slots: Vec::with_capacity(CAPACITY),
                next: 0,
            }),
            started_at,
        }
    }

    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Keeps one push; the oldest goes once there are `CAPACITY`. The slot's strings are
    /// reused, so a full ring allocates nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        account: &Arc<str>,
        message: &Message,
        rule: Option<&Arc<str>>,
        outcome: Shown,
        at: u64,
        us: u64,
        after: Option<&Arc<Followup>>,
    ) {
        let keyword = message
            .text("Content")
            .or_else(|| message.text("Recognition"))
            .or_else(|| message.text("EventKey"))
            .unwrap_or("");
        // Cut at a character boundary, then copied whole: a third of the cost of pushing
        // the characters one by one (callgrind).
        let cut = keyword
            .char_indices()
            .nth(KEYWORD_CHARS)
            .map_or(keyword.len(), |(at, _)| at);
        let keyword = &keyword[..cut];
        let mut ring = self.ring.lock();
        let ring = &mut *ring;
        let slot = if ring.slots.len() < CAPACITY {
            ring.slots.push(Push::default());
            ring.slots.len() - 1
        } else {
            let i = ring.next;
            ring.next = (ring.next + 1) % CAPACITY;
            i
        };
        let push = &mut ring.slots[slot];
        push.at = at;
        if !Arc::ptr_eq(&push.account, account) {
            push.account = Arc::clone(account);
        }
        push.kind.clear();
        push.kind.push_str(message.msg_type());
        if let Some(event) = message.event() {
            push.kind.push('/');
            push.kind.push_str(event);
        }
        push.keyword.clear();
        push.keyword.push_str(keyword);
        push.user.clear();
        mask(message.from_user(), &mut push.user);
        push.rule = rule.cloned();
        push.outcome = outcome;
        push.us = us;
        push.after = after.cloned();
    }

    /// The pushes kept, newest first; only `account`'s when given.
    pub fn pushes(&self, account: Option<&str>) -> Vec<Push> {
        self.pushes_of(|a| account.is_none_or(|wanted| a == wanted))
    }

    /// The pushes kept of the accounts `keep` says yes to, newest first.
    pub fn pushes_of(&self, keep: impl Fn(&str) -> bool) -> Vec<Push> {
        let ring = self.ring.lock();
        // Slots before `next` were written last (the ring has gone round); those from it on,
        // before them.
        let (newest, oldest) = ring.slots.split_at(ring.next.min(ring.slots.len()));
        oldest
            .iter()
            .chain(newest)
            .rev()
            .filter(|p| keep(&p.account))
            .cloned()
            .collect()
    }
}

/// An OpenID shown without giving it away: its first and last three characters
/// (`o6_bmjrPTlm6_2sgVt7hMZOPfL2M` → `o6_…L2M`); a short one, stars.
pub fn mask(openid: &str, out: &mut String) {
    // OpenIDs are ASCII: slices, no walk over characters.
    let n = openid.len();
    if openid.is_ascii() && n > 8 {
        out.push_str(&openid[..3]);
        out.push('…');
        out.push_str(&openid[n - 3..]);
        return;
    }
    let chars = openid.chars().count();
    if chars <= 8 {
        out.extend(std::iter::repeat_n('*', chars.min(8)));
        return;
    }
    out.extend(openid.chars().take(3));
    out.push('…');
    out.extend(openid.chars().skip(chars - 3));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content: &str, user: &str) -> Message {
        let xml = format!("<xml><ToUserName>gh</ToUserName><FromUserName>{user}</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>{content}</Content><MsgId>1</MsgId></xml>");
        Message::parse(xml.as_bytes()).unwrap()
    }

    #[test]
    fn openids_are_masked_and_keywords_cut() {
        let mut out = String::new();
        mask("o6_bmjrPTlm6_2sgVt7hMZOPfL2M", &mut out);
        assert_eq!(out, "o6_…L2M");
        out.clear();
        mask("short", &mut out);
        assert_eq!(out, "*****");

        let recent = Recent::new(0);
        let account: Arc<str> = Arc::from("default");
        let rule: Arc<str> = Arc::from("price");
        recent.record(
            &account,
            &message(
                "一二三四五六七八九十一二三四五六七八九十多出来的",
                "o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
            ),
            Some(&rule),
            Shown::Replied,
            5,
            120,
            None,
        );
        let pushes = recent.pushes(None);
        assert_eq!(
            pushes[0].keyword,
            "一二三四五六七八九十一二三四五六七八九十"
        );
        assert_eq!(pushes[0].user, "o6_…L2M");
        assert_eq!(pushes[0].kind, "text");
        let json = serde_json::to_string(&pushes[0]).unwrap();
        assert!(!json.contains("bmjrPTlm6"), "{json}");
    }

    #[test]
    fn the_ring_keeps_the_newest_capacity_pushes_newest_first() {
        let recent = Recent::new(0);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        for i in 0..(CAPACITY as u64 + 50) {
            let account = if i % 2 == 0 { &a } else { &b };
            recent.record(
                account,
                &message(&i.to_string(), "oUser12345678"),
                None,
                Shown::NoMatch,
                i,
                1,
                None,
            );
        }
        let all = recent.pushes(None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].keyword, (CAPACITY + 49).to_string());
        assert_eq!(all[CAPACITY - 1].keyword, "50");
        let only_a = recent.pushes(Some("a"));
        assert_eq!(only_a.len(), CAPACITY / 2);
        assert!(only_a.iter().all(|p| &*p.account == "a"));
    }

    /// A holding reply whose late answer then failed (48001) does not stay "replied" alone.
    #[test]
    fn what_follows_a_push_shows_beside_it_as_it_happens() {
        let recent = Recent::new(0);
        let account: Arc<str> = Arc::from("shop");
        let after = Arc::new(Followup::default());
        let msg = message("订单 42", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M");
        recent.record(&account, &msg, None, Shown::Replied, 1, 1, Some(&after));
        let json = |recent: &Recent| serde_json::to_value(&recent.pushes(None)[0]).unwrap();
        assert_eq!(json(&recent)["after"]["late"], serde_json::Value::Null);
        after.late(Late::Waiting);
        assert_eq!(json(&recent)["after"]["late"], "waiting");
        after.late(Late::Queued);
        after.queued(2);
        after.sent();
        after.failed(Some(48001));
        let shown = json(&recent)["after"].clone();
        assert_eq!(
            shown,
            serde_json::json!({"late": "queued", "queued": 0, "sent": 1, "failed": 1,
                "refused": 0, "errcode": 48001})
        );
        // A push without one has no `after`.
        recent.record(&account, &msg, None, Shown::NoMatch, 2, 1, None);
        assert!(json(&recent).get("after").is_none());
    }
}
