//! WeChat XML in and out: the pushed message as a tree of named fields, and the passive
//! reply as bytes. No crypto, no rules, no actix; WeChat field names live here.

pub mod catalog;
mod document;
mod inbound;
mod outbound;

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Duration;

pub use document::{WireError, MAX_DEPTH};
pub use inbound::{
    find_encrypt, parse_encrypted, parse_encrypted_reply, EncryptedReply, FieldRef, Message,
};
pub use outbound::{write_encrypted, write_fields, write_reply, Article, Reply, ReplyHeader};

/// How long a push may take, from its arrival to its passive reply, before the answer is
/// `success`: 3 s, well within the 5 s WeChat waits for a passive reply (after which it
/// gives up on the push and retries it), leaving room for the network both ways.
pub const PASSIVE_DEADLINE: Duration = Duration::from_secs(3);

/// Appends `text` to `out` as one or more CDATA sections, so that any user text survives.
///
/// `]]>` would end a CDATA section early, so it is split across two sections; characters
/// that XML 1.0 forbids anywhere (most C0 controls, lone surrogates cannot occur in `str`)
/// are dropped rather than producing a document WeChat would reject.
pub fn push_cdata(out: &mut String, text: &str) {
    out.push_str("<![CDATA[");
    // A searcher built once: `str::find` built one per call, a tenth of writing a reply.
    static END: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new("]]>"));
    let mut rest = text;
    while let Some(at) = END.find(rest.as_bytes()) {
        push_xml_chars(out, &rest[..at + 2]);
        out.push_str("]]><![CDATA[");
        rest = &rest[at + 2..];
    }
    push_xml_chars(out, rest);
    out.push_str("]]>");
}

fn push_xml_chars(out: &mut String, text: &str) {
    out.push_str(&xml_safe(text));
}

/// `text` without the characters XML 1.0 cannot carry: C0 controls but tab, LF and CR, and
/// U+FFFE/U+FFFF (lone surrogates cannot occur in `str`). Borrowed when there are none, as
/// there almost never are. Text bound for WeChat passes here (a passive reply through
/// [`push_cdata`]), so that such characters are dropped rather than sent.
pub fn xml_safe(text: &str) -> Cow<'_, str> {
    // Byte scans clear text without decoding it: the forbidden characters are bytes below
    // 0x20 and the UTF-8 sequences EF BF BE/BF.
    let bytes = text.as_bytes();
    if no_controls(bytes) && !has_noncharacter(bytes) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    }
}

/// Whether U+FFFE or U+FFFF is in `bytes` (UTF-8).
fn has_noncharacter(bytes: &[u8]) -> bool {
    memchr::memchr_iter(0xEF, bytes).any(|at| {
        bytes.get(at + 1) == Some(&0xBF) && matches!(bytes.get(at + 2), Some(0xBE | 0xBF))
    })
}

/// No byte below 0x20 but tab, LF and CR. Folded without branches, in blocks, so that the
/// compiler vectorizes it.
fn no_controls(bytes: &[u8]) -> bool {
    bytes.chunks(32).all(|block| {
        block.iter().fold(true, |ok, &b| {
            ok & ((b >= 0x20) | (b == b'\t') | (b == b'\n') | (b == b'\r'))
        })
    })
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// An OpenID as logs and the dashboard show it: its first 4 and last 2 characters
/// (`oAbC…yz`), enough to tell users apart in one page, not to find one.
pub fn mask_openid(openid: &str) -> String {
    let chars: Vec<char> = openid.chars().collect();
    if chars.len() <= 6 {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn openids_are_masked_to_their_ends() {
        assert_eq!(
            super::mask_openid("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
            "oUpF…6o"
        );
        assert_eq!(super::mask_openid("short"), "…");
        assert_eq!(super::mask_openid("用户一二三四五六"), "用户一二…五六");
    }

    use super::*;

    fn cdata(s: &str) -> String {
        let mut out = String::new();
        push_cdata(&mut out, s);
        out
    }

    #[test]
    fn cdata_plain_text_is_wrapped_verbatim() {
        assert_eq!(cdata("a < b & c 😀"), "<![CDATA[a < b & c 😀]]>");
    }

    #[test]
    fn cdata_terminator_is_split() {
        assert_eq!(cdata("x]]>y"), "<![CDATA[x]]]]><![CDATA[>y]]>");
        assert_eq!(
            cdata("]]>]]>"),
            "<![CDATA[]]]]><![CDATA[>]]]]><![CDATA[>]]>"
        );
    }

    #[test]
    fn xml_safe_borrows_clean_text_and_drops_forbidden_characters() {
        assert!(matches!(xml_safe("价格 a\tb\r\n😀"), Cow::Borrowed(_)));
        assert_eq!(xml_safe("a\u{0}b\u{1b}c\u{FFFF}d\u{FFFE}"), "abcd");
    }

    #[test]
    fn cdata_drops_characters_xml_forbids() {
        assert_eq!(cdata("a\u{0}b\u{1b}c\td"), "<![CDATA[abc\td]]>");
        // U+FFFE and U+FFFF go; other characters whose UTF-8 starts with 0xEF stay.
        assert_eq!(
            cdata("价\u{FFFE}格\u{FFFF}：\u{FFFD}\u{E000}"),
            "<![CDATA[价格：\u{FFFD}\u{E000}]]>"
        );
        // A control far into a long text, past the first blocks.
        let long = format!("{}\u{7}{}", "A".repeat(100), "b".repeat(40));
        assert_eq!(
            cdata(&long),
            format!("<![CDATA[{}{}]]>", "A".repeat(100), "b".repeat(40))
        );
    }
}
