//! Finds the first rule, in file order, whose criteria all hold for a message. Pure: no IO,
//! no allocation beyond lower-casing and the captures. The `Index` narrows the rules to try
//! by exact keyword, event key, event and message type, but the answer is always the one
//! that trying every rule in order would give.
//!
//! `criteria`: what a rule's `when` compiles to and whether it holds; `lazy`: a regex,
//! sized at load and compiled on first use (`size`: its size, estimated); `index`: which
//! rules can match a message. Here: `Subject` (a message prepared for matching), `Match` and
//! `RuleSet::find`.

mod criteria;
mod index;
mod lazy;
mod size;

use std::borrow::Cow;

pub use criteria::Words;
pub(crate) use criteria::{Criteria, Field, Pattern, StateTest, StrMatcher, Test};
pub(crate) use index::{Index, IndexBuilder, SET_FACTOR};
pub(crate) use lazy::LazyRegex;
pub use lazy::MAX_REGEX_LEN;

use super::{Rule, RuleSet};
use crate::wire::Message;

/// The values of a message that criteria read, prepared once per message.
#[derive(Debug)]
pub struct Subject<'m> {
    message: &'m Message,
    msg_type: Cow<'m, str>,
    event: Option<Cow<'m, str>>,
    /// The keyword text (`Content`, else `Recognition`) folded but for case
    /// (`rules::fold::normal`): what regexes see.
    keyword: Option<Cow<'m, str>>,
    /// The same, ASCII-lowercased: what literal keywords are compared with.
    keyword_folded: Option<Cow<'m, str>>,
    /// The moment rules' `active` windows are evaluated at (unix seconds).
    now: u64,
    /// The user's conversation state, if any, and their messages in it, this one included.
    state: Option<&'m str>,
    tries: u32,
}

fn fold(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl<'m> Subject<'m> {
    /// The subject of `message` now, by the system's clock.
    pub fn new(message: &'m Message) -> Subject<'m> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Subject::at(message, now)
    }

    /// The subject of `message` at `now` (unix seconds): the server's injected clock,
    /// `explain --at`, a test case's `at:`.
    pub fn at(message: &'m Message, now: u64) -> Subject<'m> {
        let keyword = message.keyword_text().map(super::fold::normal);
        let keyword_folded = keyword.as_deref().map(|k| match fold(k) {
            Cow::Borrowed(_) => match &keyword {
                // Nothing to lowercase: share the normal form (borrowed from the message
                // when that is borrowed too).
                Some(Cow::Borrowed(b)) => Cow::Borrowed(*b),
                _ => Cow::Owned(k.to_owned()),
            },
            Cow::Owned(lower) => Cow::Owned(lower),
        });
        Subject {
            message,
            msg_type: fold(message.msg_type()),
            event: message.event().map(fold),
            keyword,
            keyword_folded,
            now,
            state: None,
            tries: 0,
        }
    }

    /// The same subject, of a user in conversation state `state` who has sent `tries`
    /// messages in it (this one included).
    pub fn in_state(self, state: Option<&'m str>, tries: u32) -> Subject<'m> {
        Subject {
            state,
            tries,
            ..self
        }
    }

    pub fn message(&self) -> &'m Message {
        self.message
    }

    /// The raw value and, for case-folding fields, the folded one.
    fn value(&self, field: &Field) -> Option<(&str, &str)> {
        match field {
            Field::MsgType => Some((self.message.msg_type(), &self.msg_type)),
            Field::Event => Some((self.message.event()?, self.event.as_deref()?)),
            Field::Keyword => Some((self.keyword.as_deref()?, self.keyword_folded.as_deref()?)),
            Field::EventKey => self.message.text("EventKey").map(|v| (v, v)),
            Field::Status => self.message.text("Status").map(|v| (v, v)),
            Field::Choice => self.message.text("bizmsgmenuid").map(|v| (v, v)),
            Field::Path(p) => self.message.lookup(p).map(|v| (v, v)),
        }
    }
}

/// Regex captures: numbered groups by their number, named groups also by name.
pub type Captures = Vec<(String, String)>;

/// The rule that answers a message, and the captures of its regexes.
#[derive(Debug)]
pub struct Match<'r> {
    pub rule: &'r Rule,
    pub index: usize,
    pub captures: Captures,
    /// The user's conversation state, for the templates (`state.…`); set by the caller
    /// that looked it up.
    pub state: Option<std::sync::Arc<crate::rules::conversation::UserState>>,
}

impl RuleSet {
    /// The first rule in file order whose criteria all hold, with its captures.
    pub fn find(&self, subject: &Subject<'_>) -> Option<Match<'_>> {
        self.find_skipping(subject, &[])
    }

    /// `find`, passing over the rules at `skip` (indexes): those cooling down for this user.
    pub fn find_skipping(&self, subject: &Subject<'_>, skip: &[usize]) -> Option<Match<'_>> {
        let mut captures = Vec::new();
        for id in self.index.candidates(subject) {
            let index = id as usize;
            if skip.contains(&index) {
                continue;
            }
            let rule = self.rules.get(index)?;
            if rule.active().is_some_and(|a| !a.holds(subject.now)) {
                continue;
            }
            if rule.when.matches(subject, &mut captures) {
                return Some(Match {
                    rule,
                    index,
                    captures,
                    state: None,
                });
            }
        }
        None
    }

    /// The first rule (on) whose criteria hold for `subject`, whatever its time window
    /// says: whether the rules answer such a message at all (`menu`'s cross-check).
    pub fn find_any_time(&self, subject: &Subject<'_>) -> Option<&Rule> {
        let mut captures = Vec::new();
        self.rules
            .iter()
            .find(|rule| rule.when.matches(subject, &mut captures))
    }

    /// The same answer as `find`, by trying every rule in order; the reference the index is
    /// tested against.
    pub fn find_linear(&self, subject: &Subject<'_>) -> Option<Match<'_>> {
        let mut captures = Vec::new();
        self.rules.iter().enumerate().find_map(|(index, rule)| {
            let live = rule.active().is_none_or(|a| a.holds(subject.now));
            (live && rule.when.matches(subject, &mut captures)).then(|| Match {
                rule,
                index,
                captures: std::mem::take(&mut captures),
                state: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile::compile_yaml;

    fn text(content: &str) -> String {
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>text</MsgType>\
             <Content><![CDATA[{content}]]></Content><MsgId>1</MsgId></xml>"
        )
    }

    fn event(name: &str, extra: &str) -> String {
        format!(
            "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>event</MsgType><Event>{name}</Event>{extra}</xml>"
        )
    }

    /// Compiles `when` (one rule named `r`, behind a rule that never matches so that file
    /// order is exercised too) and checks whether `xml` matches it, and with which captures.
    fn check(when: &str, xml: &str, expect: Option<&[(&str, &str)]>) {
        let yaml = format!(
            "rules:\n  - name: never\n    when: {{ msg_type: never }}\n    ignore: true\n  \
             - name: r\n    when: {when}\n    ignore: true\n"
        );
        let rules = compile_yaml(&yaml).unwrap_or_else(|e| panic!("{when}: {e}"));
        let message = Message::parse(xml.as_bytes()).unwrap();
        let subject = Subject::new(&message);
        let found = rules.find(&subject);
        let linear = rules.find_linear(&subject);
        assert_eq!(
            found.as_ref().map(|m| (m.index, &m.captures)),
            linear.as_ref().map(|m| (m.index, &m.captures)),
            "index and linear scan disagree for {when}"
        );
        let got = found.map(|m| {
            assert_eq!(m.rule.name(), "r");
            m.captures
        });
        let expect = expect.map(|caps| {
            caps.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, expect, "when: {when}\nxml: {xml}");
    }

    const HIT: Option<&[(&str, &str)]> = Some(&[]);

    #[test]
    fn exact_keyword_is_trimmed_and_ignores_ascii_case() {
        check("{ keyword: price }", &text("price"), HIT);
        check("{ keyword: price }", &text("  PRICE\n"), HIT);
        check("{ keyword: Price }", &text("price"), HIT);
        check("{ keyword: price }", &text("prices"), None);
        check("{ keyword: 价格 }", &text("价格"), HIT);
        check("{ keyword: \" 价格 \" }", &text("价格"), HIT);
        check("{ keyword: { exact: [a, b] } }", &text("B"), HIT);
    }

    #[test]
    fn a_list_is_any_of() {
        check("{ keyword: [价格, price] }", &text("price"), HIT);
        check("{ keyword: [价格, price] }", &text("价格"), HIT);
        check("{ keyword: [价格, price] }", &text("cost"), None);
        check("{ keyword: [a, { prefix: x }] }", &text("xyz"), HIT);
    }

    #[test]
    fn prefix_and_contains() {
        check("{ keyword: { prefix: 订单 } }", &text("订单 123"), HIT);
        check("{ keyword: { prefix: 订单 } }", &text("我的订单"), None);
        check(
            "{ keyword: { contains: [优惠, 折扣] } }",
            &text("有折扣吗"),
            HIT,
        );
        check(
            "{ keyword: { contains: COUPON } }",
            &text("any coupon?"),
            HIT,
        );
        check("{ keyword: { contains: 优惠 } }", &text("价格"), None);
        check(
            "{ event_key: { prefix: qrscene_ } }",
            &event("subscribe", "<EventKey>qrscene_7</EventKey>"),
            HIT,
        );
        check(
            "{ event_key: { prefix: qrscene_ } }",
            &event("subscribe", "<EventKey>last_trade_no_1</EventKey>"),
            None,
        );
    }

    #[test]
    fn regex_searches_unless_anchored_and_captures() {
        check(
            "{ keyword: { regex: '^订单\\s*(?P<order>\\d{6,20})$' } }",
            &text("订单 123456"),
            Some(&[("0", "订单 123456"), ("1", "123456"), ("order", "123456")]),
        );
        check(
            "{ keyword: { regex: '^订单\\s*(\\d{6,20})$' } }",
            &text("我的订单 123456"),
            None,
        );
        check(
            "{ keyword: { regex: '\\d{3}' } }",
            &text("ab 123 cd"),
            Some(&[("0", "123")]),
        );
        check(
            "{ keyword: { regex: '^hello$' } }",
            &text("HELLO"),
            Some(&[("0", "HELLO")]),
        );
        check(
            "{ keyword: { regex: ['^x(\\d)$', '^y(\\d)$'] } }",
            &text("y7"),
            Some(&[("0", "y7"), ("1", "7")]),
        );
        // An optional group that did not take part is absent, not empty.
        check(
            "{ keyword: { regex: '^a(b)?$' } }",
            &text("a"),
            Some(&[("0", "a")]),
        );
    }

    #[test]
    fn msg_type_and_event_ignore_case_event_key_and_status_do_not() {
        check("{ msg_type: TEXT }", &text("x"), HIT);
        check("{ msg_type: [image, text] }", &text("x"), HIT);
        check("{ event: scan }", &event("SCAN", ""), HIT);
        check("{ event: SUBSCRIBE }", &event("subscribe", ""), HIT);
        check(
            "{ event_key: contact_us }",
            &event("CLICK", "<EventKey>CONTACT_US</EventKey>"),
            None,
        );
        check(
            "{ event_key: CONTACT_US }",
            &event("CLICK", "<EventKey>CONTACT_US</EventKey>"),
            HIT,
        );
        check(
            "{ status: \"failed:user block\" }",
            &event(
                "TEMPLATESENDJOBFINISH",
                "<Status>failed:user block</Status>",
            ),
            HIT,
        );
        check(
            "{ status: \"failed: system failed\" }",
            &event(
                "TEMPLATESENDJOBFINISH",
                "<Status>failed:user block</Status>",
            ),
            None,
        );
        check(
            "{ status: success }",
            &event("TEMPLATESENDJOBFINISH", "<Status>Success</Status>"),
            None,
        );
    }

    #[test]
    fn yaml_numbers_match_as_text() {
        check(
            "{ event_key: 123 }",
            &event("SCAN", "<EventKey>123</EventKey>"),
            HIT,
        );
        check("{ keyword: [1, 2.5, true] }", &text("2.5"), HIT);
    }

    #[test]
    fn keyword_reads_voice_recognition_and_nothing_else() {
        let voice = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>\
             <CreateTime>1</CreateTime><MsgType>voice</MsgType><MediaId>m</MediaId>\
             <Recognition><![CDATA[价格]]></Recognition></xml>";
        check("{ keyword: 价格 }", voice, HIT);
        check(
            "{ keyword: { regex: '.*' } }",
            &event("subscribe", ""),
            None,
        );
        check(
            "{ msg_type: event, keyword: { prefix: '' } }",
            &event("subscribe", ""),
            None,
        );
    }

    #[test]
    fn fields_reach_nested_and_listed_values() {
        let scan = event(
            "scancode_waitmsg",
            "<ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>https://x</ScanResult></ScanCodeInfo>\
             <SendPicsInfo><PicList><item><PicMd5Sum>abc</PicMd5Sum></item></PicList></SendPicsInfo>",
        );
        check("{ fields: { ScanCodeInfo.ScanType: qrcode } }", &scan, HIT);
        check(
            "{ fields: { ScanCodeInfo.ScanResult: { prefix: 'https://' } } }",
            &scan,
            HIT,
        );
        check(
            "{ fields: { SendPicsInfo.PicList.0.PicMd5Sum: abc } }",
            &scan,
            HIT,
        );
        check("{ fields: { ScanCodeInfo.Missing: x } }", &scan, None);
        check("{ fields: { ScanCodeInfo: x } }", &scan, None);
        // Field values keep their case.
        check("{ fields: { ScanCodeInfo.ScanType: QRCODE } }", &scan, None);
    }

    #[test]
    fn all_criteria_must_hold() {
        let sub = event("subscribe", "<EventKey>qrscene_9</EventKey>");
        check(
            "{ event: subscribe, event_key: { prefix: qrscene_ } }",
            &sub,
            HIT,
        );
        check(
            "{ event: SCAN, event_key: { prefix: qrscene_ } }",
            &sub,
            None,
        );
        check("{ event: subscribe, event_key: other }", &sub, None);
        check("{}", &sub, HIT);
    }

    #[test]
    fn first_rule_in_file_order_wins_across_index_buckets() {
        let yaml = "rules:\n\
            - { name: catch-text, when: { msg_type: text }, ignore: true }\n\
            - { name: exact, when: { keyword: price }, ignore: true }\n\
            - { name: any, when: {}, ignore: true }\n";
        let rules = compile_yaml(yaml).unwrap();
        let xml = text("price");
        let message = Message::parse(xml.as_bytes()).unwrap();
        let found = rules.find(&Subject::new(&message)).unwrap();
        assert_eq!(found.rule.name(), "catch-text");
        let xml = event("CLICK", "");
        let message = Message::parse(xml.as_bytes()).unwrap();
        assert_eq!(
            rules.find(&Subject::new(&message)).unwrap().rule.name(),
            "any"
        );
    }

    #[test]
    fn index_finds_exact_keywords_among_thousands() {
        let mut yaml = String::from("rules:\n");
        for i in 0..5000 {
            yaml.push_str(&format!(
                "  - {{ name: k{i}, when: {{ keyword: kw{i} }}, ignore: true }}\n"
            ));
        }
        yaml.push_str("  - { name: tail, when: { keyword: { contains: kw } }, ignore: true }\n");
        let rules = compile_yaml(&yaml).unwrap();
        for (content, rule) in [
            ("kw0", "k0"),
            ("KW4999", "k4999"),
            ("kw5000", "tail"),
            ("x", ""),
        ] {
            let xml = text(content);
            let message = Message::parse(xml.as_bytes()).unwrap();
            let subject = Subject::new(&message);
            let found = rules.find(&subject).map(|m| m.rule.name().to_owned());
            assert_eq!(found.as_deref().unwrap_or(""), rule);
            assert_eq!(
                found,
                rules
                    .find_linear(&subject)
                    .map(|m| m.rule.name().to_owned())
            );
        }
    }
}
