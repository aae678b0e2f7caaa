//! The YAML shape of `rules.yaml`, as written by people. These raw types are the only
//! ones that derive `Deserialize`; `compile` turns them into the types the server uses.
//! serde_yaml is called from `parse_file` and `parse_rule` only, so that swapping in a
//! fork is a one-line change.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file. Rules stay untyped here so that each one can be checked on its own and
/// every broken rule reported, not just the first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub(crate) rules: Vec<serde_yaml::Value>,
}

/// One rule: a name, the criteria, and a reply or `ignore: true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: Scalar,
    #[serde(default)]
    pub(crate) when: RawWhen,
    pub(crate) reply: Option<RawReply>,
    #[serde(default)]
    pub(crate) ignore: bool,
}

/// The criteria of a rule; all given ones must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    pub(crate) msg_type: Option<RawMatcher>,
    pub(crate) event: Option<RawMatcher>,
    pub(crate) event_key: Option<RawMatcher>,
    pub(crate) keyword: Option<RawMatcher>,
    pub(crate) status: Option<RawMatcher>,
    #[serde(default)]
    pub(crate) fields: BTreeMap<String, RawMatcher>,
}

/// A string matcher: `"x"` (exact), `[a, b]` (any of), or `{prefix|contains|regex|exact: …}`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a string, a list, or a map with one of `exact`, `prefix`, `contains`, `regex`"
)]
pub(crate) enum RawMatcher {
    One(Scalar),
    Any(Vec<RawAlternative>),
    Op(RawOp),
}

/// One element of a matcher list.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expected a string or a map with one of `exact`, `prefix`, `contains`, `regex`"
)]
pub(crate) enum RawAlternative {
    One(Scalar),
    Op(RawOp),
}

/// `{prefix: …}` and friends; each takes one string or a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOp {
    pub(crate) exact: Option<OneOrMany>,
    pub(crate) prefix: Option<OneOrMany>,
    pub(crate) contains: Option<OneOrMany>,
    pub(crate) regex: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReply {
    text: Option<RawStr>,
    image: Option<RawMedia>,
    voice: Option<RawMedia>,
    video: Option<RawVideo>,
    music: Option<RawMusic>,
    news: Option<Vec<RawArticle>>,
    #[serde(default, deserialize_with = "present")]
    transfer_customer_service: Option<RawTransfer>,
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
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected a string or `{ template: NAME }`")]
pub(crate) enum RawStr {
    Inline(Scalar),
    File(RawTemplateRef),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTemplateRef {
    pub(crate) template: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMedia {
    pub(crate) media_id: RawStr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVideo {
    pub(crate) media_id: RawStr,
    pub(crate) title: Option<RawStr>,
    pub(crate) description: Option<RawStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMusic {
    pub(crate) title: Option<RawStr>,
    pub(crate) description: Option<RawStr>,
    pub(crate) music_url: Option<RawStr>,
    pub(crate) hq_music_url: Option<RawStr>,
    pub(crate) thumb_media_id: RawStr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawArticle {
    pub(crate) title: RawStr,
    pub(crate) description: Option<RawStr>,
    pub(crate) pic_url: Option<RawStr>,
    pub(crate) url: Option<RawStr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
