//! Long answers made into parts WeChat takes: [`split`] cuts a text into parts of at most a
//! number of bytes, at the best boundary it can find and never inside a character or a link;
//! [`markdown_to_plain`] turns a backend's Markdown into chat text. Pure functions over text:
//! no IO, no settings, nothing else of the crate. A caller drops what XML cannot carry
//! (`wire::xml_safe`) before splitting, so that the parts are what is sent.

mod plain;
#[cfg(test)]
mod tests;

use std::ops::Range;

use unicode_segmentation::GraphemeCursor;

pub use plain::markdown_to_plain;

/// The most a WeChat text message carries, in UTF-8 bytes: a passive reply's `Content` and a
/// customer-service message's `text.content` alike.
pub const WECHAT_TEXT_LIMIT: usize = 2048;

/// The least limit [`split`] works with: the longest UTF-8 character, so that every part
/// holds at least one whole character.
const MIN_LIMIT: usize = 4;

/// `text` cut into parts of at most `limit` bytes each, in order, none empty, such that
/// `split(text, limit).concat() == text`: nothing is dropped, added or moved. Whatever ends a
/// part (a line's `\n`, a sentence's `。`, the spaces after a word) stays at the end of that
/// part, so the next part starts with what follows it.
///
/// A text of at most `limit` bytes is one part (an empty text, none). Longer ones are cut
/// where reading pauses most, looking at the second half of the room each part has so that
/// parts stay full: after a blank line (between paragraphs), else after a line, else after a
/// sentence (`。！？；…` or `.!?;` before a space, with the closing quotes and brackets after
/// them), else after a clause (`，、：`, or `,:` before a space), else after spaces, else
/// between two graphemes (an emoji with its skin tone or its ZWJ family stays whole), else
/// between two characters. A cut is never inside a UTF-8 character, nor inside a link: a
/// `http://`, `https://` or `weixin://` URL up to whitespace, CJK punctuation or `<>"`, and
/// an `<a …>…</a>` element; a link that would not fit goes whole to the next part. The one
/// exception is a link longer than `limit` by itself, which is cut where it must be.
///
/// A `limit` under 4 bytes is taken as 4, the longest character.
pub fn split(text: &str, limit: usize) -> Vec<String> {
    ranges(text, limit.max(MIN_LIMIT), 0)
        .into_iter()
        .map(|range| text[range].to_owned())
        .collect()
}

/// As [`split`], but each part except the last ends with `marker` (such as
/// `"\n（回复 继续 查看下一段）"`), which counts within `limit`: every part, marker included,
/// is at most `limit` bytes. The parts with their markers removed, joined, are `text`.
///
/// A text of at most `limit` bytes is one part, with no marker. A marker that would leave
/// less than 4 bytes of text in a part is not added: the parts are then [`split`]'s.
pub fn split_with_marker(text: &str, limit: usize, marker: &str) -> Vec<String> {
    let limit = limit.max(MIN_LIMIT);
    if marker.len() + MIN_LIMIT > limit {
        return split(text, limit);
    }
    let ranges = ranges(text, limit, marker.len());
    let last = ranges.len().saturating_sub(1);
    ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let mut part = text[range].to_owned();
            if i < last {
                part.push_str(marker);
            }
            part
        })
        .collect()
}

/// The byte ranges of the parts: each but the last at most `limit - reserve` bytes (the
/// room a marker takes), the last at most `limit`. `limit - reserve` is at least
/// [`MIN_LIMIT`].
fn ranges(text: &str, limit: usize, reserve: usize) -> Vec<Range<usize>> {
    let links = links(text);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = if text.len() - start <= limit {
            text.len()
        } else {
            cut(text, start, limit - reserve, &links)
        };
        parts.push(start..end);
        start = end;
    }
    parts
}

/// How good a place to cut is; a better one is greater.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Pause {
    Space,
    Clause,
    Sentence,
    Line,
    Paragraph,
}

/// Where the part that starts at `start` ends, given `room` bytes and more text than that
/// after `start`. Always past `start`: every part makes progress.
fn cut(text: &str, start: usize, room: usize, links: &[Range<usize>]) -> usize {
    let mut hard_end = start + room;
    while !text.is_char_boundary(hard_end) {
        hard_end -= 1;
    }
    // The last place outside a link; a link that starts the part and outruns its room is
    // the one case cut inside (`forced`), and then every place in it is allowed.
    let (end, forced) = match link_around(links, hard_end) {
        Some(link) if link.start > start => (link.start, false),
        Some(_) => (hard_end, true),
        None => (hard_end, false),
    };
    let allowed = |at: usize| forced || link_around(links, at).is_none();

    // The best pause in the second half of the room, the latest of its kind.
    let half = start + (end - start) / 2;
    let mut best: Option<(Pause, usize)> = None;
    let mut at = end;
    while at > half && at > start {
        if text.is_char_boundary(at) && allowed(at) {
            if let Some(pause) = pause_at(text, at) {
                if best.is_none_or(|(kind, _)| pause > kind) {
                    best = Some((pause, at));
                    if pause == Pause::Paragraph {
                        break;
                    }
                }
            }
        }
        at -= 1;
    }
    if let Some((_, at)) = best {
        return at;
    }
    // No pause: the last grapheme boundary, else the last character boundary.
    let mut at = end;
    while at > start {
        if text.is_char_boundary(at) && allowed(at) && is_grapheme_boundary(text, at) {
            return at;
        }
        at -= 1;
    }
    end
}

/// What kind of pause a cut at `at` (a character boundary inside `text`) would fall on, if
/// any. A pause is at the end of its run: after the last of several newlines, spaces or
/// closing quotes, so that these stay on the part before.
fn pause_at(text: &str, at: usize) -> Option<Pause> {
    let before = &text[..at];
    let prev = before.chars().next_back()?;
    let next = text[at..].chars().next()?;
    if prev == '\n' {
        if next == '\n' || next == '\r' {
            return None;
        }
        let line_before = before[..before.len() - 1].trim_end_matches(['\r', ' ', '\t']);
        return Some(if line_before.ends_with('\n') {
            Pause::Paragraph
        } else {
            Pause::Line
        });
    }
    if next.is_whitespace() || is_closer(next) || is_end(next) || is_ascii_end(next) {
        return None;
    }
    if is_space(prev) {
        let words = before.trim_end_matches(is_space);
        let said = words.trim_end_matches(is_closer);
        return Some(match said.chars().next_back() {
            Some(c) if is_end(c) || is_ascii_end(c) => Pause::Sentence,
            Some(c) if is_comma(c) || c == ',' || c == ':' => Pause::Clause,
            _ => Pause::Space,
        });
    }
    // With no space after it, ASCII punctuation ends a sentence only before a non-ASCII
    // character ("好.我"): "3.14" and "a.b" go on.
    let said = before.trim_end_matches(is_closer);
    match said.chars().next_back() {
        Some(c) if is_end(c) || (is_ascii_end(c) && !next.is_ascii()) => Some(Pause::Sentence),
        Some(c) if is_comma(c) => Some(Pause::Clause),
        _ => None,
    }
}

/// Sentence ends that need no space after them.
fn is_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '…' | '．' | '‼' | '⁇' | '⁉')
}

fn is_ascii_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | ';')
}

/// CJK clause marks, which need no space after them.
fn is_comma(c: char) -> bool {
    matches!(c, '，' | '、' | '：')
}

/// Closing quotes and brackets, which stay with the sentence they close.
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | ')'
            | ']'
            | '}'
            | '”'
            | '’'
            | '）'
            | '」'
            | '』'
            | '】'
            | '》'
            | '〉'
            | '〕'
            | '〗'
            | '］'
            | '｝'
    )
}

/// Whitespace within a line.
fn is_space(c: char) -> bool {
    c != '\n' && c != '\r' && c.is_whitespace()
}

fn is_grapheme_boundary(text: &str, at: usize) -> bool {
    // The whole text is the one chunk, so the cursor never asks for more context.
    matches!(
        GraphemeCursor::new(at, text.len(), true).is_boundary(text, 0),
        Ok(true)
    )
}

/// The link `at` falls strictly inside, if any (a cut at a link's start or end is fine).
fn link_around(links: &[Range<usize>], at: usize) -> Option<&Range<usize>> {
    let after = links.partition_point(|link| link.start < at);
    let link = links.get(after.checked_sub(1)?)?;
    (at < link.end).then_some(link)
}

/// The links in `text`, as byte ranges in order, overlapping ones merged: URLs with a scheme
/// WeChat opens, and `<a …>…</a>` elements (an `<a …>` without its `</a>`, the tag alone).
/// Each search starts past the last link found, so that no text is scanned twice.
fn links(text: &str) -> Vec<Range<usize>> {
    // Lowercase ASCII has the same byte offsets, and finds `HTTPS://` and `<A HREF` too.
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&lower.as_bytes()[from..], b"://") {
        let colon = from + at;
        let after = colon + "://".len();
        from = after;
        let scheme = ["https", "http", "weixin"]
            .into_iter()
            .find(|scheme| lower[..colon].ends_with(scheme));
        if let Some(scheme) = scheme {
            let rest = &text[after..];
            let end = after + rest.find(ends_url).unwrap_or(rest.len());
            found.push(colon - scheme.len()..end);
            from = end;
        }
    }
    let mut from = 0;
    let mut closes = true;
    while let Some(at) = memchr::memmem::find(&lower.as_bytes()[from..], b"<a") {
        let open = from + at;
        from = open + "<a".len();
        let after = lower[from..].chars().next();
        if !after.is_some_and(|c| c.is_ascii_whitespace() || c == '>') {
            continue;
        }
        // Without a `>` here there is none further on either.
        let Some(tag_len) = lower[open..].find('>') else {
            break;
        };
        // Likewise without a `</a>`: it is looked for until it is not found.
        let close = if closes {
            lower[open..].find("</a>")
        } else {
            None
        };
        closes = close.is_some();
        let end = match close {
            Some(close) if close > tag_len => open + close + "</a>".len(),
            _ => open + tag_len + 1,
        };
        found.push(open..end);
        from = end;
    }
    found.sort_by_key(|link| link.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(found.len());
    for link in found {
        match merged.last_mut() {
            Some(last) if link.start < last.end => last.end = last.end.max(link.end),
            _ => merged.push(link),
        }
    }
    merged
}

/// What ends a bare URL: whitespace, CJK punctuation (and full-width forms), and the
/// characters that end one in HTML.
fn ends_url(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '<' | '>' | '"')
        || matches!(c, '\u{3000}'..='\u{303F}' | '\u{FF00}'..='\u{FF65}')
        || matches!(c, '“' | '”' | '‘' | '’' | '…' | '—')
}
