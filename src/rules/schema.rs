//! The YAML shape of `rules.yaml`, as written by people. These raw types are the only
//! ones that derive `Deserialize`; `compile` turns them into the types the server uses.
//! serde_yaml is called from `parse_file` and `parse_rule` only, so that swapping in a
//! fork is a one-line change.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// A wxrules rules file (`rules/rules.yaml`).
// Rules stay untyped here so that each one can be checked on its own and every broken rule
// reported, not just the first.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wxrules rules file")]
#[schemars(rename = "RulesFile")]
pub(crate) struct RawFile {
    /// The rules, tried in file order; the first whose `when` holds answers the message.
    #[schemars(with = "Vec<RawRule>")]
    pub(crate) rules: Vec<serde_yaml::Value>,
}

/// One rule: a name, the criteria, and a reply or `ignore: true`.
#[derive(Debug, Deserialize, JsonSchema)]
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
}

/// The criteria of a rule; all given ones must hold.
#[derive(Debug, Default, Deserialize, JsonSchema)]
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
}

/// A string matcher: `"x"` (exact), `[a, b]` (any of), or `{prefix|contains|regex|exact: …}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a string, a list, or a map with one of `exact`, `prefix`, `contains`, `regex`"
)]
#[schemars(rename = "Matcher")]
pub(crate) enum RawMatcher {
    One(Scalar),
    Any(Vec<RawAlternative>),
    Op(RawOp),
}

/// One element of a matcher list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a string or a map with one of `exact`, `prefix`, `contains`, `regex`"
)]
#[schemars(rename = "Alternative")]
pub(crate) enum RawAlternative {
    One(Scalar),
    Op(RawOp),
}

/// `{prefix: …}` and friends; each takes one string or a list.
#[derive(Debug, Deserialize, JsonSchema)]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "expected a string or a list of strings")]
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "expected a string")]
        enum Any {
            Str(String),
            Int(i64),
            UInt(u64),
            Float(f64),
            Bool(bool),
        }
        Ok(Scalar(match Any::deserialize(d)? {
            Any::Str(s) => s,
            Any::Int(n) => n.to_string(),
            Any::UInt(n) => n.to_string(),
            Any::Float(n) => n.to_string(),
            Any::Bool(b) => b.to_string(),
        }))
    }
}

/// A reply, written as a one-key map: `{ text: … }`, `{ news: [...] }`, `{ one_of: [...] }`.
/// serde_yaml reads externally tagged enums only from YAML tags, so the keys are optional
/// fields here and `RawReply::kind` checks that exactly one is given.
#[derive(Debug, Default, Deserialize, JsonSchema)]
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
    video: Option<RawVideo>,
    /// A music reply.
    music: Option<RawMusic>,
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
    Video(RawVideo),
    Music(RawMusic),
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "expected a string or `{ template: NAME }`")]
#[schemars(rename = "TemplateString")]
pub(crate) enum RawStr {
    Inline(Scalar),
    File(RawTemplateRef),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TemplateRef")]
pub(crate) struct RawTemplateRef {
    /// A template file: `NAME` for `templates/NAME.hbs`.
    pub(crate) template: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Media")]
pub(crate) struct RawMedia {
    pub(crate) media_id: RawStr,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Video")]
pub(crate) struct RawVideo {
    pub(crate) media_id: RawStr,
    pub(crate) title: Option<RawStr>,
    pub(crate) description: Option<RawStr>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Music")]
pub(crate) struct RawMusic {
    pub(crate) title: Option<RawStr>,
    pub(crate) description: Option<RawStr>,
    pub(crate) music_url: Option<RawStr>,
    pub(crate) hq_music_url: Option<RawStr>,
    pub(crate) thumb_media_id: RawStr,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Article")]
pub(crate) struct RawArticle {
    pub(crate) title: RawStr,
    pub(crate) description: Option<RawStr>,
    pub(crate) pic_url: Option<RawStr>,
    pub(crate) url: Option<RawStr>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Transfer")]
pub(crate) struct RawTransfer {
    pub(crate) kf_account: Option<RawStr>,
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
}

/// Types the whole file in one pass, or `None` if anything in it is wrong (then
/// `parse_file` and `parse_rule` find every error).
pub(crate) fn parse_typed(source: &str) -> Option<Vec<RawRule>> {
    serde_yaml::from_str::<TypedFile>(source)
        .ok()
        .map(|f| f.rules)
}

/// Parses the outer file structure.
pub(crate) fn parse_file(source: &str) -> Result<RawFile, YamlError> {
    let de = serde_yaml::Deserializer::from_str(source);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        YamlError {
            position: inner.location().map(|l| (l.line(), l.column())),
            message: strip_location(&inner.to_string()),
            path,
        }
    })
}

/// Types one rule; the error carries the path inside the rule (`when.keyword`).
pub(crate) fn parse_rule(value: serde_yaml::Value) -> Result<RawRule, YamlError> {
    serde_path_to_error::deserialize(value).map_err(|e| YamlError {
        path: e.path().to_string(),
        message: strip_location(&e.into_inner().to_string()),
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
