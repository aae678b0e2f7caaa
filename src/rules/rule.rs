//! One compiled rule: its criteria, what it does (`Action`: a `ReplySpec` whose strings are
//! still templates, `Tpl`), its `Call`, and the parts few rules have (`Extras`). Data and
//! the questions asked of it; compiling is `compile`'s, matching `matcher`'s.

use std::fmt;
use std::sync::Arc;

use super::matcher::{self, Criteria, Subject, Words};
use super::media::{self, MediaFile};
use super::{active, conversation, Simple};

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Shared with each outcome and stored answer it decides, rather than copied.
    pub(crate) name: Arc<str>,
    pub(crate) fingerprint: u64,
    pub(crate) when: Criteria,
    pub(crate) action: Action,
    /// The service to ask before replying; boxed, as most rules have none.
    pub(crate) call: Option<Box<Call>>,
    /// What few rules have (`send:`, `active:`, `set:`/`clear:`, temporary media), boxed
    /// together: a rule with none of it pays one pointer, not 48 bytes (there can be
    /// 200,000 rules in one process).
    pub(crate) extras: Option<Box<Extras>>,
    /// When the rule last answered (unix seconds, 0 for never), for the dashboard; marked
    /// only while the dashboard is served, and carried over by a reload to the rule of the
    /// same name.
    pub(crate) last_hit: std::sync::atomic::AtomicU64,
    pub(crate) line: u32,
    pub(crate) column: u32,
    /// `cooldown:` in seconds; 0 for none.
    pub(crate) cooldown_secs: u32,
    /// `enabled: false`: kept in `RuleSet::off`, never matched.
    pub(crate) off: bool,
    /// `format: plain`: its text replies' Markdown made WeChat text.
    pub(crate) plain: bool,
}

/// The parts of a rule that few rules have (`Rule::extras`).
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// Replies to send through the customer-service API after the passive one, in order.
    pub(crate) send: Box<[ReplySpec]>,
    /// `active:`: outside this window the rule does not match.
    pub(crate) active: Option<active::Active>,
    /// `set:` or `clear: true`: what it does to its user's conversation state once it has
    /// answered.
    pub(crate) converse: Option<conversation::Transition>,
    /// Its replies' media ids marked temporary (`expires:`), for `check`'s warnings.
    pub(crate) temporary_media: Box<[media::TemporaryMedia]>,
}

impl Extras {
    /// `None` when the rule has none of them.
    pub(crate) fn boxed(self) -> Option<Box<Extras>> {
        let none = self.send.is_empty()
            && self.active.is_none()
            && self.converse.is_none()
            && self.temporary_media.is_empty();
        (!none).then(|| Box::new(self))
    }
}

impl Rule {
    /// Whether the rule is on (not written with `enabled: false`).
    pub fn is_on(&self) -> bool {
        !self.off
    }

    /// The rule's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same name, shared rather than copied.
    pub fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The line of the rules file where the rule starts.
    pub fn line(&self) -> usize {
        self.line as usize
    }

    /// The column of the rules file where the rule starts.
    pub fn column(&self) -> usize {
        self.column as usize
    }

    /// A hash of the rule as written, to tell which rules a reload changed.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Every reply of the rule: its passive reply, `send:`, and its call's `on_error` and
    /// holding reply.
    pub(crate) fn specs(&self) -> Vec<&ReplySpec> {
        let mut specs: Vec<&ReplySpec> = self.send().iter().collect();
        if let Action::Reply(spec) = &self.action {
            specs.push(spec);
        }
        if let Some(call) = &self.call {
            specs.extend(call.on_error.iter());
            specs.extend(call.late.as_ref().and_then(|l| l.reply.as_ref()));
        }
        specs
    }

    /// What the rule does when it matches.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// What it sends after its passive reply (`send:`), in order.
    pub fn send(&self) -> &[ReplySpec] {
        self.extras.as_ref().map_or(&[], |e| &e.send)
    }

    /// When the rule is live (`active:`), if it has a window.
    pub fn active(&self) -> Option<&active::Active> {
        self.extras.as_ref().and_then(|e| e.active.as_ref())
    }

    /// How long the rule skips a user it has answered (`cooldown:`), if it does.
    pub fn cooldown(&self) -> Option<std::time::Duration> {
        (self.cooldown_secs > 0).then(|| std::time::Duration::from_secs(self.cooldown_secs.into()))
    }

    /// The service it asks before replying (`call:`), with `on_error` and `late`.
    pub fn call(&self) -> Option<&Call> {
        self.call.as_deref()
    }

    /// What it does to its user's conversation state once it has answered.
    pub fn transition(&self) -> Option<&conversation::Transition> {
        self.extras.as_ref().and_then(|e| e.converse.as_ref())
    }

    /// Its replies' media ids marked temporary (`expires:`).
    pub(crate) fn temporary_media(&self) -> &[media::TemporaryMedia] {
        self.extras.as_ref().map_or(&[], |e| &e.temporary_media)
    }

    /// Whether it acts beyond its passive reply: calls a service, sends messages, cools
    /// down or moves its user's conversation. Such a push is claimed everywhere before it
    /// acts (`server::push`), so that a retry cannot act twice.
    pub fn acts(&self) -> bool {
        self.calls_or_sends() || self.cooldown_secs > 0 || self.transition().is_some()
    }

    /// Whether it calls a service or sends messages: something may follow its passive
    /// reply, and an answer may be kept for its user's next message (a late answer, or
    /// messages past WeChat's quota).
    pub fn calls_or_sends(&self) -> bool {
        self.call.is_some() || !self.send().is_empty()
    }

    /// The state its `when` asks for, if any.
    pub fn state_when(&self) -> Option<&conversation::StateWhen> {
        self.when.state.as_deref().map(|s| &s.when)
    }

    /// When the rule last answered, in unix seconds, if it has since the server started.
    pub fn last_hit(&self) -> Option<u64> {
        Some(self.last_hit.load(std::sync::atomic::Ordering::Relaxed)).filter(|&at| at > 0)
    }

    /// Notes that the rule answered at `at` (unix seconds).
    pub fn mark_hit(&self, at: u64) {
        self.last_hit
            .store(at, std::sync::atomic::Ordering::Relaxed);
    }

    /// The exact values the rule's `event_key` takes, with the exact `event`s it pins
    /// (lower-cased; empty when it pins none): `None` when it has no `event_key` or one
    /// with a prefix or regex. For `menu`'s cross-check.
    pub fn exact_event_keys(&self) -> Option<(Vec<&str>, Vec<&str>)> {
        let test = |field: matcher::Field| self.when.tests.iter().find(|t| t.field == field);
        let keys = test(matcher::Field::EventKey)?.matcher.exact_only()?;
        let events = test(matcher::Field::Event)
            .and_then(|t| t.matcher.exact_only())
            .unwrap_or_default();
        Some((events, keys))
    }

    /// Whether the rule looks at `event_key` at all.
    pub fn reads_event_key(&self) -> bool {
        self.when
            .tests
            .iter()
            .any(|t| t.field == matcher::Field::EventKey)
    }

    /// Describes each criterion and whether it holds for `subject`, for `explain`.
    pub fn describe(&self, subject: &Subject<'_>) -> Vec<(String, bool)> {
        self.when.describe(subject)
    }

    /// Each criterion in words (`keyword is 价格 or price`), in the order of `describe`.
    pub fn criteria_words(&self, lang: Words) -> Vec<String> {
        self.when.words(lang)
    }

    /// The rule's `when` in words, one line per criterion (`keyword is 价格 or price`), then
    /// its time window and cooldown: for the dashboard's list of rules, in English or
    /// Chinese.
    pub fn when_words(&self, lang: Words) -> Vec<String> {
        let mut words = self.criteria_words(lang);
        if let Some(active) = self.active() {
            words.push(format!(
                "{} {}",
                lang.pick("active", "生效时间"),
                active.words()
            ));
        }
        if self.cooldown_secs > 0 {
            let every = humantime::format_duration(std::time::Duration::from_secs(
                self.cooldown_secs.into(),
            ));
            words.push(match lang {
                Words::En => format!("once per user every {every}"),
                Words::Zh => format!("每位用户每 {every} 最多一次"),
            });
        }
        words
    }

    /// What kind of answer the rule gives: `ignore`, `call` (its service decides), or the
    /// passive reply's kind (`text`, `news`, `one_of`, …).
    pub fn reply_kind(&self) -> &'static str {
        if self.call.is_some() {
            return "call";
        }
        match &self.action {
            Action::Ignore => "ignore",
            Action::Reply(spec) => spec.kind(),
        }
    }
}

impl ReplySpec {
    /// The reply's kind as the rules file names it.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplySpec::Text(_) | ReplySpec::Choices(_) => "text",
            ReplySpec::Image(_) => "image",
            ReplySpec::Voice(_) => "voice",
            ReplySpec::Video(_) => "video",
            ReplySpec::Music(_) => "music",
            ReplySpec::News(_) => "news",
            ReplySpec::TransferCustomerService(_) => "transfer_customer_service",
            ReplySpec::OneOf(_) => "one_of",
        }
    }
}

/// A rule's `call`: the request to make, what to answer when it fails, and how long the
/// push waits for it.
pub struct Call {
    /// Text and `{{field}}` references; each value is percent-encoded when rendered.
    pub(crate) url: Simple,
    pub(crate) method: CallMethod,
    /// The whole call (connect, send, answer read in full) must end within this.
    pub(crate) timeout: std::time::Duration,
    /// Names and values, `${VAR}`s resolved at load. Values may be secrets: never shown.
    pub(crate) headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    pub(crate) on_error: Option<ReplySpec>,
    pub(crate) late: Option<Late>,
    /// This rule's calls in flight, at most `concurrency`. Per rule set: a reload starts
    /// afresh while the old set's calls finish.
    pub(crate) limit: Arc<tokio::sync::Semaphore>,
    pub(crate) concurrency: u32,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values can be credentials: only their names are shown.
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .field("late", &self.late)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Call {
    pub fn method(&self) -> CallMethod {
        self.method
    }

    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
    }

    /// The reply when the call fails, if the rule gives one.
    pub fn on_error(&self) -> Option<&ReplySpec> {
        self.on_error.as_ref()
    }

    /// The passive budget and holding reply of a call that may outlive the passive window.
    pub fn late(&self) -> Option<&Late> {
        self.late.as_ref()
    }

    /// The names of the headers sent (their values are not shown anywhere).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.iter().map(|(n, _)| n.as_str())
    }
}

/// How a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMethod {
    /// The message as a JSON body.
    Post,
    /// No body.
    Get,
}

impl CallMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CallMethod::Post => "POST",
            CallMethod::Get => "GET",
        }
    }
}

/// A rule's `late`.
#[derive(Debug)]
pub struct Late {
    /// How long the push waits for the call before the holding reply goes out.
    pub(crate) after: std::time::Duration,
    /// The holding reply; `None` answers `success`.
    pub(crate) reply: Option<ReplySpec>,
    /// `late.via`; `None` lets the account decide (`Late::via`).
    pub(crate) via: Option<Via>,
    /// How long an answer no attempt could carry waits for the next message; zero: never.
    pub(crate) keep: std::time::Duration,
    /// The keywords (folded) that fetch a kept answer; empty: any message.
    pub(crate) pickup: Vec<Box<str>>,
}

/// How a late answer reaches the user (`late.via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A message through WeChat's customer-service API.
    CustomerService,
    /// The passive reply of a later attempt of WeChat's, then the next message.
    Retries,
}

impl Late {
    pub fn after(&self) -> std::time::Duration {
        self.after
    }

    pub fn reply(&self) -> Option<&ReplySpec> {
        self.reply.as_ref()
    }

    /// How the answer goes: as written, or by what the account has (`customer_service`
    /// where it can send customer-service messages, else WeChat's retries).
    pub fn via(&self, customer_service: bool) -> Via {
        match self.via {
            Some(via) => via,
            None if customer_service => Via::CustomerService,
            None => Via::Retries,
        }
    }

    /// How long an answer too late for the push waits for the next message.
    pub fn keep(&self) -> std::time::Duration {
        self.keep
    }
}

/// What a matching rule does.
#[derive(Debug)]
pub enum Action {
    /// Answer `success`: no reply.
    Ignore,
    Reply(ReplySpec),
}

/// A reply whose strings are still templates.
#[derive(Debug)]
pub enum ReplySpec {
    Text(Tpl),
    /// A text with tap-to-answer `choices`; boxed, as few replies have them.
    Choices(Box<conversation::ChoiceText>),
    Image(Tpl),
    Voice(Tpl),
    // Boxed: rare, and three to five times the size of the others, which every rule would
    // pay for (there can be a hundred thousand rules).
    Video(Box<VideoSpec>),
    Music(Box<MusicSpec>),
    News(Vec<ArticleSpec>),
    TransferCustomerService(Option<Tpl>),
    OneOf(Vec<ReplySpec>),
}

/// A video reply whose strings are still templates.
#[derive(Debug)]
pub struct VideoSpec {
    pub media_id: Tpl,
    pub title: Tpl,
    pub description: Tpl,
}

/// A music reply whose strings are still templates.
#[derive(Debug)]
pub struct MusicSpec {
    pub title: Tpl,
    pub description: Tpl,
    pub music_url: Tpl,
    pub hq_music_url: Tpl,
    pub thumb_media_id: Tpl,
}

/// One news article whose strings are still templates.
#[derive(Debug)]
pub struct ArticleSpec {
    pub title: Tpl,
    pub description: Tpl,
    pub pic_url: Tpl,
    pub url: Tpl,
}

/// A string of a reply: fixed text, a simple template (text and `{{field}}`s), or the name
/// of a compiled handlebars template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tpl {
    Literal(String),
    Simple(Simple),
    Template(String),
    /// A media file's id, once uploaded (`RuleSet::media_ids`).
    Media(Arc<MediaFile>),
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use std::mem::size_of;

    /// A process may hold 200,000 rules (1,000 accounts × 200): each byte of a rule is
    /// 200 KB, and each allocation past a size class of the allocator is more.
    #[test]
    fn a_rule_and_its_criteria_stay_small() {
        assert!(
            size_of::<super::Rule>() <= 144,
            "{}",
            size_of::<super::Rule>()
        );
        // jemalloc's size classes: 32 bytes a test, 24 a pattern (one or two a rule).
        assert!(size_of::<super::super::matcher::Test>() <= 32);
        assert!(size_of::<super::super::matcher::Pattern>() <= 24);
    }
}
