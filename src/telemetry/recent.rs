//! What the dashboard shows of the traffic: the last `CAPACITY` pushes in a fixed-size ring
//! (OpenIDs masked as they are written, keywords cut to 20 characters, nothing on disk).
//! Kept only when the admin port serves the dashboard; one short lock per push, a few
//! hundred instructions, and no allocation once the ring has gone round. (Each rule's last
//! hit is kept on the rule itself: `Rule::mark_hit`.)

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
    pub fn record(
        &self,
        account: &Arc<str>,
        message: &Message,
        rule: Option<&Arc<str>>,
        outcome: Shown,
        at: u64,
        us: u64,
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
    }

    /// The pushes kept, newest first; only `account`'s when given.
    pub fn pushes(&self, account: Option<&str>) -> Vec<Push> {
        let ring = self.ring.lock();
        // Slots before `next` were written last (the ring has gone round); those from it on,
        // before them.
        let (newest, oldest) = ring.slots.split_at(ring.next.min(ring.slots.len()));
        oldest
            .iter()
            .chain(newest)
            .rev()
            .filter(|p| account.is_none_or(|a| &*p.account == a))
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
}
