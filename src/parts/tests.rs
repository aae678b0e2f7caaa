//! Tests of `split` and `split_with_marker`: where each kind of pause is found, which wins,
//! links and graphemes kept whole, a long mixed answer, and properties over any text.

use proptest::prelude::*;
use unicode_segmentation::UnicodeSegmentation;

use super::*;

/// The parts of `text`, after checking what holds for any text: none empty, none over
/// `limit`, and joined they are `text`.
#[track_caller]
fn parts(text: &str, limit: usize) -> Vec<String> {
    let parts = split(text, limit);
    for part in &parts {
        assert!(!part.is_empty(), "an empty part in {parts:?}");
        assert!(
            part.len() <= limit,
            "{} > {limit} bytes: {part:?}",
            part.len()
        );
    }
    assert_eq!(parts.concat(), text);
    parts
}

/// Where the cuts between `parts` fall in their text, in bytes.
fn cuts(parts: &[String]) -> Vec<usize> {
    parts
        .iter()
        .scan(0, |at, part| {
            *at += part.len();
            Some(*at)
        })
        .take(parts.len().saturating_sub(1))
        .collect()
}

fn is_grapheme_cut(text: &str, at: usize) -> bool {
    text.grapheme_indices(true).any(|(start, _)| start == at)
}

/// The pause `split` sees at the `|` in `marked`.
#[track_caller]
fn check_pause(marked: &str, expected: Option<Pause>) {
    let at = marked.find('|').expect("a | marks the place");
    let text = marked.replacen('|', "", 1);
    assert_eq!(pause_at(&text, at), expected, "at the | in {marked:?}");
}

#[test]
fn pauses_are_found_at_the_end_of_their_run() {
    use Pause::*;
    check_pause("一\n\n|二", Some(Paragraph));
    check_pause("一\r\n \r\n|二", Some(Paragraph));
    check_pause("一\n|\n二", None);
    check_pause("一\n|二", Some(Line));
    check_pause("一\r\n|二", Some(Line));
    check_pause("一\r|\n二", None);
    check_pause("好的。|然后", Some(Sentence));
    check_pause("他说：“好的！”|然后", Some(Sentence));
    check_pause("他说：“好的！|”然后", None);
    check_pause("真的？？|是", Some(Sentence));
    check_pause("真的？|？是", None);
    check_pause("等等……|好", Some(Sentence));
    check_pause("Done. |Next", Some(Sentence));
    check_pause("Done.| Next", None);
    check_pause("(Done.) |Next", Some(Sentence));
    check_pause("pi is 3.|14", None);
    check_pause("a.|b", None);
    check_pause("好.|我", Some(Sentence));
    check_pause("首先，|然后", Some(Clause));
    check_pause("甲、|乙", Some(Clause));
    check_pause("first, |then", Some(Clause));
    check_pause("first,|then", None);
    check_pause("word |word", Some(Space));
    check_pause("全角\u{3000}|空格", Some(Space));
    check_pause("wo|rd", None);
    check_pause("字|字", None);
}

#[test]
fn short_texts_are_one_part_and_an_empty_one_none() {
    assert_eq!(parts("你好 👋", WECHAT_TEXT_LIMIT), ["你好 👋"]);
    assert_eq!(parts(&"字".repeat(682), WECHAT_TEXT_LIMIT).len(), 1);
    assert_eq!(parts("", 16), Vec::<String>::new());
}

#[test]
fn a_paragraph_break_comes_before_a_line_break() {
    assert_eq!(
        parts("aaaaaa\n\nbbb\nccc\nddd", 14),
        ["aaaaaa\n\n", "bbb\nccc\nddd"]
    );
}

#[test]
fn a_line_break_comes_before_a_sentence_end() {
    assert_eq!(
        parts("aaaa. bbbb\ncccc. dddd eeee", 20),
        ["aaaa. bbbb\n", "cccc. dddd eeee"]
    );
}

#[test]
fn a_sentence_end_comes_before_a_clause_and_keeps_its_quotes() {
    assert_eq!(
        parts("我们走吧。他说：“好的！”然后，大家一起出发了", 50),
        ["我们走吧。他说：“好的！”", "然后，大家一起出发了"]
    );
    assert_eq!(
        parts("It costs 3.14 dollars. Really", 25),
        ["It costs 3.14 dollars. ", "Really"]
    );
}

#[test]
fn a_space_comes_before_a_cut_inside_a_word() {
    assert_eq!(parts("aaaa bbbb cccccccc", 12), ["aaaa bbbb ", "cccccccc"]);
}

#[test]
fn a_pause_early_in_the_room_is_passed_over_to_keep_parts_full() {
    // The paragraph break is in the first half of the room: cutting there would leave a
    // part far from full, so the text is cut at the last character that fits.
    let text = format!("短。\n\n{}", "长".repeat(30));
    assert_eq!(parts(&text, 60)[0], format!("短。\n\n{}", "长".repeat(17)));
}

#[test]
fn han_without_punctuation_is_cut_between_characters() {
    let text = "字".repeat(1000);
    let parts = parts(&text, WECHAT_TEXT_LIMIT);
    let lens: Vec<usize> = parts.iter().map(String::len).collect();
    assert_eq!(lens, [2046, 954]);
}

#[test]
fn emoji_and_accents_stay_whole() {
    for grapheme in ["👩‍👩‍👧‍👦", "👍🏽", "🇨🇳", "e\u{301}", "❤️"] {
        let text = grapheme.repeat(20);
        for limit in [29, 30, 60, 97] {
            let parts = parts(&text, limit);
            for part in &parts {
                assert_eq!(
                    part.len() % grapheme.len(),
                    0,
                    "{grapheme} cut in {parts:?}"
                );
            }
        }
    }
}

#[test]
fn a_crlf_is_never_cut_in_two() {
    assert_eq!(parts("abc\r\nd", 4), ["abc", "\r\nd"]);
    assert_eq!(parts("ab\r\ncd", 4), ["ab\r\n", "cd"]);
}

#[test]
fn a_grapheme_longer_than_the_limit_is_cut_between_characters() {
    let zalgo = format!("z{}", "\u{336}".repeat(40));
    let parts = parts(&zalgo, 16);
    assert!(parts.len() > 1);
}

#[test]
fn limits_under_four_bytes_are_taken_as_four() {
    assert_eq!(split("😀😀", 1), ["😀", "😀"]);
    assert_eq!(split("ab", 0), ["ab"]);
}

#[test]
fn links_are_found_with_their_scheme_up_to_where_they_end() {
    fn found(text: &str) -> Vec<&str> {
        links(text).into_iter().map(|link| &text[link]).collect()
    }
    assert_eq!(
        found("见https://x.cn/a?b=1&c=中，或 HTTP://Y.CN/p.html 与weixin://dl/chat。"),
        [
            "https://x.cn/a?b=1&c=中",
            "HTTP://Y.CN/p.html",
            "weixin://dl/chat"
        ]
    );
    assert_eq!(
        found("点<a href=\"https://x.cn/a b\">这 里</a>。<A\nHREF='#'>上</A> <abbr>x</abbr>"),
        [
            "<a href=\"https://x.cn/a b\">这 里</a>",
            "<A\nHREF='#'>上</A>"
        ]
    );
    assert_eq!(found("<a href=x> 没有结束"), ["<a href=x>"]);
    assert_eq!(found("<a href 没有结束"), Vec::<&str>::new());
    assert_eq!(found("ftp://x.cn mailto:a@b.cn"), Vec::<&str>::new());
    assert_eq!(found("see https://x.cn/\"q\""), ["https://x.cn/"]);
}

#[test]
fn a_link_that_would_not_fit_goes_whole_to_the_next_part() {
    let text = "说明文字 https://example.com/abcdefghij 后文";
    assert_eq!(
        parts(text, 32),
        ["说明文字 ", "https://example.com/abcdefghij ", "后文"]
    );
    let anchor = "<a href=\"https://x.cn/q?id=7\">点这里查看详情</a>";
    let text = format!("{}{anchor}{}", "前".repeat(10), "后".repeat(10));
    let parts = parts(&text, 80);
    assert!(parts.iter().any(|part| part.contains(anchor)), "{parts:?}");
}

#[test]
fn a_link_longer_than_the_limit_is_the_one_thing_cut() {
    let url = format!("https://example.com/{}", "a/".repeat(50));
    let text = format!("看 {url} 吧");
    let parts = parts(&text, 40);
    assert!(!parts.iter().any(|part| part.contains(&url)));
    // Cut where it must be, and no sooner: the link starts a part, filled to the limit.
    assert_eq!(parts[0], "看 ");
    assert_eq!(parts[1].len(), 40);
}

/// An answer of about 5,000 bytes as an assistant writes one: Chinese paragraphs, emoji,
/// bare links and anchors.
fn long_answer() -> String {
    let mut text = String::new();
    for i in 0..14 {
        text.push_str(&format!("## 第{i}部分 👩‍💻\n\n"));
        text.push_str("根据您的问题，我整理了以下要点。首先，请确认账号已经认证👍🏽；");
        text.push_str(&format!(
            "其次，详细说明见 https://example.com/docs/{i}?lang=zh-CN&ref=wechat 。\n"
        ));
        text.push_str("“客服消息”在用户发消息后 48 小时内可发送 5 条！🇨🇳 ");
        text.push_str(&format!(
            "也可以<a href=\"https://example.com/faq#{i}\">点这里查看常见问题</a>，"
        ));
        text.push_str("或者回复“继续”查看下一段……\n\n");
    }
    text
}

#[test]
fn a_long_answer_splits_into_full_parts_with_links_and_emoji_whole() {
    let text = long_answer();
    assert!(text.len() > 5000, "{} bytes", text.len());
    let parts = parts(&text, WECHAT_TEXT_LIMIT);
    assert_eq!(parts.len(), 3);
    for at in cuts(&parts) {
        assert!(is_grapheme_cut(&text, at), "a grapheme cut at {at}");
        assert!(
            link_around(&links(&text), at).is_none(),
            "a link cut at {at}"
        );
        // Each part ends a paragraph.
        assert!(
            text[..at].ends_with("\n\n"),
            "cut at {at} ends no paragraph"
        );
    }
    for i in 0..14 {
        let url = format!("https://example.com/docs/{i}?lang=zh-CN&ref=wechat");
        assert!(parts.iter().any(|part| part.contains(&url)));
    }
}

const MARKER: &str = "\n（回复 继续 查看下一段）";

#[test]
fn a_marker_ends_every_part_but_the_last_within_the_limit() {
    let text = long_answer();
    let parts = split_with_marker(&text, WECHAT_TEXT_LIMIT, MARKER);
    assert_eq!(parts.len(), 3);
    let mut bodies = String::new();
    for (i, part) in parts.iter().enumerate() {
        assert!(part.len() <= WECHAT_TEXT_LIMIT);
        let body = if i + 1 < parts.len() {
            part.strip_suffix(MARKER).expect("a marker")
        } else {
            part
        };
        bodies.push_str(body);
    }
    assert_eq!(bodies, text);
}

#[test]
fn a_text_that_fits_takes_no_marker() {
    assert_eq!(split_with_marker("短", 16, "…"), ["短"]);
    assert_eq!(split_with_marker("", 16, "…"), Vec::<String>::new());
    // The last part may use the whole limit: only the ones before carry the marker.
    assert_eq!(split_with_marker("aaaa bbbb", 6, "+"), ["aaaa +", "bbbb"]);
}

#[test]
fn a_marker_that_leaves_no_room_is_left_out() {
    assert_eq!(
        split_with_marker("aaaa bbbb cccc", 10, "0123456789"),
        split("aaaa bbbb cccc", 10)
    );
}

#[test]
fn hostile_texts_split_in_linear_time() {
    // Each would be quadratic if links were searched from every candidate.
    let texts = [
        "https://".repeat(20_000),
        "<a ".repeat(50_000),
        "<a >".repeat(40_000),
        format!("{}{}", "<a>x".repeat(30_000), "</a>"),
        " ".repeat(200_000),
        "\n".repeat(200_000),
        "字".repeat(100_000),
    ];
    for text in &texts {
        let parts = parts(text, WECHAT_TEXT_LIMIT);
        assert!(!parts.is_empty());
    }
}

/// Pieces an answer is made of: pauses of every kind, links (each followed by a space, so
/// that it ends where the piece does), multi-character graphemes, and plain runs.
const PIECES: &[&str] = &[
    "\n",
    "\n\n",
    "\r\n",
    "。",
    "！”",
    ". ",
    "? ",
    "，",
    ", ",
    " ",
    "\u{3000}",
    "中文",
    "句子很长没有标点",
    "word",
    "3.14",
    "https://example.com/路径?a=1 ",
    "HTTP://X.CN ",
    "<a href=\"https://x.cn/q\">点 我</a>",
    "👩‍👩‍👧‍👦",
    "👍🏽",
    "🇨🇳",
    "e\u{301}",
    "\t",
];

fn answer() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..120).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn any_text_splits_into_parts_that_join_back(text in any::<String>(), limit in 16usize..120) {
        parts(&text, limit);
    }

    #[test]
    fn an_answer_splits_with_links_and_graphemes_whole(text in answer(), limit in 16usize..400) {
        let parts = parts(&text, limit);
        // Every link and grapheme in the pieces is at most 64 bytes: with that much room,
        // none is cut.
        if limit >= 64 {
            let links = links(&text);
            for at in cuts(&parts) {
                prop_assert!(is_grapheme_cut(&text, at), "a grapheme cut at {}", at);
                prop_assert!(link_around(&links, at).is_none(), "a link cut at {}", at);
            }
        }
    }

    #[test]
    fn parts_with_markers_fit_and_join_back(
        text in prop_oneof![answer(), any::<String>()],
        limit in 16usize..300,
        marker in prop::sample::select(&[MARKER, "…", "", "\n>>"][..]),
    ) {
        let parts = split_with_marker(&text, limit, marker);
        let marked = marker.len() + 4 <= limit;
        let mut bodies = String::new();
        for (i, part) in parts.iter().enumerate() {
            prop_assert!(part.len() <= limit);
            let body = if marked && i + 1 < parts.len() {
                part.strip_suffix(marker).expect("a marker")
            } else {
                part.as_str()
            };
            prop_assert!(!body.is_empty());
            bodies.push_str(body);
        }
        prop_assert_eq!(bodies, text);
    }
}
