//! The YAML shape of `rules.yaml`, as written by people. These raw types are the only
//! ones that derive `Deserialize`; `compile` turns them into the types the server uses.
//! serde_yaml is called from the `parse_*` functions only, so that swapping in a fork is
//! a small change.

use std::collections::BTreeMap;

use std::fmt;
use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::excerpt;

/// A wxrules rules file (`rules/rules.yaml`).
// Rules stay untyped here so that each one can be checked on its own and every broken rule
// reported, not just the first.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wxrules rules file")]
#[schemars(rename = "RulesFile")]
pub(crate) struct RawFile {
    /// The time zone of the rules' `active` windows (an IANA name; default `Asia/Shanghai`).
    // Read by the outline pass (`LazyPositions::timezone`), which sees every load.
    #[allow(dead_code)]
    pub(crate) timezone: Option<String>,
    /// The rules, tried in file order; the first whose `when` holds answers the message.
    #[schemars(with = "Vec<RawRule>")]
    pub(crate) rules: Vec<serde_yaml::Value>,
}

/// One rule: a name, the criteria, and a reply or `ignore: true`.
#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rule")]
pub(crate) struct RawRule {
    /// Unique; shows up in logs, metrics (`rule="NAME"`) and `explain`.
    pub(crate) name: Scalar,
    /// The criteria; all given ones must hold. None: matches every message.
    #[serde(default)]
    pub(crate) when: RawWhen,
    /// What to answer. A rule has `reply` or `ignore: true`.
    pub(crate) reply: Option<RawReply>,
    /// `true`: answer `success` (no reply).
    #[serde(default)]
    pub(crate) ignore: bool,
    /// More messages, sent after the passive reply through WeChat's customer-service API,
    /// in order: text, image, voice, video, music, or news of one article (or a `one_of`
    /// of those). Needs WXRULES_APPID and WXRULES_APPSECRET.
    #[serde(default)]
    pub(crate) send: Vec<RawReply>,
    /// Ask one of your HTTP services first; its JSON answer is `call` in the templates.
    pub(crate) call: Option<Box<RawCall>>,
    /// The reply when the `call` fails (connect error, timeout, non-2xx, not JSON, over
    /// 64 KiB, too many at once); without it the answer is `success`.
    // Boxed, as `call`: rare, and a rule is moved whole several times while it is typed.
    pub(crate) on_error: Option<Box<RawReply>>,
    /// For a slow `call`: answer the push after `after` with a holding reply, and send the
    /// reply through the customer-service API when the call returns.
    pub(crate) late: Option<Box<RawLate>>,
    /// After the rule answers a user, it skips that user for this long (`60m`, `1h`): the
    /// MP console's default reply fires once per user per hour.
    pub(crate) cooldown: Option<Scalar>,
    /// When the rule is live: outside this window it does not match.
    pub(crate) active: Option<Box<RawActive>>,
    /// `false`: the rule is off. It is checked as any other, but never matches (`check`
    /// and the page show it as off); the page's switch writes it.
    #[serde(default = "on")]
    #[schemars(default = "on")]
    pub(crate) enabled: bool,
    /// `plain`: a text reply's Markdown (a backend's, an AI assistant's) made WeChat chat
    /// text: headings 【】, lists •, links `<a href>`, code indented, no `**`.
    pub(crate) format: Option<Scalar>,
    /// Once the rule has answered, the user is in this conversation state (`when: { state:
    /// NAME }` matches them) until it is cleared, replaced, or its `ttl` ends.
    pub(crate) set: Option<Box<RawSet>>,
    /// `true`: once the rule has answered, the user is in no state.
    #[serde(default)]
    pub(crate) clear: bool,
}

/// A rule's `set:`: the state its user is in once it has answered.
#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SetState")]
pub(crate) struct RawSet {
    /// The state's name: letters, digits, `_` and `-` (`bind_phone`).
    pub(crate) state: Scalar,
    /// How long the state lasts (default `10m`, at most `7d`).
    pub(crate) ttl: Option<Scalar>,
    /// Values kept with the state, each a template as in a reply (`"{{captures.phone}}"`,
    /// `"{{call.order}}"`); templates see them as `state.vars.NAME`. A later `set:` keeps
    /// the vars it does not set.
    #[serde(default)]
    pub(crate) vars: BTreeMap<String, Scalar>,
    /// The reply given on the user's first message after the state expired (instead of
    /// what the rules would answer).
    pub(crate) on_expire: Option<RawReply>,
}

fn on() -> bool {
    true
}

/// A rule's time window: every part given must hold.
#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Active")]
pub(crate) struct RawActive {
    /// From this date (`2026-11-01`: from its midnight) or date and time
    /// (`2026-11-01T10:00:00`), in the time zone.
    pub(crate) from: Option<Scalar>,
    /// Until this date (`2026-11-11`: to its end) or date and time, in the time zone.
    pub(crate) until: Option<Scalar>,
    /// Times of day, `HH:MM-HH:MM`, start included and end not; an end before the start
    /// runs overnight (`18:00-09:00`).
    #[serde(default)]
    pub(crate) hours: Vec<Scalar>,
    /// Days of the week (`mon` … `sun`), of the moment checked.
    #[serde(default)]
    pub(crate) weekdays: Vec<Scalar>,
    /// An IANA time zone (`Asia/Shanghai`); default: the file's `timezone`.
    pub(crate) timezone: Option<Scalar>,
}

/// A rule's `call`: an HTTP request to one of the account's own services.
#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Call")]
pub(crate) struct RawCall {
    /// `http://` or `https://` URL; text and `{{field}}` references, each value
    /// percent-encoded. The scheme and host are written out.
    pub(crate) url: Scalar,
    /// `POST` (default: the message as JSON) or `GET` (no body).
    pub(crate) method: Option<Scalar>,
    /// How long the service has to answer in full, e.g. `2s` (default), `800ms`, `60s`.
    pub(crate) timeout: Option<Scalar>,
    /// Request headers; `${VAR}` is replaced by the environment variable VAR at load.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, Scalar>,
    /// At most this many calls of this rule at once (default 64); past it, `on_error`.
    pub(crate) concurrency: Option<u32>,
}

/// A rule's `late`: the passive budget of a slow call and the holding reply.
#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Late")]
pub(crate) struct RawLate {
    /// How long to wait for the call before answering the push (default `3s`, at most `4.5s`).
    pub(crate) after: Option<Scalar>,
    /// The passive holding reply (`正在查询，请稍候…`); without it the push gets `success`.
    pub(crate) reply: Option<RawReply>,
    /// How the late answer reaches the user: `customer_service` (a message through WeChat's
    /// API) or `retries` (the passive reply of one of WeChat's three attempts, about 15 s;
    /// then kept for the user's next message). Default: `customer_service` where the
    /// account has it, else `retries`.
    pub(crate) via: Option<Scalar>,
    /// How long an answer that missed every attempt (or the customer-service quota) is kept
    /// for the user's next message (default `30m`; `0` never keeps one).
    pub(crate) keep: Option<Scalar>,
    /// The messages that fetch a kept answer (`[1, 结果]`, matched as keywords); default:
    /// any message.
    #[serde(default)]
    pub(crate) pickup: Vec<Scalar>,
}

/// The criteria of a rule; all given ones must hold.
#[derive(Debug, Hash, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "When")]
pub(crate) struct RawWhen {
    /// `MsgType`: text, image, voice, video, shortvideo, location, link, event (any case).
    pub(crate) msg_type: Option<RawMatcher>,
    /// `Event`: subscribe, unsubscribe, SCAN, LOCATION, CLICK, VIEW, scancode_push, … (any case).
    pub(crate) event: Option<RawMatcher>,
    /// `EventKey`: a menu key, `qrscene_<scene>`, a SCAN scene, a VIEW URL.
    pub(crate) event_key: Option<RawMatcher>,
    /// A text message's `Content` or a voice message's `Recognition`, trimmed, any ASCII case.
    pub(crate) keyword: Option<RawMatcher>,
    /// `Status` of TEMPLATESENDJOBFINISH / MASSSENDJOBFINISH (`success`, `failed:user block`, `failed: system failed`).
    pub(crate) status: Option<RawMatcher>,
    /// Any other field by name; nested fields by dotted path (`ScanCodeInfo.ScanType`).
    #[serde(default)]
    pub(crate) fields: BTreeMap<String, RawMatcher>,
    /// The user's conversation state: a name a rule `set:`s, `none` (in no state) or
    /// `any` (in some state).
    pub(crate) state: Option<Scalar>,
    /// The tapped choice of a reply's `choices` (its `id`; the message's `bizmsgmenuid`).
    pub(crate) choice: Option<RawMatcher>,
    /// With `state`: `state.tries` (the user's messages in the state, this one included)
    /// is below this number.
    pub(crate) tries_below: Option<u32>,
}

/// A string matcher: `"x"` (exact), `[a, b]` (any of), or `{prefix|contains|regex|exact: …}`.
#[derive(Debug, Hash, JsonSchema)]
#[schemars(untagged, rename = "Matcher")]
pub(crate) enum RawMatcher {
    One(Scalar),
    Any(Vec<RawAlternative>),
    // Boxed, as below: a rule holds five matchers, each mostly a short string.
    Op(Box<RawOp>),
}

/// One element of a matcher list.
#[derive(Debug, Hash, JsonSchema)]
#[schemars(untagged, rename = "Alternative")]
pub(crate) enum RawAlternative {
    One(Scalar),
    Op(Box<RawOp>),
}

/// `{prefix: …}` and friends; each takes one string or a list.
#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MatcherOp")]
pub(crate) struct RawOp {
    /// The whole value equals one of these.
    pub(crate) exact: Option<OneOrMany>,
    /// The value starts with one of these.
    pub(crate) prefix: Option<OneOrMany>,
    /// The value contains one of these.
    pub(crate) contains: Option<OneOrMany>,
    /// A regex found anywhere in the value unless anchored with `^…$`; groups become `captures`.
    pub(crate) regex: Option<OneOrMany>,
}

#[derive(Debug, Hash, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.0],
            OneOrMany::Many(v) => v.into_iter().map(|s| s.0).collect(),
        }
    }
}

/// A YAML scalar read as text, so that `event_key: 123` means the string "123".
#[derive(Debug, Hash, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) String);

impl JsonSchema for Scalar {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scalar".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Text; YAML numbers and booleans count as their text.",
            "type": ["string", "number", "boolean"]
        })
    }
}

/// A reply, written as a one-key map: `{ text: … }`, `{ news: [...] }`, `{ one_of: [...] }`.
/// serde_yaml reads externally tagged enums only from YAML tags, so the keys are optional
/// fields here and `RawReply::kind` checks that exactly one is given.
#[derive(Debug, Hash, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Reply")]
pub(crate) struct RawReply {
    /// A text reply.
    text: Option<RawStr>,
    /// An image reply (a media id of the account).
    image: Option<RawMedia>,
    /// A voice reply.
    voice: Option<RawMedia>,
    /// A video reply.
    video: Option<Box<RawVideo>>,
    /// A music reply.
    music: Option<Box<RawMusic>>,
    /// A news (articles) reply: 1 to 8 articles; replies to user messages show only 1.
    #[schemars(length(min = 1, max = 8))]
    news: Option<Vec<RawArticle>>,
    #[serde(default, deserialize_with = "present")]
    /// Hand the message to customer service (多客服), optionally to one account.
    #[schemars(with = "Option<RawTransfer>")]
    transfer_customer_service: Option<RawTransfer>,
    /// One of these replies, picked at random for each message.
    #[schemars(length(min = 1))]
    one_of: Option<Vec<RawReply>>,
    /// With `text`: tap-to-answer choices, appended as links; a tap comes back as a text
    /// message of the choice's text, matched by `when: { choice: ID }` (or by keyword).
    #[schemars(length(min = 1, max = 10))]
    pub(crate) choices: Option<Vec<RawChoice>>,
}

/// One of a text reply's `choices`.
#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Choice")]
pub(crate) struct RawChoice {
    /// What `when: { choice: ID }` matches (1 to 64 letters, digits, `_`, `-`).
    pub(crate) id: Scalar,
    /// What the link shows and what the tap sends (at most 128 bytes; no `"&<>`).
    pub(crate) text: Scalar,
}

/// `transfer_customer_service:` with no value means the same as `{}`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RawTransfer>, D::Error> {
    Ok(Some(
        Option::<RawTransfer>::deserialize(d)?.unwrap_or_default(),
    ))
}

/// The one kind of reply a `RawReply` gives.
#[derive(Debug)]
pub(crate) enum RawReplyKind {
    Text(RawStr),
    Image(RawMedia),
    Voice(RawMedia),
    Video(Box<RawVideo>),
    Music(Box<RawMusic>),
    News(Vec<RawArticle>),
    TransferCustomerService(RawTransfer),
    OneOf(Vec<RawReply>),
}

/// The reply keys, in the order they are documented.
pub(crate) const REPLY_KINDS: &str =
    "`text`, `image`, `voice`, `video`, `music`, `news`, `transfer_customer_service`, `one_of`";

impl RawReply {
    /// The reply's kind, or how many kinds were given when that is not exactly one.
    pub(crate) fn kind(self) -> Result<RawReplyKind, usize> {
        let mut kinds: Vec<RawReplyKind> = Vec::with_capacity(1);
        kinds.extend(self.text.map(RawReplyKind::Text));
        kinds.extend(self.image.map(RawReplyKind::Image));
        kinds.extend(self.voice.map(RawReplyKind::Voice));
        kinds.extend(self.video.map(RawReplyKind::Video));
        kinds.extend(self.music.map(RawReplyKind::Music));
        kinds.extend(self.news.map(RawReplyKind::News));
        kinds.extend(
            self.transfer_customer_service
                .map(RawReplyKind::TransferCustomerService),
        );
        kinds.extend(self.one_of.map(RawReplyKind::OneOf));
        match kinds.len() {
            1 => kinds.pop().ok_or(0),
            n => Err(n),
        }
    }
}

/// A string field of a reply: inline handlebars, or `{ template: NAME }` for
/// `templates/NAME.hbs`.
#[derive(Debug, Hash, JsonSchema)]
#[schemars(untagged, rename = "TemplateString")]
pub(crate) enum RawStr {
    Inline(Scalar),
    File(RawTemplateRef),
}

#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TemplateRef")]
pub(crate) struct RawTemplateRef {
    /// A template file: `NAME` for `templates/NAME.hbs`.
    pub(crate) template: String,
}

#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Media")]
pub(crate) struct RawMedia {
    /// A media id of the account's (permanent material). A reply has `media_id` or `file`.
    pub(crate) media_id: Option<RawStr>,
    /// A file under the templates directory (`banner.jpg`): wxrules uploads it as permanent
    /// material, once per account and content, and replies with its media id.
    pub(crate) file: Option<Scalar>,
    /// The day a temporary media id expires (`2026-12-10`, in the file's time zone):
    /// WeChat deletes temporary media 3 days after it was uploaded or fetched. `wxrules
    /// import` writes it; `check` warns, naming the day.
    pub(crate) expires: Option<Scalar>,
}

#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Video")]
pub(crate) struct RawVideo {
    /// A media id of the account's. A video has `media_id` or `file`.
    pub(crate) media_id: Option<RawStr>,
    /// An mp4 file under the templates directory, uploaded as for an image (with `title`
    /// and `description`, which must then be plain text).
    pub(crate) file: Option<Scalar>,
    pub(crate) title: Option<RawStr>,
    pub(crate) description: Option<RawStr>,
    /// The day the temporary `media_id` expires, as for an image.
    pub(crate) expires: Option<Scalar>,
}

#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Music")]
pub(crate) struct RawMusic {
    pub(crate) title: Option<RawStr>,
    pub(crate) description: Option<RawStr>,
    pub(crate) music_url: Option<RawStr>,
    pub(crate) hq_music_url: Option<RawStr>,
    pub(crate) thumb_media_id: RawStr,
    /// The day the temporary `thumb_media_id` expires, as for an image.
    pub(crate) expires: Option<Scalar>,
}

#[derive(Debug, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Article")]
pub(crate) struct RawArticle {
    pub(crate) title: RawStr,
    pub(crate) description: Option<RawStr>,
    pub(crate) pic_url: Option<RawStr>,
    pub(crate) url: Option<RawStr>,
}

#[derive(Debug, Hash, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Transfer")]
pub(crate) struct RawTransfer {
    pub(crate) kf_account: Option<RawStr>,
}

// The types above that may be written in more than one form (a scalar, a list, a map)
// read that form from the one event serde_yaml hands them, through `Form`: no buffering
// and retrying as `#[serde(untagged)]` does, which was a third of the time to load a large
// file. A wrong form is reported as "expected …"; an error inside the chosen form keeps
// its own message and path.

/// How a type reads each form of YAML node; a form left out is a type error.
trait Form: Sized {
    /// What the type takes, after "expected ".
    const EXPECTING: &'static str;

    fn scalar<E: de::Error>(text: String) -> Result<Self, E> {
        let _ = text;
        Err(wrong_form::<Self, E>())
    }

    fn seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        let _ = seq;
        Err(wrong_form::<Self, A::Error>())
    }

    fn map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let _ = map;
        Err(wrong_form::<Self, A::Error>())
    }
}

fn wrong_form<T: Form, E: de::Error>() -> E {
    E::custom(format_args!("expected {}", T::EXPECTING))
}

struct FormVisitor<T>(PhantomData<T>);

impl<'de, T: Form> Visitor<'de> for FormVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::scalar(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
        T::scalar(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::scalar(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::scalar(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::scalar(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        T::scalar(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Err(wrong_form::<T, E>())
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Err(wrong_form::<T, E>())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

/// `Deserialize` through `Form`, for each type that has one.
macro_rules! deserialize_by_form {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(FormVisitor(PhantomData))
            }
        }
    )*};
}

deserialize_by_form!(Scalar, OneOrMany, RawMatcher, RawAlternative, RawStr);

fn from_seq<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(seq: A) -> Result<T, A::Error> {
    T::deserialize(de::value::SeqAccessDeserializer::new(seq))
}

fn from_map<'de, T: Deserialize<'de>, A: MapAccess<'de>>(map: A) -> Result<T, A::Error> {
    T::deserialize(de::value::MapAccessDeserializer::new(map))
}

impl Form for Scalar {
    const EXPECTING: &'static str = "a string";

    fn scalar<E: de::Error>(text: String) -> Result<Self, E> {
        Ok(Scalar(text))
    }
}

impl Form for OneOrMany {
    const EXPECTING: &'static str = "a string or a list of strings";

    fn scalar<E: de::Error>(text: String) -> Result<Self, E> {
        Ok(OneOrMany::One(Scalar(text)))
    }

    fn seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        from_seq(seq).map(OneOrMany::Many)
    }
}

impl Form for RawMatcher {
    const EXPECTING: &'static str =
        "a string, a list, or a map with one of `exact`, `prefix`, `contains`, `regex`";

    fn scalar<E: de::Error>(text: String) -> Result<Self, E> {
        Ok(RawMatcher::One(Scalar(text)))
    }

    fn seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        from_seq(seq).map(RawMatcher::Any)
    }

    fn map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        from_map(map).map(RawMatcher::Op)
    }
}

impl Form for RawAlternative {
    const EXPECTING: &'static str =
        "a string or a map with one of `exact`, `prefix`, `contains`, `regex`";

    fn scalar<E: de::Error>(text: String) -> Result<Self, E> {
        Ok(RawAlternative::One(Scalar(text)))
    }

    fn map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        from_map(map).map(RawAlternative::Op)
    }
}

impl Form for RawStr {
    const EXPECTING: &'static str = "a string or `{ template: NAME }`";

    fn scalar<E: de::Error>(text: String) -> Result<Self, E> {
        Ok(RawStr::Inline(Scalar(text)))
    }

    fn map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        from_map(map).map(RawStr::File)
    }
}

/// A YAML error with its 1-based position, if serde_yaml knows it.
#[derive(Debug)]
pub(crate) struct YamlError {
    pub(crate) message: String,
    pub(crate) path: String,
    pub(crate) position: Option<(usize, usize)>,
}

/// The JSON Schema of the rules file, generated from these types, as pretty JSON.
pub(crate) fn json_schema() -> String {
    let schema = schemars::schema_for!(RawFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The whole file, typed in one pass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedFile {
    rules: Vec<RawRule>,
    /// Read by the outline pass (`LazyPositions::timezone`); accepted here.
    #[serde(rename = "timezone")]
    _timezone: Option<String>,
}

/// Types the whole file in one pass, or `None` if anything in it is wrong (then
/// `parse_file` and `parse_rule` find every error).
pub(crate) fn parse_typed(source: &str) -> Option<Vec<RawRule>> {
    serde_yaml::from_str::<TypedFile>(source)
        .ok()
        .map(|f| f.rules)
}

/// Types one piece of the `rules:` list cut out by `split`: a list of rules, read as a
/// document of its own. `None` if it does not type (the whole file is then typed again,
/// which reports every error).
pub(crate) fn parse_piece(text: &str) -> Option<Vec<RawRule>> {
    serde_yaml::from_str(text).ok()
}

/// Parses the outer file structure. A file that is not a mapping (a token file, a text,
/// a list) is said to be so without a word of it; serde's other messages keep an excerpt of
/// what they quote (`excerpt::serde_message`).
pub(crate) fn parse_file(source: &str) -> Result<RawFile, YamlError> {
    let de = serde_yaml::Deserializer::from_str(source);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let raw = strip_location(&inner.to_string());
        let message = match excerpt::root_kind(&raw, "RawFile") {
            Some(kind) if path == "." => format!(
                "not a rules file: a YAML mapping with `rules:` was expected, and this is {kind} (its text is not shown)"
            ),
            _ => excerpt::serde_message(&raw),
        };
        YamlError {
            position: inner.location().map(|l| (l.line(), l.column())),
            message,
            path,
        }
    })
}

/// Types one rule; the error carries the path inside the rule (`when.keyword`).
pub(crate) fn parse_rule(value: serde_yaml::Value) -> Result<RawRule, YamlError> {
    serde_path_to_error::deserialize(value).map_err(|e| YamlError {
        path: e.path().to_string(),
        message: excerpt::serde_message(&strip_location(&e.into_inner().to_string())),
        position: None,
    })
}

/// serde_yaml appends " at line L column C"; the caller prints the position itself.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(yaml: &str) -> Result<T, String> {
        serde_yaml::from_str(yaml).map_err(|e| strip_location(&e.to_string()))
    }

    #[test]
    fn scalars_of_any_type_read_as_their_text() {
        for (yaml, text) in [("x", "x"), ("'007'", "007"), ("123", "123"), ("-4", "-4")] {
            assert_eq!(read::<Scalar>(yaml).unwrap().0, text);
        }
        assert_eq!(read::<Scalar>("1.5").unwrap().0, "1.5");
        assert_eq!(read::<Scalar>("true").unwrap().0, "true");
        for wrong in ["~", "[a]", "{a: b}"] {
            assert_eq!(read::<Scalar>(wrong).unwrap_err(), "expected a string");
        }
    }

    #[test]
    fn each_form_reads_into_its_variant() {
        assert!(matches!(read::<RawMatcher>("x"), Ok(RawMatcher::One(Scalar(s))) if s == "x"));
        let Ok(RawMatcher::Any(list)) = read::<RawMatcher>("[a, {prefix: b}]") else {
            panic!("a list is `Any`");
        };
        assert!(
            matches!(&list[..], [RawAlternative::One(_), RawAlternative::Op(op)]
            if matches!(&op.prefix, Some(OneOrMany::One(Scalar(s))) if s == "b"))
        );
        assert!(matches!(
            read::<RawMatcher>("{regex: [a, b]}"),
            Ok(RawMatcher::Op(op)) if matches!(&op.regex, Some(OneOrMany::Many(v)) if v.len() == 2)
        ));
        assert!(matches!(read::<RawStr>("hi {{x}}"), Ok(RawStr::Inline(_))));
        assert!(matches!(
            read::<RawStr>("{template: welcome}"),
            Ok(RawStr::File(RawTemplateRef { template })) if template == "welcome"
        ));
    }

    #[test]
    fn a_wrong_form_says_what_is_expected() {
        let any = "expected a string, a list, or a map with one of `exact`, `prefix`, `contains`, `regex`";
        assert_eq!(read::<RawMatcher>("~").unwrap_err(), any);
        assert_eq!(
            read::<Vec<RawAlternative>>("[[a]]").unwrap_err(),
            // serde_yaml names where, inside the list.
            ".[0]: expected a string or a map with one of `exact`, `prefix`, `contains`, `regex`"
        );
        assert_eq!(
            read::<OneOrMany>("{a: b}").unwrap_err(),
            "expected a string or a list of strings"
        );
        assert_eq!(
            read::<RawStr>("[a]").unwrap_err(),
            "expected a string or `{ template: NAME }`"
        );
    }

    #[test]
    fn an_error_inside_a_form_keeps_its_own_message() {
        let e = read::<RawMatcher>("{prefx: a}").unwrap_err();
        assert!(e.starts_with("unknown field `prefx`"), "{e}");
        let e = read::<RawStr>("{template: x, extra: y}").unwrap_err();
        assert!(e.starts_with("unknown field `extra`"), "{e}");
    }
}
