//! Keyword folding: what users type on phones (`价格！`, `ＰＲＩＣＥ`, `订单２０２６`) meets the
//! keywords ops wrote (`价格`, `price`, `订单\d+`). A keyword criterion sees the text after
//! Unicode NFKC (full-width forms become ASCII), trimmed of surrounding whitespace and
//! punctuation; literal keywords are folded the same way at load, and compared without ASCII
//! case. Templates still see the raw `Content`.

use std::borrow::Cow;

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// The keyword text a criterion sees: NFKC, then trimmed of whitespace and punctuation at
/// both ends; case kept (regexes run on it, case-insensitively, and their captures come
/// from it). Borrowed when nothing changes, as for most Chinese text.
pub(crate) fn normal(text: &str) -> Cow<'_, str> {
    let stable = text.chars().all(|c| c.is_ascii() || is_ideograph(c));
    let nfkc: Cow<'_, str> = if stable || is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfkc().collect())
    };
    match nfkc {
        Cow::Borrowed(text) => Cow::Borrowed(trim(text)),
        Cow::Owned(text) => {
            let trimmed = trim(&text);
            if trimmed.len() == text.len() {
                Cow::Owned(text)
            } else {
                Cow::Owned(trimmed.to_owned())
            }
        }
    }
}

/// How a literal keyword of the rules file is folded, by where it must be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Literal {
    /// The whole text: folded as messages are (`folded`).
    Exact,
    /// The start of the text: trimmed at its start only (`Q:` stays `q:`).
    Prefix,
    /// Anywhere in the text: not trimmed (`C++` stays `c++`, ` 号` keeps its space).
    Contains,
}

/// A literal keyword folded for `kind`: NFKC and ASCII lowercase, trimmed as the text it
/// is compared with allows.
pub(crate) fn literal(text: &str, kind: Literal) -> String {
    match kind {
        Literal::Exact => folded(text).into_owned(),
        Literal::Prefix | Literal::Contains => {
            let nfkc: String = text.nfkc().collect();
            let kept = match kind {
                Literal::Prefix => {
                    let start =
                        nfkc.trim_start_matches(|c: char| c.is_whitespace() || is_punctuation(c));
                    if start.is_empty() {
                        nfkc.trim()
                    } else {
                        start
                    }
                }
                _ => nfkc.as_str(),
            };
            kept.to_ascii_lowercase()
        }
    }
}

/// `normal`, then ASCII lowercase: what literal keywords are compared with.
pub(crate) fn folded(text: &str) -> Cow<'_, str> {
    match normal(text) {
        Cow::Borrowed(text) if !text.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(text),
        other => Cow::Owned(other.to_ascii_lowercase()),
    }
}

/// Trims whitespace and punctuation at both ends; a text that is only punctuation (`?`,
/// `？` after NFKC) keeps it, trimmed of whitespace only: it is what the user asked.
fn trim(text: &str) -> &str {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || is_punctuation(c));
    if trimmed.is_empty() {
        text.trim()
    } else {
        trimmed
    }
}

/// Unicode punctuation (`！`, `。`, `…`, `「」`, `?`, `#`), not symbols (`+`, `$`, `<`, `~`)
/// or emoji: the same definition for ASCII as for the rest.
fn is_punctuation(c: char) -> bool {
    if c.is_ascii_alphanumeric() || is_ideograph(c) {
        return false;
    }
    c.general_category_group() == GeneralCategoryGroup::Punctuation
}

/// A CJK unified ideograph (U+4E00 to U+9FFF), most of what Chinese users type: unchanged by
/// NFKC and not punctuation, so told apart without the Unicode tables (which cost about
/// 1,000 instructions per Chinese keyword on the push path, by callgrind).
fn is_ideograph(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_phones_type_meets_what_ops_wrote() {
        for (typed, seen) in [
            ("价格！", "价格"),
            ("  价格。 ", "价格"),
            ("「价格」", "价格"),
            ("ＰＲＩＣＥ", "price"),
            ("Price?", "price"),
            ("订单２０２６", "订单2026"),
            ("…帮助…", "帮助"),
            ("价格😀", "价格😀"),
            ("a-b", "a-b"),
            // Symbols are not punctuation.
            ("C++", "c++"),
            ("$5", "$5"),
            // Only punctuation: kept, as what the user asked.
            ("？", "?"),
            (" ! ", "!"),
            ("  ", ""),
        ] {
            assert_eq!(folded(typed), seen, "{typed}");
        }
        // Case is kept for regexes and their captures.
        assert_eq!(normal("ＯＲＤＥＲ-２０２６！"), "ORDER-2026");
    }

    #[test]
    fn prefix_and_contains_literals_keep_what_their_match_needs() {
        assert_eq!(literal("Q:", Literal::Prefix), "q:");
        assert_eq!(literal("  ＶＩＰ", Literal::Prefix), "vip");
        assert_eq!(literal("C++", Literal::Contains), "c++");
        assert_eq!(literal("优惠 ", Literal::Contains), "优惠 ");
        assert_eq!(literal("价格！", Literal::Exact), "价格");
    }

    #[test]
    fn plain_text_is_not_copied() {
        assert!(matches!(folded("价格"), Cow::Borrowed("价格")));
        assert!(matches!(folded("price"), Cow::Borrowed("price")));
        assert!(matches!(normal(" 价格 "), Cow::Borrowed("价格")));
    }
}
