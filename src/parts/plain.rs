//! A backend's Markdown as text a WeChat chat shows well (`format: plain`): the structure kept
//! as lines, bullets and numbers, the markup dropped, links as the `<a href>` WeChat renders.
//! Pure, and total: any input gives some text.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// `md` (CommonMark with tables, strikethrough and task lists) as plain chat text:
///
/// - Blocks are separated by one blank line; a heading is its text on its own line, with
///   the block after it on the next line. Level 1 and 2 headings are framed `【…】`, as
///   Chinese chat writing marks a title; lower levels are the bare text.
/// - Bold, italic and strikethrough markers are dropped; inline code loses its backticks.
/// - List items are lines `• item` or `1. item` (numbered from the list's start), nested
///   ones indented by two spaces a level; task items are `☐ item` / `☑ item`.
/// - A link is `<a href="url">text</a>`, which WeChat text messages show as a tappable
///   `text`, when its URL is `http(s)://` or `weixin://` and differs from its text; the bare
///   URL when the text is the URL (or empty); `text (url)` for another scheme; the text
///   alone for a fragment (`#…`) or an email autolink. An image is its alt text and URL in
///   the same form (its alt text alone inside a link).
/// - A code block is its text, each line indented by four spaces; a block quote is its text
///   without `>`; a table is a line per row with its cells joined by ` | `; a thematic break
///   is a line `────────`.
/// - HTML is kept as text without its tags (`<br>` and the end of a paragraph, list item,
///   heading, div or table row become a line break; the common entities are decoded),
///   except `<a …>` and `</a>`, kept as they are for WeChat to render.
///
/// Lines lose trailing whitespace, blank lines never come two in a row, and the result has
/// no blank line at either end and no trailing whitespace.
pub fn markdown_to_plain(md: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut writer = Writer::default();
    for event in Parser::new_ext(md, options) {
        writer.event(event);
    }
    tidy(&writer.out)
}

/// The text being written, and where in the document it is.
#[derive(Default)]
struct Writer {
    out: String,
    /// Newlines due before the next text. Owed rather than written, so that nothing trails
    /// the last block, and a block's separation and a text's own newline do not add up.
    owed: usize,
    /// Set after a heading: the next block follows on the next line, not after a blank one.
    tight: bool,
    /// What each line starts with inside list items and code blocks, a piece per level.
    indent: Vec<String>,
    /// Set just after an item's marker: the item's first block goes on the marker's line.
    marker: bool,
    /// The open lists: the next item's number, or `None` for bullets.
    lists: Vec<Option<u64>>,
    /// The open links and images: where their text starts in `out`, and their URL.
    links: Vec<(usize, String)>,
    /// Where the open heading's text starts in `out`.
    heading: usize,
    /// How many cells the current table row has had.
    cells: usize,
}

impl Writer {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) | Event::Code(text) => self.push(&text),
            Event::InlineMath(text) | Event::DisplayMath(text) => self.push(&text),
            Event::FootnoteReference(name) => self.push(&format!("[{name}]")),
            Event::Html(html) | Event::InlineHtml(html) => self.push(&strip_tags(&html)),
            Event::SoftBreak | Event::HardBreak => self.owed += 1,
            Event::Rule => {
                self.block();
                self.push("────────");
            }
            Event::TaskListMarker(done) => {
                let checkbox = if done { "☑ " } else { "☐ " };
                // The box stands in for the item's bullet, where the bullet was.
                if self.out.ends_with("• ") {
                    self.out.truncate(self.out.len() - "• ".len());
                    self.out.push_str(checkbox);
                } else {
                    self.push(checkbox);
                }
            }
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph
            | Tag::BlockQuote(_)
            | Tag::HtmlBlock
            | Tag::Table(_)
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::MetadataBlock(_) => self.block(),
            Tag::Heading { level, .. } => {
                self.block();
                self.flush();
                self.heading = self.out.len();
                if framed(level) {
                    self.out.push('【');
                }
            }
            Tag::CodeBlock(_) => {
                self.block();
                self.indent.push("    ".to_owned());
            }
            Tag::List(first) => {
                if self.lists.is_empty() {
                    self.block();
                } else {
                    self.line();
                }
                self.lists.push(first);
            }
            Tag::Item => {
                self.line();
                let marker = match self.lists.last_mut() {
                    Some(Some(number)) => {
                        let marker = format!("{number}. ");
                        *number += 1;
                        marker
                    }
                    _ => "• ".to_owned(),
                };
                self.push(&marker);
                self.marker = true;
                // Continuation lines line up under the item's text.
                self.indent.push(" ".repeat(marker.chars().count()));
            }
            Tag::TableHead | Tag::TableRow | Tag::DefinitionListTitle => {
                self.line();
                self.cells = 0;
            }
            Tag::DefinitionListDefinition => self.line(),
            Tag::TableCell => {
                if self.cells > 0 {
                    self.push(" | ");
                }
                self.cells += 1;
            }
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.flush();
                self.links.push((self.out.len(), dest_url.into_string()));
            }
            Tag::Emphasis
            | Tag::Strong
            | Tag::Strikethrough
            | Tag::Superscript
            | Tag::Subscript => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(level) => {
                let text = self.out.get(self.heading..).unwrap_or_default();
                if text.trim_start_matches('【').trim().is_empty() {
                    self.out.truncate(self.heading);
                } else if framed(level) {
                    self.out.push('】');
                }
                self.line();
                self.tight = true;
            }
            TagEnd::CodeBlock => {
                self.indent.pop();
            }
            TagEnd::Item => {
                self.indent.pop();
                // An empty item's marker does not hold the next item on its line.
                self.marker = false;
            }
            TagEnd::List(_) => {
                self.lists.pop();
            }
            TagEnd::Link => self.end_link(LinkKind::Link),
            TagEnd::Image => self.end_link(LinkKind::Image),
            _ => {}
        }
    }

    fn end_link(&mut self, kind: LinkKind) {
        let Some((start, url)) = self.links.pop() else {
            return;
        };
        // Only text is written between a link's start and end, so `start` is still where
        // its text starts; were it not, the link would be left as its text alone.
        if !self.out.is_char_boundary(start) {
            return;
        }
        let text = self.out.split_off(start);
        // An image inside a link is that link's text: its alt text alone.
        let shown = if kind == LinkKind::Image && !self.links.is_empty() {
            text
        } else {
            show_link(&text, &url)
        };
        self.out.push_str(&shown);
    }

    /// A new block: a blank line before it (a line break inside a list or after a
    /// heading), none at the start.
    fn block(&mut self) {
        let newlines = if self.tight || !self.lists.is_empty() {
            1
        } else {
            2
        };
        self.owe(newlines);
    }

    /// A new line before the next text, none at the start.
    fn line(&mut self) {
        self.owe(1);
    }

    fn owe(&mut self, newlines: usize) {
        if !self.out.is_empty() && !self.marker {
            self.owed = self.owed.max(newlines);
        }
    }

    /// Writes the newlines owed, and the indentation when at a line's start.
    fn flush(&mut self) {
        if self.owed > 0 {
            for _ in 0..self.owed {
                self.out.push('\n');
            }
            self.owed = 0;
        }
        self.tight = false;
        self.marker = false;
        if self.out.is_empty() || self.out.ends_with('\n') {
            for piece in &self.indent {
                self.out.push_str(piece);
            }
        }
    }

    /// Writes text, each of its lines indented.
    fn push(&mut self, text: &str) {
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.owed += 1;
            }
            if !line.is_empty() {
                self.flush();
                self.out.push_str(line);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkKind {
    Link,
    Image,
}

fn framed(level: HeadingLevel) -> bool {
    matches!(level, HeadingLevel::H1 | HeadingLevel::H2)
}

/// A link with `text` to `url`, as a WeChat text message shows it.
fn show_link(text: &str, url: &str) -> String {
    let text = text.trim();
    if url.is_empty() || url.starts_with('#') || url == format!("mailto:{text}") {
        return text.to_owned();
    }
    if text.is_empty() || text == url {
        return url.to_owned();
    }
    let lower = url.to_ascii_lowercase();
    if ["http://", "https://", "weixin://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
    {
        // A `"` would end the attribute early; in a URL it is %22 anyway.
        format!("<a href=\"{}\">{text}</a>", url.replace('"', "%22"))
    } else {
        format!("{text} ({url})")
    }
}

/// HTML as text: tags dropped, but for `<a …>` and `</a>`, which WeChat renders, and the
/// tags that end a line, which become one; comments dropped; the common entities decoded.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let is_tag = rest[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!' || c == '?');
        let Some(gt) = rest.find('>').filter(|_| is_tag) else {
            // A `<` that opens no tag is text ("a < b").
            out.push('<');
            rest = &rest[1..];
            continue;
        };
        let tag = &rest[..=gt];
        let name: String = tag[1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
            .collect::<String>()
            .to_ascii_lowercase();
        match name.as_str() {
            "a" | "/a" => out.push_str(tag),
            "br" | "br/" | "/p" | "/div" | "/li" | "/tr" | "/h1" | "/h2" | "/h3" | "/h4"
            | "/h5" | "/h6" => out.push('\n'),
            _ => {}
        }
        rest = &rest[gt + 1..];
    }
    out.push_str(&decode_entities(rest));
    out
}

/// The named entities a backend's HTML commonly carries, and numeric ones; others stay.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let c = match &rest[1..semi] {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" | "#39" => '\'',
                "nbsp" => ' ',
                name => {
                    let number = name.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => number.parse().ok()?,
                    };
                    char::from_u32(code)?
                }
            };
            Some((c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Trailing whitespace off every line, at most one blank line in a row, none at either end.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = false;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::markdown_to_plain;

    #[track_caller]
    fn check(md: &str, plain: &str) {
        let got = markdown_to_plain(md);
        assert_eq!(got, plain, "\n--- markdown\n{md}\n--- got\n{got}\n---");
    }

    #[test]
    fn a_typical_assistant_answer_reads_as_chat_text() {
        check(
            "# 如何部署 wxrules\n\
             \n\
             wxrules 是一个**基于规则**的回复服务。请按以下步骤操作：\n\
             \n\
             ## 步骤\n\
             \n\
             1. 安装 Rust：运行 `rustup install stable`\n\
             2. 克隆仓库：\n\
             \x20  ```bash\n\
             \x20  git clone https://example.com/wxrules.git\n\
             \x20  ```\n\
             3. 启动服务\n\
             \n\
             ### 说明\n\
             \n\
             - 支持 *热加载*\n\
             - 详见 [文档](https://example.com/docs)\n\
             \x20 - 嵌套项\n\
             \n\
             > 注意：请勿泄露 **Token**。\n\
             \n\
             ```\n\
             wxrules serve --port 8080\n\
             ```\n\
             \n\
             | 参数 | 说明 |\n\
             |------|:----:|\n\
             | `--port` | 端口 |\n\
             | --config | 配置文件 |\n\
             \n\
             ---\n\
             更多信息：<https://example.com>\n",
            "【如何部署 wxrules】\n\
             wxrules 是一个基于规则的回复服务。请按以下步骤操作：\n\
             \n\
             【步骤】\n\
             1. 安装 Rust：运行 rustup install stable\n\
             2. 克隆仓库：\n\
             \x20      git clone https://example.com/wxrules.git\n\
             3. 启动服务\n\
             \n\
             说明\n\
             • 支持 热加载\n\
             • 详见 <a href=\"https://example.com/docs\">文档</a>\n\
             \x20 • 嵌套项\n\
             \n\
             注意：请勿泄露 Token。\n\
             \n\
             \x20   wxrules serve --port 8080\n\
             \n\
             参数 | 说明\n\
             --port | 端口\n\
             --config | 配置文件\n\
             \n\
             ────────\n\
             \n\
             更多信息：https://example.com",
        );
    }

    #[test]
    fn an_english_answer_with_loose_lists_and_emphasis() {
        check(
            "Sure! Here's **how** to do it:\n\
             \n\
             1. First, _open_ the ~~old~~ settings.\n\
             \n\
             \x20  Then save them.\n\
             \n\
             2. Restart.\n\
             \n\
             That's ***all***.",
            "Sure! Here's how to do it:\n\
             \n\
             1. First, open the old settings.\n\
             \x20  Then save them.\n\
             2. Restart.\n\
             \n\
             That's all.",
        );
    }

    #[test]
    fn headings_frame_the_top_two_levels_only() {
        check("# 一\n## 二\n### 三\n#### 四", "【一】\n【二】\n三\n四");
        check("#\n\n正文", "正文");
        check("Title\n=====\n\ntext", "【Title】\ntext");
    }

    #[test]
    fn ordered_lists_count_from_their_start_and_nest() {
        check(
            "3. 三\n4. 四\n   - 甲\n   - 乙\n     1. 子",
            "3. 三\n4. 四\n   • 甲\n   • 乙\n     1. 子",
        );
    }

    #[test]
    fn task_items_show_their_box_instead_of_a_bullet() {
        check("- [ ] 待办\n- [x] 完成", "☐ 待办\n☑ 完成");
    }

    #[test]
    fn an_empty_item_is_its_bullet_alone() {
        check("-\n- 乙\n\n1.\n2. 二", "•\n• 乙\n\n1.\n2. 二");
    }

    #[test]
    fn links_are_anchors_unless_their_text_is_the_url() {
        check(
            "[官网](https://example.com/a?b=1&c=2)",
            "<a href=\"https://example.com/a?b=1&c=2\">官网</a>",
        );
        check("[https://x.cn](https://x.cn)", "https://x.cn");
        check("<https://x.cn/路径>", "https://x.cn/路径");
        check("[](https://x.cn)", "https://x.cn");
        check(
            "[菜单](weixin://bizmsgmenu?msgmenuid=1)",
            "<a href=\"weixin://bizmsgmenu?msgmenuid=1\">菜单</a>",
        );
        check("[上文](#top)", "上文");
        check("<someone@example.com>", "someone@example.com");
        check("[电话](tel:10086)", "电话 (tel:10086)");
        check(
            "[q](https://x.cn/\"a\")",
            "<a href=\"https://x.cn/%22a%22\">q</a>",
        );
        check("see https://x.cn/a_b_c", "see https://x.cn/a_b_c");
    }

    #[test]
    fn images_are_their_alt_text_and_url() {
        check(
            "![架构图](https://x.cn/a.png)",
            "<a href=\"https://x.cn/a.png\">架构图</a>",
        );
        check("![](https://x.cn/a.png)", "https://x.cn/a.png");
        check(
            "[![徽章](https://x.cn/b.svg)](https://x.cn)",
            "<a href=\"https://x.cn\">徽章</a>",
        );
    }

    #[test]
    fn html_is_text_without_its_tags_but_anchors() {
        check(
            "<div class=\"note\">\n<p>第一段 &amp; <b>粗</b></p>\n</div>\n\n后文",
            "第一段 & 粗\n\n后文",
        );
        check(
            "点 <a href=\"https://x.cn\">这里</a>，或<br>换行 <!-- 注释 --> a < b &#x4E2D;&#25991; &bogus;",
            "点 <a href=\"https://x.cn\">这里</a>，或\n换行  a < b 中文 &bogus;",
        );
    }

    #[test]
    fn code_keeps_its_lines_and_loses_its_fences() {
        check(
            "运行：\n\n```rust\nfn main() {\n    println!(\"hi\");\n}\n```\n结束",
            "运行：\n\n    fn main() {\n        println!(\"hi\");\n    }\n\n结束",
        );
        check("用 `a*b*c` 计算", "用 a*b*c 计算");
    }

    #[test]
    fn blank_lines_never_pile_up_and_the_ends_are_trimmed() {
        check(
            "\n\n  正文  \n\n\n\n<div>\n\n</div>\n\n\n尾  \n\n",
            "正文\n\n尾",
        );
        check("", "");
        check("   ", "");
    }

    #[test]
    fn soft_breaks_keep_the_authors_lines() {
        check("第一行\n第二行  \n第三行", "第一行\n第二行\n第三行");
    }

    proptest::proptest! {
        #[test]
        fn any_markdown_gives_tidy_text(md in "[-#*_`>|!\\[\\]()<>a/:. \n1x中😀]{0,200}|.{0,200}") {
            let plain = markdown_to_plain(&md);
            proptest::prop_assert!(!plain.contains("\n\n\n"), "{:?}", plain);
            proptest::prop_assert!(!plain.starts_with('\n'), "{:?}", plain);
            proptest::prop_assert_eq!(plain.trim_end(), plain.as_str());
        }
    }
}
