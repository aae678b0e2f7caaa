//! The export's media for `wxrules import`: what it names (`ExportMedia`), what
//! `--download-media` fetched for it (`Downloads`), and the extension a fetched file is
//! kept under (`media_extension`).

use std::collections::HashMap;

/// An image, voice or video of the export: a temporary media id, or for a video maybe the
/// download link the API gives instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportMedia {
    /// `image`, `voice` or `video`, as a reply names it.
    pub kind: &'static str,
    /// The export's `content`.
    pub content: String,
}

impl ExportMedia {
    /// Whether the export gives it as a download link rather than a media id (WeChat's
    /// documented example does so for videos).
    pub fn is_link(&self) -> bool {
        self.content.starts_with("http://") || self.content.starts_with("https://")
    }
}

/// A media file fetched for the import, under the templates directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Its path under the templates directory, as `file:` names it.
    pub file: String,
    /// A permanent video's title and description, as WeChat keeps them.
    pub video: Option<(String, String)>,
}

/// What `--download-media` fetched: for each of the export's media, its file, or why
/// there is none (the reply then keeps the temporary media id, with `expires:`).
#[derive(Debug, Clone, Default)]
pub struct Downloads {
    fetched: HashMap<ExportMedia, Result<Downloaded, String>>,
}

impl Downloads {
    pub fn insert(&mut self, media: ExportMedia, result: Result<Downloaded, String>) {
        self.fetched.insert(media, result);
    }

    pub(super) fn get(&self, media: &ExportMedia) -> Option<&Result<Downloaded, String>> {
        self.fetched.get(media)
    }
}

/// What the import knows of the export's media: the day its temporary ids expire, the
/// files fetched for them, and the media met so far.
pub(super) struct MediaPlan<'a> {
    pub(super) expires: &'a str,
    pub(super) downloads: &'a Downloads,
    pub(super) met: Vec<ExportMedia>,
}

impl MediaPlan<'_> {
    /// Notes `media` as met, and gives what was fetched for it.
    pub(super) fn meet(&mut self, media: &ExportMedia) -> Option<Result<Downloaded, String>> {
        if !self.met.contains(media) {
            self.met.push(media.clone());
        }
        self.downloads.get(media).cloned()
    }
}

/// The extension a file fetched for a reply of `kind` is kept under: the one its content
/// type names, else its file name's, else the one its first bytes show; `None` when that is
/// not a format WeChat takes for permanent material of `kind` (`rules::media_limits`), or
/// none is known.
pub fn media_extension(
    kind: &str,
    content_type: &str,
    filename: Option<&str>,
    bytes: &[u8],
) -> Option<&'static str> {
    let by_type = match content_type {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => Some("jpg"),
        "image/png" => Some("png"),
        "image/gif" => Some("gif"),
        "image/bmp" | "image/x-ms-bmp" => Some("bmp"),
        "audio/amr" => Some("amr"),
        "audio/mpeg" | "audio/mp3" => Some("mp3"),
        "audio/wav" | "audio/x-wav" | "audio/wave" => Some("wav"),
        "audio/x-ms-wma" => Some("wma"),
        "video/mp4" => Some("mp4"),
        _ => None,
    };
    let (formats, _) = crate::rules::media_limits(kind);
    let by_name = || {
        let extension = std::path::Path::new(filename?)
            .extension()?
            .to_str()?
            .to_ascii_lowercase();
        formats.iter().copied().find(|f| *f == extension)
    };
    let found = by_type.or_else(by_name).or_else(|| sniff(bytes))?;
    formats.contains(&found).then_some(found)
}

/// The format a file's first bytes show, of those WeChat takes as permanent material.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if starts(b"\xff\xd8\xff") {
        Some("jpg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("gif")
    } else if starts(b"#!AMR") {
        Some("amr")
    } else if starts(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xff && bytes[1] & 0xe0 == 0xe0) {
        Some("mp3")
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WAVE") {
        Some("wav")
    } else if starts(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11") {
        Some("wma")
    } else if bytes.get(4..8) == Some(b"ftyp") {
        Some("mp4")
    } else if starts(b"BM") {
        Some("bmp")
    } else {
        None
    }
}
