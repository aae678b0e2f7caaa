//! The template language's pieces that a load needs: the handlebars registry every rule set
//! starts from (strict, no escaping, our helpers), `Simple` templates (text and
//! `{{path}}`s), recognised and parsed, and `call_values_as_json`, which makes
//! `{{call.…}}` write an object or a list as JSON. Nothing here renders a reply or reads a
//! message: `render` evaluates these; no IO.

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, JsonRender, Output, RenderContext, RenderErrorReason,
};

/// The registry every rule set starts from: strict (a misspelt field is an error, not an
/// empty string), no HTML escaping (output goes into CDATA), and our helpers.
pub(crate) fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("strip_prefix", Box::new(strip_prefix));
    hb.register_helper("default", Box::new(default));
    hb.register_helper(CALL_VALUE, Box::new(call_value));
    hb
}

/// The helper a `{{call.…}}` expression becomes (`call_values_as_json`); not a name a
/// template can write as a field (a leading `_` and a dash).
const CALL_VALUE: &str = "_wxrules-call-value";

/// `{{call.status}}` writes what the service answered: a string as it is, an object or a
/// list as JSON (handlebars would write `[object]`, or a list's items without quotes),
/// anything else as handlebars does. A path the answer lacks is an error, as it is for any
/// `{{path}}` in strict mode.
fn call_value(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let param = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(CALL_VALUE, 0))?;
    if param.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(param.relative_path().cloned()).into());
    }
    match param.value() {
        value @ (serde_json::Value::Object(_) | serde_json::Value::Array(_)) => {
            out.write(&serde_json::to_string(value).unwrap_or_default())?;
        }
        value => out.write(&value.render())?,
    }
    Ok(())
}

/// Makes every `{{call.…}}` value expression of `hb`'s templates write objects and lists
/// as JSON, as a `Simple` template does (`render`): each becomes `call_value`'s helper
/// expression over the same path. Run once a load's templates are compiled and checked
/// (the checks see the path either way, as a helper's parameter).
pub(crate) fn call_values_as_json(hb: &mut Handlebars<'static>) {
    let changed: Vec<(String, Template)> = hb
        .get_templates()
        .iter()
        .filter_map(|(name, t)| {
            let mut t = t.clone();
            rewrite_call_values(&mut t).then(|| (name.clone(), t))
        })
        .collect();
    for (name, t) in changed {
        hb.register_template(&name, t);
    }
}

/// Rewrites `t`'s `{{call.…}}` expressions, blocks included; whether there were any.
fn rewrite_call_values(t: &mut Template) -> bool {
    let mut changed = false;
    for element in &mut t.elements {
        match element {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h)
                if h.params.is_empty() && h.hash.is_empty() && is_call_path(&h.name) =>
            {
                h.params = vec![h.name.clone()];
                h.name = Parameter::Name(CALL_VALUE.to_owned());
                changed = true;
            }
            TemplateElement::HelperBlock(h) => {
                for inner in [&mut h.template, &mut h.inverse].into_iter().flatten() {
                    changed |= rewrite_call_values(inner);
                }
            }
            _ => {}
        }
    }
    changed
}

/// `call`, or a path under it (`call.status`, `call.items.[0]`).
fn is_call_path(p: &Parameter) -> bool {
    match p {
        Parameter::Path(handlebars::Path::Relative((_, raw))) => {
            raw.split(['.', '/']).next() == Some("call")
        }
        _ => false,
    }
}

/// `{{strip_prefix EventKey "qrscene_"}}`: the value without the prefix, or unchanged.
fn strip_prefix(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default();
    let prefix = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .unwrap_or_default();
    out.write(value.strip_prefix(prefix).unwrap_or(value))?;
    Ok(())
}

/// `{{default Recognition "…"}}`: the value when present and not empty, else the fallback.
fn default(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let fallback = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
    let value = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
    out.write(if value.is_empty() { fallback } else { value })?;
    Ok(())
}

/// A template made only of text and `{{dotted.path}}` references, the common case
/// (`"订单 {{captures.order}} 正在查询"`). It renders without handlebars, from the message
/// itself: no template context is built and no registry entry is kept, which matters at
/// hundreds of thousands of rules. Its output is the one handlebars (strict, no escaping,
/// `call_values_as_json`) gives; a property test holds the two to that. Anything else is
/// left to handlebars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simple {
    /// Boxed slices here and in `Segment::Var`, exactly as long as they need: a rule set
    /// holds one template or more per rule (at 1,000 accounts × 200 rules, vectors' spare
    /// room was 20 MB).
    segments: Box<[Segment]>,
    /// The template file it came from; `None` for an inline template, whose errors name
    /// its rule.
    file: Option<Box<str>>,
    /// The output's likely size, worked out at load: the text, plus a short value per
    /// field. A typical reply is written without growing its buffer.
    capacity: u32,
}

/// A piece of a `Simple` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Text(String),
    /// A path's parts (`captures.[1]` → `captures`, `1`).
    Var(Box<[String]>),
}

/// Names handlebars treats as helpers (built-in and ours): `{{name}}` calls them.
const HELPERS: &[&str] = &[
    "if",
    "unless",
    "each",
    "with",
    "lookup",
    "raw",
    "log",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
    "len",
    "strip_prefix",
    "default",
    "this",
    "else",
];

/// Whether `name` is a helper (built in or ours), not a field.
pub(crate) fn is_helper(name: &str) -> bool {
    HELPERS.contains(&name)
}

/// `Some` when `text` is a simple template; `None` leaves it to handlebars.
pub(crate) fn parse_simple(text: &str) -> Option<Simple> {
    let mut segments = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let before = &rest[..open];
        // `\{{` escapes a mustache in handlebars; keep such templates there.
        if before.ends_with('\\') {
            return None;
        }
        if !before.is_empty() {
            segments.push(Segment::Text(before.to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let inner = &after[..close];
        let path = inner.trim();
        if inner.starts_with(['{', '#', '/', '>', '!', '^', '&', '~', '*']) || inner.ends_with('~')
        {
            return None;
        }
        let parts = parse_path(path)?;
        if parts.len() == 1 && HELPERS.contains(&parts[0].as_str()) {
            return None;
        }
        segments.push(Segment::Var(parts));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    let capacity = segments
        .iter()
        .map(|segment| match segment {
            Segment::Text(t) => t.len(),
            Segment::Var(_) => 32,
        })
        .sum::<usize>();
    Some(Simple {
        segments: segments.into_boxed_slice(),
        file: None,
        // A hint only: a template over 4 GiB is refused long before (`rules::read`).
        capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
    })
}

/// `a.b`, `captures.[1]`, `PicList.0.PicMd5Sum`: identifiers, numbers or `[literal]`s.
fn parse_path(path: &str) -> Option<Box<[String]>> {
    let mut parts = Vec::new();
    for part in path.split('.') {
        let name = match part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            Some(literal) if !literal.is_empty() && !literal.contains(['[', ']']) => literal,
            Some(_) => return None,
            None => part,
        };
        let first = name.chars().next()?;
        let plain = name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if !plain || (parts.is_empty() && !(first.is_alphabetic() || first == '_')) {
            return None;
        }
        parts.push(name.to_owned());
    }
    Some(parts.into_boxed_slice())
}

impl Simple {
    /// The same template, read from the template file `name`: its errors name the file.
    pub(crate) fn read_from(self, name: &str) -> Simple {
        Simple {
            file: Some(name.into()),
            ..self
        }
    }

    /// Each `{{path}}` referenced, as its parts.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &[String]> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Var(parts) => Some(&parts[..]),
            Segment::Text(_) => None,
        })
    }

    /// The template file it was read from, if any.
    pub(crate) fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The first part of each `{{path}}` referenced (`captures`, `call`, `FromUserName`).
    pub(crate) fn roots(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Var(parts) => parts.first().map(String::as_str),
            Segment::Text(_) => None,
        })
    }

    /// The template with every `{{path}}` replaced by `value`, to check the text around them.
    pub(crate) fn with_values(&self, value: &str) -> String {
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Text(t) => t.as_str(),
                Segment::Var(_) => value,
            })
            .collect()
    }

    /// The text before the first `{{path}}`: all of it when there is none.
    pub(crate) fn leading_text(&self) -> &str {
        match self.segments.first() {
            Some(Segment::Text(t)) => t,
            _ => "",
        }
    }

    /// The text and `{{path}}`s, in order: what a render writes.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The output's likely size, to write a typical reply without growing its buffer.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{{call.…}}` in a handlebars template writes objects and lists as JSON, strings and
    /// numbers as before, and a missing path is still an error.
    #[test]
    fn call_values_render_as_json_in_handlebars_templates() {
        let mut hb = registry();
        hb.register_template_string(
            "t",
            "{{#if call.ok}}{{call.status}} {{call.tags}} {{call.n}} {{call.name}}{{/if}}",
        )
        .unwrap();
        hb.register_template_string("missing", "{{#if call.ok}}{{call.nope}}{{/if}}")
            .unwrap();
        hb.register_template_string("plain", "{{#if Event}}{{Event}}{{/if}}")
            .unwrap();
        call_values_as_json(&mut hb);
        let data = serde_json::json!({"Event": "e", "call": {"ok": true, "status": {"code": 1, "text": "发货"},
            "tags": ["a", {"b": 2}], "n": 3, "name": "x"}});
        assert_eq!(
            hb.render("t", &data).unwrap(),
            r#"{"code":1,"text":"发货"} ["a",{"b":2}] 3 x"#
        );
        let err = hb.render("missing", &data).unwrap_err();
        assert!(
            matches!(err.reason(), RenderErrorReason::MissingVariable(Some(p)) if p == "call.nope"),
            "{err:?}"
        );
        assert_eq!(hb.render("plain", &data).unwrap(), "e");
    }

    #[test]
    fn simple_templates_are_recognised() {
        for simple in [
            "hi {{FromUserName}}",
            "{{ captures.order }}",
            "{{captures.[1]}}",
            "{{SendPicsInfo.PicList.0.PicMd5Sum}}",
            "a }} b {{Event}}",
        ] {
            assert!(parse_simple(simple).is_some(), "{simple}");
        }
        for complex in [
            "{{#if Event}}x{{/if}}",
            "{{{Content}}}",
            "{{!comment}}",
            "{{> partial}}",
            "{{~Event}}",
            "{{Event~}}",
            "{{strip_prefix EventKey \"q\"}}",
            "{{this}}",
            "{{len}}",
            "\\\\{{Event}}",
            "{{@index}}",
            "{{../x}}",
            "{{a b}}",
            "unclosed {{Event",
        ] {
            assert!(parse_simple(complex).is_none(), "{complex}");
        }
    }
}
