//! The account's custom menu as a file (`menu.yaml`): read, checked against WeChat's
//! limits with every error at its `file:line:col`, and turned into the JSON of WeChat's
//! `menu/create` and `menu/addconditional`, or read back from `menu/get`'s answer (for
//! `wxrules menu diff|apply|pull`). `cross` holds the menu against the rules. No HTTP here
//! (the calls are `wechat_api`'s), and no IO but reading the file through `rules::read_text`.

mod cross;
mod schema;
mod wechat;

use std::path::Path;

use serde::Serialize;

use crate::rules::excerpt;
use crate::rules::schema::Scalar;
use crate::rules::{Location, Positions};
use schema::{RawButton, RawMatchRule, RawMenu};

pub use cross::{cross_check, rule_for, CrossCheck};
pub use wechat::from_wechat;

/// The largest menu file read. A menu is a few KiB; conditional menus a few KiB each.
pub const MAX_MENU_FILE: u64 = 1024 * 1024;
/// At most this many buttons on the bar (一级菜单).
pub const MAX_BUTTONS: usize = 3;
/// At most this many buttons in a sub-menu (二级菜单).
pub const MAX_SUB_BUTTONS: usize = 5;
/// A bar button's name, in bytes (UTF-8: 5 Chinese characters).
pub const MAX_NAME_BYTES: usize = 16;
/// A sub-menu button's name, in bytes.
pub const MAX_SUB_NAME_BYTES: usize = 60;
/// A button's `key`, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// A button's `url`, in bytes.
pub const MAX_URL_BYTES: usize = 1024;
/// The most conditional menus a file may hold. WeChat documents no number; this bounds a
/// file's calls to `menu/addconditional`.
pub const MAX_CONDITIONAL: usize = 32;

/// What a button does when tapped: WeChat's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "ButtonType")]
pub enum Kind {
    Click,
    View,
    Miniprogram,
    ScancodePush,
    ScancodeWaitmsg,
    PicSysphoto,
    PicPhotoOrAlbum,
    PicWeixin,
    LocationSelect,
    MediaId,
    ViewLimited,
    ArticleId,
    ArticleViewLimited,
}

/// Every type, in WeChat's documentation's order: for parsing and messages.
const KINDS: [Kind; 13] = [
    Kind::Click,
    Kind::View,
    Kind::Miniprogram,
    Kind::ScancodePush,
    Kind::ScancodeWaitmsg,
    Kind::PicSysphoto,
    Kind::PicPhotoOrAlbum,
    Kind::PicWeixin,
    Kind::LocationSelect,
    Kind::MediaId,
    Kind::ViewLimited,
    Kind::ArticleId,
    Kind::ArticleViewLimited,
];

/// The fields a button may carry besides `name`, `type` and `sub_button`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Key,
    Url,
    MediaId,
    Appid,
    Pagepath,
    ArticleId,
}

impl Field {
    const ALL: [Field; 6] = [
        Field::Key,
        Field::Url,
        Field::MediaId,
        Field::Appid,
        Field::Pagepath,
        Field::ArticleId,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Key => "key",
            Field::Url => "url",
            Field::MediaId => "media_id",
            Field::Appid => "appid",
            Field::Pagepath => "pagepath",
            Field::ArticleId => "article_id",
        }
    }
}

impl Kind {
    /// The type as WeChat names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Click => "click",
            Kind::View => "view",
            Kind::Miniprogram => "miniprogram",
            Kind::ScancodePush => "scancode_push",
            Kind::ScancodeWaitmsg => "scancode_waitmsg",
            Kind::PicSysphoto => "pic_sysphoto",
            Kind::PicPhotoOrAlbum => "pic_photo_or_album",
            Kind::PicWeixin => "pic_weixin",
            Kind::LocationSelect => "location_select",
            Kind::MediaId => "media_id",
            Kind::ViewLimited => "view_limited",
            Kind::ArticleId => "article_id",
            Kind::ArticleViewLimited => "article_view_limited",
        }
    }

    /// The type named `name`, as WeChat spells it.
    pub fn parse(name: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether a tap pushes an event whose `EventKey` is the button's `key`.
    pub fn pushes_key(self) -> bool {
        matches!(
            self,
            Kind::Click
                | Kind::ScancodePush
                | Kind::ScancodeWaitmsg
                | Kind::PicSysphoto
                | Kind::PicPhotoOrAlbum
                | Kind::PicWeixin
                | Kind::LocationSelect
        )
    }

    /// Whether the server is expected to answer the push with a rule: a click, and a scan
    /// (whose result only the server sees). Photos and locations also arrive as messages.
    pub fn wants_rule(self) -> bool {
        matches!(
            self,
            Kind::Click | Kind::ScancodePush | Kind::ScancodeWaitmsg
        )
    }

    /// The `Event` of the push a tap makes, as WeChat writes it.
    pub fn event(self) -> Option<&'static str> {
        match self {
            Kind::Click => Some("CLICK"),
            Kind::View => Some("VIEW"),
            Kind::Miniprogram => Some("view_miniprogram"),
            Kind::ScancodePush => Some("scancode_push"),
            Kind::ScancodeWaitmsg => Some("scancode_waitmsg"),
            Kind::PicSysphoto => Some("pic_sysphoto"),
            Kind::PicPhotoOrAlbum => Some("pic_photo_or_album"),
            Kind::PicWeixin => Some("pic_weixin"),
            Kind::LocationSelect => Some("location_select"),
            Kind::MediaId | Kind::ViewLimited | Kind::ArticleId | Kind::ArticleViewLimited => None,
        }
    }

    /// The fields this type needs.
    fn required(self) -> &'static [Field] {
        match self {
            k if k.pushes_key() => &[Field::Key],
            Kind::View => &[Field::Url],
            Kind::Miniprogram => &[Field::Url, Field::Appid, Field::Pagepath],
            Kind::MediaId | Kind::ViewLimited => &[Field::MediaId],
            _ => &[Field::ArticleId],
        }
    }
}

/// A custom menu: the default buttons and the conditional menus. Serializes as
/// `menu.yaml` reads (`wxrules menu pull` writes it so).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Menu {
    pub button: Vec<Button>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditional: Vec<Conditional>,
}

/// A conditional menu; serializes as `menu/addconditional`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conditional {
    pub matchrule: MatchRule,
    pub button: Vec<Button>,
}

/// Who sees a conditional menu.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MatchRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_platform_type: Option<String>,
}

/// One button, as `menu/create` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Button {
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagepath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub article_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sub_button: Vec<Button>,
}

impl Button {
    fn field(&self, field: Field) -> Option<&str> {
        match field {
            Field::Key => self.key.as_deref(),
            Field::Url => self.url.as_deref(),
            Field::MediaId => self.media_id.as_deref(),
            Field::Appid => self.appid.as_deref(),
            Field::Pagepath => self.pagepath.as_deref(),
            Field::ArticleId => self.article_id.as_deref(),
        }
    }
}

impl Menu {
    /// The body of `menu/create`: the default menu.
    pub fn create_body(&self) -> serde_json::Value {
        serde_json::json!({ "button": self.button })
    }

    /// The menu as `menu.yaml` text, with the schema line editors read.
    pub fn to_yaml(&self) -> String {
        let body = serde_yaml::to_string(self).unwrap_or_default();
        format!("# yaml-language-server: $schema=menu.schema.json\n{body}")
    }

    /// Every button with an action, with where it is: the default menu's, then each
    /// conditional menu's (`menu` 0 is the default one).
    pub fn leaves(&self) -> Vec<(usize, &Button)> {
        let menus = std::iter::once(&self.button).chain(self.conditional.iter().map(|c| &c.button));
        let mut out = Vec::new();
        for (m, buttons) in menus.enumerate() {
            for b in buttons {
                if b.sub_button.is_empty() {
                    out.push((m, b));
                }
                out.extend(b.sub_button.iter().map(|s| (m, s)));
            }
        }
        out
    }
}

/// One problem of a menu file, at its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct MenuError {
    pub location: Location,
    pub message: String,
}

/// Every problem of a menu file; nothing of it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuErrors(pub Vec<MenuError>);

impl std::fmt::Display for MenuErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::rules::write_lines(f, &self.0)
    }
}

impl std::error::Error for MenuErrors {}

/// A menu file, read and checked, with where each of its buttons' keys is written.
#[derive(Debug, Clone)]
pub struct LoadedMenu {
    pub menu: Menu,
    /// For each button with a `key`, in `Menu::leaves` order: the key and where it is.
    pub keys: Vec<(Kind, String, Location)>,
}

/// Reads and checks `path`: every error, each with its `file:line:col`.
pub fn load(path: &Path) -> Result<LoadedMenu, MenuErrors> {
    let text = crate::rules::read_text(path, MAX_MENU_FILE).map_err(|e| {
        MenuErrors(vec![MenuError {
            location: Location::new(path, None),
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(&text, path)
}

/// `load` of `text`, as read from `path`.
pub fn load_str(text: &str, path: &Path) -> Result<LoadedMenu, MenuErrors> {
    let fail = |at: Option<(usize, usize)>, message: String| {
        MenuErrors(vec![MenuError {
            location: Location::new(path, at),
            message: excerpt::cut(&message, excerpt::MESSAGE_CHARS),
        }])
    };
    if let Some(at) = crate::rules::too_deep(text) {
        return Err(fail(
            Some(at),
            format!("nested deeper than {} levels", crate::rules::MAX_YAML_DEPTH),
        ));
    }
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: RawMenu = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.into_inner();
        let message = inner.to_string();
        let message = match message.find(" at line ") {
            Some(at) => &message[..at],
            None => &message,
        };
        let message = match excerpt::root_kind(message, "RawMenu") {
            Some(kind) => format!(
                "not a menu file: a YAML mapping with `button:` was expected, and this is {kind} (its text is not shown)"
            ),
            None => excerpt::serde_message(message),
        };
        fail(inner.location().map(|l| (l.line(), l.column())), message)
    })?;
    let mut checking = Checking {
        path,
        positions: Positions::index(text),
        errors: Vec::new(),
        keys: Vec::new(),
    };
    let menu = checking.menu(raw);
    if checking.errors.is_empty() {
        Ok(LoadedMenu {
            menu,
            keys: checking.keys,
        })
    } else {
        Err(MenuErrors(checking.errors))
    }
}

/// The check of one file: its positions, and what was found.
struct Checking<'a> {
    path: &'a Path,
    positions: Positions,
    errors: Vec<MenuError>,
    keys: Vec<(Kind, String, Location)>,
}

impl Checking<'_> {
    fn error(&mut self, at: &str, message: &str) {
        self.errors.push(MenuError {
            location: Location::new(self.path, self.positions.value(at)),
            message: excerpt::cut(message, excerpt::MESSAGE_CHARS),
        });
    }

    fn menu(&mut self, raw: RawMenu) -> Menu {
        let button = self.buttons(raw.button, "button");
        if raw.conditional.len() > MAX_CONDITIONAL {
            self.error(
                &format!("conditional[{MAX_CONDITIONAL}]"),
                &format!(
                    "{} conditional menus: at most {MAX_CONDITIONAL}",
                    raw.conditional.len()
                ),
            );
        }
        let conditional = raw
            .conditional
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("conditional[{i}]");
                Conditional {
                    matchrule: self.matchrule(c.matchrule, &format!("{at}.matchrule")),
                    button: self.buttons(c.button, &format!("{at}.button")),
                }
            })
            .collect();
        Menu {
            button,
            conditional,
        }
    }

    fn matchrule(&mut self, raw: RawMatchRule, at: &str) -> MatchRule {
        let rule = MatchRule {
            tag_id: raw.tag_id.map(|s| s.0.trim().to_owned()),
            client_platform_type: raw.client_platform_type.map(|s| s.0.trim().to_owned()),
        };
        if rule.tag_id.is_none() && rule.client_platform_type.is_none() {
            self.error(
                at,
                "a `matchrule` needs `tag_id` or `client_platform_type` (WeChat refuses an empty one: 65304)",
            );
        }
        if let Some(tag) = &rule.tag_id {
            if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_digit()) {
                self.error(
                    &format!("{at}.tag_id"),
                    &format!(
                        "`tag_id` is a user tag's number, not `{}`",
                        excerpt::excerpt(tag)
                    ),
                );
            }
        }
        if let Some(platform) = &rule.client_platform_type {
            if !matches!(platform.as_str(), "1" | "2" | "3") {
                self.error(
                    &format!("{at}.client_platform_type"),
                    &format!(
                        "`client_platform_type` is 1 (iOS), 2 (Android) or 3 (others), not `{}`",
                        excerpt::excerpt(platform)
                    ),
                );
            }
        }
        rule
    }

    fn buttons(&mut self, raw: Vec<RawButton>, at: &str) -> Vec<Button> {
        if raw.is_empty() || raw.len() > MAX_BUTTONS {
            let place = if raw.is_empty() {
                at.to_owned()
            } else {
                format!("{at}[{MAX_BUTTONS}]")
            };
            self.error(
                &place,
                &format!(
                    "a menu has 1 to {MAX_BUTTONS} buttons, and this one has {}",
                    raw.len()
                ),
            );
        }
        raw.into_iter()
            .enumerate()
            .map(|(i, b)| self.button(b, &format!("{at}[{i}]"), false))
            .collect()
    }

    fn button(&mut self, raw: RawButton, at: &str, sub: bool) -> Button {
        let text = |s: Option<Scalar>| s.map(|s| s.0);
        let mut button = Button {
            name: raw.name.0,
            kind: None,
            key: text(raw.key),
            url: text(raw.url),
            media_id: text(raw.media_id),
            appid: text(raw.appid),
            pagepath: text(raw.pagepath),
            article_id: text(raw.article_id),
            sub_button: Vec::new(),
        };
        let (max_name, level) = if sub {
            (MAX_SUB_NAME_BYTES, "a sub-menu's button")
        } else {
            (MAX_NAME_BYTES, "a button on the bar")
        };
        if button.name.trim().is_empty() {
            self.error(&format!("{at}.name"), "a button needs a `name`");
        } else if button.name.len() > max_name {
            self.error(
                &format!("{at}.name"),
                &format!(
                    "`{}` is {} bytes: the name of {level} is at most {max_name} bytes (UTF-8; a Chinese character takes 3)",
                    excerpt::excerpt(&button.name),
                    button.name.len()
                ),
            );
        }
        match (raw.kind, raw.sub_button) {
            (Some(_), Some(_)) => {
                self.error(
                    &format!("{at}.sub_button"),
                    "a button has a `type` or a `sub_button`, not both",
                );
            }
            (None, Some(subs)) if sub => {
                drop(subs);
                self.error(
                    &format!("{at}.sub_button"),
                    "a sub-menu's button cannot have a sub-menu",
                );
            }
            (None, Some(subs)) => {
                if subs.is_empty() || subs.len() > MAX_SUB_BUTTONS {
                    let place = if subs.is_empty() {
                        format!("{at}.sub_button")
                    } else {
                        format!("{at}.sub_button[{MAX_SUB_BUTTONS}]")
                    };
                    self.error(
                        &place,
                        &format!(
                            "a sub-menu has 1 to {MAX_SUB_BUTTONS} buttons, and this one has {}",
                            subs.len()
                        ),
                    );
                }
                if let Some(field) = Field::ALL.into_iter().find(|f| button.field(*f).is_some()) {
                    self.error(
                        &format!("{at}.{}", field.name()),
                        &format!(
                            "a button with a `sub_button` does nothing itself: `{}` is not used",
                            field.name()
                        ),
                    );
                }
                button.sub_button = subs
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| self.button(b, &format!("{at}.sub_button[{i}]"), true))
                    .collect();
            }
            (None, None) => {
                self.error(
                    at,
                    "a button needs a `type` (what a tap does) or a `sub_button`",
                );
            }
            (Some(kind), None) => match Kind::parse(kind.0.trim()) {
                None => {
                    let known: Vec<&str> = KINDS.iter().map(|k| k.as_str()).collect();
                    self.error(
                        &format!("{at}.type"),
                        &format!(
                            "unknown button type `{}`: one of {}",
                            excerpt::excerpt(&kind.0),
                            known.join(", ")
                        ),
                    );
                }
                Some(kind) => {
                    button.kind = Some(kind);
                    self.action(&button, at);
                }
            },
        }
        button
    }

    /// The fields of a button of `button.kind`: those it needs, within WeChat's lengths,
    /// and none it does not use.
    fn action(&mut self, button: &Button, at: &str) {
        let Some(kind) = button.kind else { return };
        let required = kind.required();
        for field in Field::ALL {
            let value = button.field(field);
            let place = format!("{at}.{}", field.name());
            match value {
                None if required.contains(&field) => self.error(
                    at,
                    &format!(
                        "a button of type `{}` needs `{}`",
                        kind.as_str(),
                        field.name()
                    ),
                ),
                Some(_) if !required.contains(&field) => self.error(
                    &place,
                    &format!(
                        "`{}` is not used by a `{}` button",
                        field.name(),
                        kind.as_str()
                    ),
                ),
                Some(v) if v.trim().is_empty() => {
                    self.error(&place, &format!("`{}` is empty", field.name()))
                }
                _ => {}
            }
        }
        if let Some(key) = &button.key {
            if key.len() > MAX_KEY_BYTES {
                self.error(
                    &format!("{at}.key"),
                    &format!("`key` is {} bytes: at most {MAX_KEY_BYTES}", key.len()),
                );
            } else if kind.pushes_key() {
                let location = Location::new(self.path, self.positions.value(&format!("{at}.key")));
                self.keys.push((kind, key.clone(), location));
            }
        }
        if let Some(url) = &button.url {
            if url.len() > MAX_URL_BYTES {
                self.error(
                    &format!("{at}.url"),
                    &format!("`url` is {} bytes: at most {MAX_URL_BYTES}", url.len()),
                );
            } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                self.error(
                    &format!("{at}.url"),
                    &format!(
                        "`url` is an http:// or https:// address, not `{}`",
                        excerpt::excerpt(url)
                    ),
                );
            }
        }
    }
}

/// The JSON Schema of `menu.yaml`, generated from the types that parse it.
pub fn json_schema() -> String {
    schema::json_schema()
}
