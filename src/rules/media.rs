//! Media of replies. A reply may name a file under the templates directory (`image: {
//! file: banner.jpg }`): it is read at load, held to WeChat's limits for permanent
//! material (format by extension, size), and known by its content's SHA-256; an uploader
//! outside `rules` makes it permanent material and puts its media id in the rule set's
//! `MediaIds`, where a render finds it. Reading the file is `read`'s.
//!
//! Temporary media ids. WeChat deletes temporary media (what `media/upload` makes, and the
//! images, voices and videos of the MP console's export) 3 days after it was made, and
//! nothing in an id says which kind it is: WeChat documents no shape for either. A reply
//! marks one with `expires: DAY` (`wxrules import` writes it), and `check` warns about each,
//! naming the day. Here: reading `expires` at load, and the warning. No IO, no clock: the
//! caller gives the time.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use super::excerpt;

/// A reply's media file, read at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile {
    /// `image`, `voice` or `video`: the `type` of `material/add_material`.
    pub kind: &'static str,
    /// As the rule names it, under the templates directory.
    pub name: String,
    pub path: PathBuf,
    /// The SHA-256 of its content, in hex: what it is known by, across reloads, restarts
    /// and instances.
    pub sha256: String,
    /// A video's title and description, as permanent material needs them.
    pub video: Option<(String, String)>,
}

/// WeChat's formats (by extension) and size for permanent material of `kind`.
pub fn limits(kind: &str) -> (&'static [&'static str], u64) {
    match kind {
        "image" => (&["bmp", "png", "jpeg", "jpg", "gif"], 10 * 1024 * 1024),
        "voice" => (&["mp3", "wma", "wav", "amr"], 2 * 1024 * 1024),
        _ => (&["mp4"], 10 * 1024 * 1024),
    }
}

/// The media file `name` of a reply of `kind`, under `dir`: read and held to WeChat's
/// limits; the error says what is wrong.
pub(crate) fn media_file(
    kind: &'static str,
    dir: &Path,
    name: &str,
    video: Option<(String, String)>,
) -> Result<MediaFile, String> {
    let relative = Path::new(name);
    let inside = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if name.is_empty() || !inside {
        return Err(format!(
            "`file` is a path under the templates directory, without `..`, not `{}`",
            excerpt::excerpt(name)
        ));
    }
    let (formats, cap) = limits(kind);
    let extension = relative
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !formats.contains(&extension.as_str()) {
        return Err(format!(
            "`{}`: WeChat takes {kind} files as {}",
            excerpt::excerpt(name),
            formats.join(", ")
        ));
    }
    let path = dir.join(relative);
    let bytes = super::read::read_bytes(&path, cap).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::InvalidData {
            e.to_string()
        } else {
            format!("cannot be read ({})", e.kind())
        };
        format!(
            "`{}` {why}: WeChat takes {kind} files of at most {} MB",
            excerpt::excerpt(name),
            cap / (1024 * 1024)
        )
    })?;
    let sha256 = sha256_hex(&bytes);
    Ok(MediaFile {
        kind,
        name: name.to_owned(),
        path,
        sha256,
        video,
    })
}

/// The SHA-256 of `bytes` in hex: what a media file is known by.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The media ids of an account's files, by kind and content: filled by the uploader,
/// read by renders. Shared by the rule sets an account loads, so a reload keeps them.
#[derive(Debug, Default)]
pub struct MediaIds {
    /// By kind and content: the id, and the file it is of.
    ids: RwLock<HashMap<String, (String, MediaFile)>>,
}

impl MediaIds {
    fn key(file: &MediaFile) -> String {
        format!("{}:{}", file.kind, file.sha256)
    }

    /// The media id of `file`, once uploaded.
    pub fn get(&self, file: &MediaFile) -> Option<String> {
        self.ids
            .read()
            .get(&Self::key(file))
            .map(|(id, _)| id.clone())
    }

    /// Keeps `id` as `file`'s media id.
    pub fn put(&self, file: &MediaFile, id: &str) {
        self.ids
            .write()
            .insert(Self::key(file), (id.to_owned(), file.clone()));
    }

    /// The file whose media id is `id`, if it is one of these.
    pub fn file_of(&self, id: &str) -> Option<MediaFile> {
        self.ids
            .read()
            .values()
            .find(|(known, _)| known == id)
            .map(|(_, file)| file.clone())
    }

    /// Forgets `file`'s media id (WeChat said it is no good: 40007).
    pub fn forget(&self, file: &MediaFile) {
        self.ids.write().remove(&Self::key(file));
    }
}

/// How long WeChat keeps temporary media, in days.
pub(crate) const TEMPORARY_DAYS: i64 = 3;

/// A reply's media id marked temporary by its `expires`.
#[derive(Debug, Clone)]
pub(crate) struct TemporaryMedia {
    /// `image`, `voice`, `video`, or `music` (for its `thumb_media_id`).
    pub(crate) kind: &'static str,
    /// The id as written (a template's text when it is one).
    pub(crate) media_id: String,
    /// The day WeChat deletes it, in `zone`.
    pub(crate) expires: Date,
    /// The rules file's time zone, whose days `expires` counts.
    pub(crate) zone: TimeZone,
    /// Where `expires` is written (1-based; 0 when not known).
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// `expires`'s value: a day, `YYYY-MM-DD`.
pub(crate) fn parse_day(text: &str) -> Result<Date, String> {
    text.trim().parse::<Date>().map_err(|_| {
        format!(
            "`expires` is the day a temporary media id expires, as `2026-12-10` ({TEMPORARY_DAYS} days after it was uploaded or fetched), not `{}`",
            excerpt::excerpt(text)
        )
    })
}

/// The day a temporary media id fetched at `fetched` (unix seconds) expires, in `zone`.
pub(crate) fn expiry_day(fetched: i64, zone: &TimeZone) -> Date {
    let day = jiff::Timestamp::from_second(fetched)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(zone.clone())
        .date();
    day.checked_add(jiff::Span::new().days(TEMPORARY_DAYS))
        .unwrap_or(day)
}

/// `check`'s warning about `media` at `now` (unix seconds): when it expires, or that it
/// has.
pub(crate) fn warning(media: &TemporaryMedia, now: i64) -> String {
    let today = jiff::Timestamp::from_second(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(media.zone.clone())
        .date();
    let what = format!(
        "{} media id `{}`",
        media.kind,
        excerpt::cut(&media.media_id, 80)
    );
    let day = media.expires;
    let fix = "upload the file as permanent material (素材管理) and use that id";
    if today > day {
        format!("{what} expired on {day}: WeChat has deleted it, and this reply fails; {fix}")
    } else if today == day {
        format!("{what} is temporary and expires today ({day}); {fix}")
    } else {
        let days = (day - today).get_days();
        let unit = if days == 1 { "day" } else { "days" };
        format!("{what} is temporary: WeChat deletes it on {day} (in {days} {unit}); {fix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(expires: &str) -> TemporaryMedia {
        TemporaryMedia {
            kind: "image",
            media_id: "KgTiJlt4lI2YsHa1u2Pud3uyFzfXYUBNWgJlZ5uqBe0U".into(),
            expires: parse_day(expires).unwrap(),
            zone: TimeZone::get("Asia/Shanghai").unwrap(),
            line: 3,
            column: 5,
        }
    }

    #[test]
    fn the_warning_names_the_day_before_on_and_after_it() {
        // 2026-12-07 12:00 in Shanghai.
        let now = 1_796_616_000;
        assert_eq!(
            warning(&media("2026-12-10"), now),
            "image media id `KgTiJlt4lI2YsHa1u2Pud3uyFzfXYUBNWgJlZ5uqBe0U` is temporary: WeChat deletes it on 2026-12-10 (in 3 days); upload the file as permanent material (素材管理) and use that id"
        );
        assert!(warning(&media("2026-12-08"), now).contains("(in 1 day)"));
        assert!(warning(&media("2026-12-07"), now).contains("expires today (2026-12-07)"));
        assert!(warning(&media("2026-12-01"), now)
            .contains("expired on 2026-12-01: WeChat has deleted it, and this reply fails"));
    }

    /// A reply naming a temporary media id passed every check, and failed once WeChat had
    /// deleted the media. Marked with `expires:`, each is a warning of `lint` (what `check`
    /// prints) at its `expires`, naming the day; a day that is not one is an error.
    #[test]
    fn marked_media_ids_are_warned_about_at_their_expires() {
        let yaml = "rules:\n  - name: pic\n    when: { keyword: pic }\n    reply: { image: { media_id: KgTi, expires: 2020-01-02 } }\n    send:\n      - { voice: { media_id: NESs, expires: 2999-01-01 } }\n  - name: song\n    when: { keyword: song }\n    reply: { music: { thumb_media_id: th, expires: 2020-01-03 } }\n  - name: permanent\n    when: { keyword: p }\n    reply: { image: { media_id: Kept } }\n";
        let loaded = crate::rules::load_str(yaml, &[]).unwrap_or_else(|e| panic!("{e}"));
        let warnings: Vec<String> =
            crate::rules::lint(&loaded.rules, std::path::Path::new("rules.yaml"))
                .iter()
                .map(ToString::to_string)
                .collect();
        let fix = "upload the file as permanent material (素材管理) and use that id";
        assert_eq!(
            warnings,
            [
                format!("rules.yaml:4:48: rule `pic`: image media id `KgTi` expired on 2020-01-02: WeChat has deleted it, and this reply fails; {fix}"),
                format!("rules.yaml:6:45: rule `pic`: voice media id `NESs` is temporary: WeChat deletes it on 2999-01-01 (in {} days); {fix}", days_until(2999)),
                format!("rules.yaml:9:52: rule `song`: music media id `th` expired on 2020-01-03: WeChat has deleted it, and this reply fails; {fix}"),
            ]
        );
        let Err(errors) = crate::rules::load_str(
            "rules:\n  - name: pic\n    reply: { image: { media_id: KgTi, expires: soon } }\n",
            &[],
        ) else {
            panic!("`expires: soon` is no day");
        };
        assert!(
            errors.to_string().contains("rules.yaml:3:48: rule `pic`: `expires` is the day a temporary media id expires, as `2026-12-10` (3 days after it was uploaded or fetched), not `soon`"),
            "{errors}"
        );
    }

    /// Days from today (in Shanghai) to the first of January of `year`.
    fn days_until(year: i16) -> i32 {
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        let today = jiff::Timestamp::now().to_zoned(shanghai).date();
        (jiff::civil::date(year, 1, 1) - today).get_days()
    }

    #[test]
    fn a_fetch_expires_three_days_later_in_the_files_time_zone() {
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        // 2026-12-07 17:00 UTC is already the 8th in Shanghai.
        let fetched = 1_796_662_800;
        assert_eq!(expiry_day(fetched, &shanghai).to_string(), "2026-12-11");
        assert_eq!(
            expiry_day(fetched, &TimeZone::UTC).to_string(),
            "2026-12-10"
        );
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("tomorrow")
            .unwrap_err()
            .starts_with("`expires` is the day"));
    }
}
