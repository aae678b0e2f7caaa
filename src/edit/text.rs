//! Lines of the rules file's text, and the splices an edit is made of. Byte offsets only:
//! a line ends at `\n` (its `\r`, in a CRLF file, stays with it); nothing here knows YAML.

/// One replacement: the bytes `start..end` of the original text become `with`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Splice {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) with: String,
}

impl Splice {
    pub(super) fn new(start: usize, end: usize, with: impl Into<String>) -> Splice {
        Splice {
            start,
            end,
            with: with.into(),
        }
    }

    pub(super) fn insert(at: usize, with: impl Into<String>) -> Splice {
        Splice::new(at, at, with)
    }
}

/// `text` with every splice made. Splices must not overlap; two inserts at one offset keep
/// their order. Returns `None` when two overlap (a bug in the caller, never guessed around).
pub(super) fn splice(text: &str, splices: &[Splice]) -> Option<String> {
    let mut sorted: Vec<&Splice> = splices.iter().collect();
    sorted.sort_by_key(|s| (s.start, s.end));
    let mut out = String::with_capacity(text.len() + 256);
    let mut at = 0;
    for s in sorted {
        if s.start < at || s.end < s.start || s.end > text.len() {
            return None;
        }
        out.push_str(text.get(at..s.start)?);
        out.push_str(&s.with);
        at = s.end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// The line break the file uses: that of its first line, `\n` when it has none.
pub(super) fn line_break(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes()[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// Where the line holding `at` starts.
pub(super) fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// Where the line holding `at` ends: at its line break (`\r\n` or `\n`), else the text's end.
pub(super) fn line_end(text: &str, at: usize) -> usize {
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    if end > at && text.as_bytes()[end - 1] == b'\r' && end < text.len() {
        end - 1
    } else {
        end
    }
}

/// Where the line after the one holding `at` starts: past its line break, or the text's end.
pub(super) fn next_line(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i + 1)
}

/// Where the line before the one starting at `start` starts (`None` on the first line).
pub(super) fn previous_line(text: &str, start: usize) -> Option<usize> {
    (start > 0).then(|| line_start(text, start - 1))
}

/// The line starting at `start`, without its line break.
pub(super) fn line_at(text: &str, start: usize) -> &str {
    &text[start..line_end(text, start)]
}

/// Whether the line starting at `start` holds only spaces and tabs.
pub(super) fn is_blank(text: &str, start: usize) -> bool {
    line_at(text, start).trim_matches([' ', '\t']).is_empty()
}

/// Whether the line starting at `start` is a comment line (blanks, then `#`).
pub(super) fn is_comment(text: &str, start: usize) -> bool {
    line_at(text, start)
        .trim_start_matches([' ', '\t'])
        .starts_with('#')
}

/// The number of spaces that start the line at `start` (tabs are not YAML indentation).
pub(super) fn indent(text: &str, start: usize) -> usize {
    line_at(text, start).len() - line_at(text, start).trim_start_matches(' ').len()
}

/// The column of `at`, in characters, within its line.
pub(super) fn column(text: &str, at: usize) -> usize {
    text[line_start(text, at)..at].chars().count()
}

/// The 1-based line number of `at`, for error messages.
pub(super) fn line_number(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// A short excerpt of the line holding `at`, for error messages: at most 40 characters.
pub(super) fn excerpt(text: &str, at: usize) -> String {
    let start = line_start(text, at);
    let line = text[start..line_end(text, start)].trim();
    let mut out: String = line.chars().take(40).collect();
    if line.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// The bytes to remove for the whole lines from the one starting at `first` to the one
/// holding `last`, so that the text keeps its final line break or its lack of one: past the
/// last line's break, or, for lines that end the text without one, from the break before.
pub(super) fn whole_lines(text: &str, first: usize, last: usize) -> (usize, usize) {
    let end = next_line(text, last);
    if end == text.len() && !text.ends_with('\n') && first > 0 {
        // `first - 1` is the `\n` ending the line before; take its `\r` too.
        let before = if first >= 2 && text.as_bytes()[first - 2] == b'\r' {
            first - 2
        } else {
            first - 1
        };
        (before, end)
    } else {
        (first, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_apply_in_order_and_refuse_overlaps() {
        let text = "abcdef";
        let done = splice(
            text,
            &[
                Splice::new(4, 5, "E"),
                Splice::insert(0, "<"),
                Splice::new(1, 2, ""),
            ],
        );
        assert_eq!(done.as_deref(), Some("<acdEf"));
        assert_eq!(
            splice(text, &[Splice::new(1, 3, ""), Splice::new(2, 4, "")]),
            None
        );
        assert_eq!(splice(text, &[Splice::new(5, 9, "")]), None);
    }

    #[test]
    fn lines_in_lf_and_crlf_files() {
        for br in ["\n", "\r\n"] {
            let text = format!("a: 1{br}  b: 2{br}{br}# c{br}d");
            assert_eq!(line_break(&text), br);
            let b = text.find('b').unwrap();
            let ls = line_start(&text, b);
            assert_eq!(line_at(&text, ls), "  b: 2");
            assert_eq!(indent(&text, ls), 2);
            assert_eq!(column(&text, b), 2);
            assert_eq!(line_number(&text, b), 2);
            let blank = next_line(&text, b);
            assert!(is_blank(&text, blank));
            assert!(is_comment(&text, next_line(&text, blank)));
            assert_eq!(previous_line(&text, ls), Some(0));
            assert_eq!(previous_line(&text, 0), None);
            let d = text.len() - 1;
            assert_eq!(line_end(&text, d), text.len());
            // The last line has no break: its removal takes the break before it.
            let (from, to) = whole_lines(&text, line_start(&text, d), d);
            assert_eq!(&text[..from], format!("a: 1{br}  b: 2{br}{br}# c"));
            assert_eq!(to, text.len());
            let (from, to) = whole_lines(&text, ls, b);
            assert_eq!((from, &text[to..]), (ls, &text[blank..]));
        }
    }

    #[test]
    fn excerpts_are_short() {
        let text = format!("k: {}\n", "长".repeat(60));
        let e = excerpt(&text, 0);
        assert_eq!(e.chars().count(), 41);
        assert!(e.ends_with('…'));
    }
}
