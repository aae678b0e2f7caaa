//! What a template must be to render, checked at load so that start-up, reload and `check`
//! refuse what could only fail (or crash) later: nesting that handlebars' recursive parser
//! and renderer cannot take on a thread's stack, and partials (`{{> name}}`) that do not
//! exist, include themselves, or nest too deep. No IO; the registry is only read.

use std::collections::{HashMap, HashSet};

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::Handlebars;
use serde_json::Value;

/// The deepest nesting of blocks (`{{#if}}`, `{{#each}}`, …) or subexpressions within one
/// template. handlebars parses and renders them by recursion: a thousand nested blocks
/// took 0.4 s to parse and overflowed a thread's stack when rendered.
pub const MAX_TEMPLATE_NESTING: usize = 32;
/// The deepest a render may go, counting blocks and partials along every chain of
/// `{{> partial}}`s: a bound on the renderer's recursion, and so on its stack.
pub const MAX_RENDER_DEPTH: usize = 64;

/// 1-based line and column within a template.
pub(crate) type TemplateAt = Option<(usize, usize)>;

/// Where `text` nests blocks or subexpressions deeper than `MAX_TEMPLATE_NESTING`, if it
/// does: to be checked before handlebars parses it. A scan of the mustaches, not a parse:
/// it counts `{{#…}}` and `{{^name}}` openings, each `{{else name …}}` link of a chain (an
/// `else if` chain nests one block in the last), `{{/…}}` closings, and `(` inside
/// mustaches. Whitespace may follow `{{` and `~`, as handlebars allows. Escapes (`\{{`)
/// are counted too, and mustaches inside a raw block: the scan can overcount, never miss a
/// level.
pub(crate) fn too_deep(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    // Each open block: 1, plus its `else name` links; `depth` is their sum.
    let mut frames: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(found) = memchr::memmem::find(&bytes[i..], b"{{") {
        let open = i + found;
        let mut j = open + 2;
        while bytes
            .get(j)
            .is_some_and(|b| *b == b'{' || *b == b'~' || b.is_ascii_whitespace())
        {
            j += 1;
        }
        // A comment ends at `--}}` or `}}`; nothing in it counts.
        if bytes.get(j) == Some(&b'!') {
            let end: &[u8] = if bytes[j..].starts_with(b"!--") {
                b"--}}"
            } else {
                b"}}"
            };
            i = memchr::memmem::find(&bytes[j..], end).map_or(bytes.len(), |e| j + e + end.len());
            continue;
        }
        let named = |k: usize| {
            let mut k = k;
            while bytes.get(k).is_some_and(u8::is_ascii_whitespace) {
                k += 1;
            }
            bytes.get(k).is_some_and(|b| *b != b'}' && *b != b'~')
        };
        match bytes.get(j) {
            Some(b'#') => {
                frames.push(1);
                depth += 1;
            }
            // `{{^}}` alone is `else`; `{{^name}}` opens an inverse block.
            Some(b'^') if named(j + 1) => {
                frames.push(1);
                depth += 1;
            }
            Some(b'/') => depth -= frames.pop().unwrap_or(0),
            // `{{else if x}}`: one more level inside the open block.
            _ if bytes[j..].starts_with(b"else")
                && bytes.get(j + 4).is_some_and(u8::is_ascii_whitespace)
                && named(j + 4) =>
            {
                if let Some(top) = frames.last_mut() {
                    *top += 1;
                    depth += 1;
                }
            }
            _ => {}
        }
        let close = memchr::memmem::find(&bytes[j..], b"}}").map_or(bytes.len(), |e| j + e);
        let mut parens = 0usize;
        let mut deepest = 0usize;
        for b in &bytes[j..close] {
            match b {
                b'(' => {
                    parens += 1;
                    deepest = deepest.max(parens);
                }
                b')' => parens = parens.saturating_sub(1),
                _ => {}
            }
        }
        if depth > MAX_TEMPLATE_NESTING || deepest > MAX_TEMPLATE_NESTING {
            return Some(position(text, open));
        }
        i = close.max(open + 2);
    }
    None
}

/// The names of the partials `t` includes, its inline partials' includes too.
pub(crate) fn included_names(t: &Template) -> impl Iterator<Item = String> {
    let mut outline = Outline::default();
    walk(t, 0, None, &mut outline);
    let Outline { main, inline, .. } = outline;
    main.includes
        .into_iter()
        .chain(inline.into_values().flat_map(|b| b.includes))
        .map(|i| i.name)
}

/// 1-based line and column (in characters) of byte `at`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// A template that cannot render as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The registered template it is in.
    pub(crate) template: String,
    pub(crate) at: TemplateAt,
    pub(crate) message: String,
}

/// A partial included somewhere in a template.
struct Include {
    name: String,
    at: TemplateAt,
    /// Blocks around the include, within its template.
    depth: usize,
    /// `{{#> name}}fallback{{/name}}`: handlebars renders the fallback when `name` does not
    /// exist.
    has_fallback: bool,
}

/// What one template, or one `{{#*inline}}` partial of it, holds.
#[derive(Default)]
struct Body {
    includes: Vec<Include>,
    /// Its deepest block nesting.
    depth: usize,
}

/// A template's own body and its inline partials' bodies.
#[derive(Default)]
struct Outline {
    main: Body,
    inline: HashMap<String, Body>,
    problems: Vec<(TemplateAt, String)>,
}

/// A partial reference resolved: a registered template, or an inline partial of one.
type Node = (String, Option<String>);

/// Every template of `hb` that cannot render: a partial that does not exist (and has no
/// fallback block), a partial name that is not written out (`{{> (lookup …)}}` cannot be
/// checked), partials that include each other, and chains of partials and blocks deeper
/// than `MAX_RENDER_DEPTH`. Inline partials resolve within their template, as handlebars
/// finds them first; other names are registered templates.
pub(crate) fn problems(hb: &Handlebars<'_>) -> Vec<Problem> {
    let templates = hb.get_templates();
    let mut names: Vec<&String> = templates.keys().collect();
    names.sort();
    let mut found = Vec::new();
    let outlines = outline_each(templates, &names, &mut found);
    let body = |node: &Node| -> Option<&Body> {
        let outline = outlines.get(&node.0)?;
        match &node.1 {
            None => Some(&outline.main),
            Some(inline) => outline.inline.get(inline),
        }
    };
    // At render time handlebars looks a partial up among the inline partials of every
    // enclosing block first (a caller's too: `{{#> layout}}{{#*inline "nav"}}…`), then among
    // the registered templates. Which caller is not known here, so an include may reach
    // any of them: its template's inline partial of that name, the template of that name,
    // and every other template's inline partial of that name. Cycles and depth are judged
    // over all of them, which can only be stricter than what a render meets.
    let mut inline_by_name: HashMap<&str, Vec<Node>> = HashMap::new();
    for name in &names {
        let mut inline: Vec<&String> = outlines[*name].inline.keys().collect();
        inline.sort();
        for i in inline {
            inline_by_name
                .entry(i.as_str())
                .or_default()
                .push(((*name).clone(), Some(i.clone())));
        }
    }
    let resolve = |from: &Node, include: &Include| -> Vec<Node> {
        let mut targets = Vec::new();
        if templates.contains_key(&include.name) {
            targets.push((include.name.clone(), None));
        }
        if let Some(inline) = inline_by_name.get(include.name.as_str()) {
            // Its own template's first: it wins when the include is in that template.
            let (own, others): (Vec<&Node>, Vec<&Node>) =
                inline.iter().partition(|n| n.0 == from.0);
            targets.splice(0..0, own.into_iter().cloned());
            targets.extend(others.into_iter().cloned());
        }
        targets
    };

    // Missing partials, then cycles and depth by a depth-first walk over every node.
    let mut nodes: Vec<Node> = Vec::new();
    for name in &names {
        nodes.push(((*name).clone(), None));
        let mut inline: Vec<&String> = outlines[*name].inline.keys().collect();
        inline.sort();
        nodes.extend(
            inline
                .into_iter()
                .map(|i| ((*name).clone(), Some(i.clone()))),
        );
    }
    missing_partials(&nodes, &body, &resolve, &mut found);
    cycles_and_depth(&nodes, &body, &resolve, &mut found);
    found
}

/// The outline of each template of `names`, by name; the problems a template shows on its
/// own go to `found`.
fn outline_each(
    templates: &HashMap<String, Template>,
    names: &[&String],
    found: &mut Vec<Problem>,
) -> HashMap<String, Outline> {
    let mut outlines = HashMap::new();
    for name in names {
        let mut outline = Outline::default();
        walk(&templates[*name], 0, None, &mut outline);
        for (at, message) in outline.problems.drain(..) {
            found.push(Problem {
                template: (*name).clone(),
                at,
                message,
            });
        }
        outlines.insert((*name).clone(), outline);
    }
    outlines
}

/// Each include of `nodes` that reaches nothing, and has no fallback block.
fn missing_partials<'b>(
    nodes: &[Node],
    body: &impl Fn(&Node) -> Option<&'b Body>,
    resolve: &impl Fn(&Node, &Include) -> Vec<Node>,
    found: &mut Vec<Problem>,
) {
    for node in nodes {
        let Some(b) = body(node) else { continue };
        for include in &b.includes {
            if resolve(node, include).is_empty() && !include.has_fallback {
                found.push(Problem {
                    template: node.0.clone(),
                    at: include.at,
                    message: format!(
                        "partial `{}` not found (no template file {}.hbs, no inline partial of that name)",
                        include.name, include.name
                    ),
                });
            }
        }
    }
}

/// Partials that include each other (each cycle once), and templates whose render goes
/// deeper than `MAX_RENDER_DEPTH`.
fn cycles_and_depth<'b>(
    nodes: &[Node],
    body: &impl Fn(&Node) -> Option<&'b Body>,
    resolve: &impl Fn(&Node, &Include) -> Vec<Node>,
    found: &mut Vec<Problem>,
) {
    let mut depth: HashMap<Node, usize> = HashMap::new();
    let mut reported: HashSet<Vec<Node>> = HashSet::new();
    for node in nodes {
        let mut path = Vec::new();
        measure(
            node,
            body,
            resolve,
            &mut depth,
            &mut path,
            &mut |cycle, at| {
                let mut key = cycle.to_vec();
                key.sort();
                if reported.insert(key) {
                    // Told from the node whose include closes the cycle (the last one), where
                    // `at` points.
                    let last = cycle.len() - 1;
                    let names: Vec<String> = cycle[last..]
                        .iter()
                        .chain(&cycle[..=last])
                        .map(label)
                        .collect();
                    found.push(Problem {
                        template: cycle[last].0.clone(),
                        at,
                        message: format!(
                            "partials include each other, so it can never finish rendering: {}",
                            names.join(" → ")
                        ),
                    });
                }
            },
        );
    }
    for node in nodes {
        if node.1.is_none() && depth.get(node).is_some_and(|d| *d > MAX_RENDER_DEPTH) {
            found.push(Problem {
                template: node.0.clone(),
                at: None,
                message: format!(
                    "blocks and partials nest more than {MAX_RENDER_DEPTH} levels deep when rendered"
                ),
            });
        }
    }
}

fn label(node: &Node) -> String {
    match &node.1 {
        None => node.0.clone(),
        Some(inline) => format!("{}#*inline \"{inline}\"", node.0),
    }
}

/// The render depth of `node` (its blocks, plus the partials it includes at their depth),
/// memoized in `depth`; a partial already on `path` is a cycle, reported to `cycle` and
/// counted as no deeper (so the walk ends).
fn measure<'b>(
    node: &Node,
    body: &impl Fn(&Node) -> Option<&'b Body>,
    resolve: &impl Fn(&Node, &Include) -> Vec<Node>,
    depth: &mut HashMap<Node, usize>,
    path: &mut Vec<Node>,
    cycle: &mut impl FnMut(&[Node], TemplateAt),
) -> usize {
    if let Some(d) = depth.get(node) {
        return *d;
    }
    let Some(b) = body(node) else { return 0 };
    path.push(node.clone());
    let mut deepest = b.depth;
    for include in &b.includes {
        for target in resolve(node, include) {
            if let Some(start) = path.iter().position(|n| *n == target) {
                cycle(&path[start..], include.at);
                continue;
            }
            let below = measure(&target, body, resolve, depth, path, cycle);
            deepest = deepest.max(include.depth + 1 + below);
        }
    }
    path.pop();
    depth.insert(node.clone(), deepest);
    deepest
}

/// The static name of a partial: `{{> name}}`, `{{> dir/name}}`, `{{> "name"}}`.
fn partial_name(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Literal(Value::String(s)) => Some(s.clone()),
        other => other.as_name().map(str::to_owned),
    }
}

/// Collects includes, inline partials and block depth of `t` (at block `depth`) into
/// `outline`, under the inline partial `inline` when inside one.
fn walk(t: &Template, depth: usize, inline: Option<&str>, outline: &mut Outline) {
    for (i, element) in t.elements.iter().enumerate() {
        let at = t.mapping.get(i).map(|m| (m.0, m.1));
        let body = match inline {
            None => &mut outline.main,
            Some(name) => outline.inline.entry(name.to_owned()).or_default(),
        };
        body.depth = body.depth.max(depth);
        match element {
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                let block = matches!(element, TemplateElement::PartialBlock(_));
                match partial_name(&d.name) {
                    Some(name) if name == "@partial-block" => {}
                    Some(name) => body.includes.push(Include {
                        name,
                        at,
                        depth,
                        has_fallback: block && d.template.is_some(),
                    }),
                    None => outline.problems.push((
                        at,
                        "a partial's name must be written out (`{{> name}}`), so that it can be checked"
                            .into(),
                    )),
                }
                if let Some(inner) = &d.template {
                    walk(inner, depth + 1, inline, outline);
                }
            }
            TemplateElement::DecoratorBlock(d) | TemplateElement::DecoratorExpression(d) => {
                let is_inline = d.name.as_name() == Some("inline");
                let name = d.params.first().and_then(partial_name);
                match (is_inline, name, &d.template) {
                    (true, Some(name), Some(inner)) => {
                        outline.inline.entry(name.clone()).or_default();
                        walk(inner, 0, Some(&name), outline);
                    }
                    (_, _, Some(inner)) => walk(inner, depth + 1, inline, outline),
                    _ => {}
                }
            }
            TemplateElement::HelperBlock(h) => {
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    walk(inner, depth + 1, inline, outline);
                }
            }
            _ => {}
        }
    }
}

/// Whether `t` references a path whose first part is `root` (`{{call.status}}`,
/// `{{#each call.items}}`, `(lookup call "x")`), anywhere: in expressions, block and helper
/// parameters, hashes and subexpressions. Partials it includes are not followed.
pub(crate) fn uses_root(t: &Template, root: &str) -> bool {
    t.elements.iter().any(|element| element_uses(element, root))
}

fn element_uses(element: &TemplateElement, root: &str) -> bool {
    match element {
        TemplateElement::Expression(h)
        | TemplateElement::HtmlExpression(h)
        | TemplateElement::HelperBlock(h) => {
            param_uses(&h.name, root)
                || h.params.iter().any(|p| param_uses(p, root))
                || h.hash.values().any(|p| param_uses(p, root))
                || [&h.template, &h.inverse]
                    .into_iter()
                    .flatten()
                    .any(|inner| uses_root(inner, root))
        }
        TemplateElement::DecoratorExpression(d)
        | TemplateElement::DecoratorBlock(d)
        | TemplateElement::PartialExpression(d)
        | TemplateElement::PartialBlock(d) => {
            d.params.iter().any(|p| param_uses(p, root))
                || d.hash.values().any(|p| param_uses(p, root))
                || d.template
                    .as_ref()
                    .is_some_and(|inner| uses_root(inner, root))
        }
        // Text and comments; and kinds a later handlebars may add.
        _ => false,
    }
}

fn param_uses(p: &Parameter, root: &str) -> bool {
    let first_is_root = |raw: &str| {
        let raw = raw
            .trim_start_matches("@root.")
            .trim_start_matches("@root/")
            .trim_start_matches("./")
            .trim_start_matches("this.");
        raw.split(['.', '/']).next() == Some(root)
    };
    match p {
        Parameter::Name(name) => first_is_root(name),
        Parameter::Path(path) => match path {
            handlebars::Path::Relative((_, raw)) => first_is_root(raw),
            handlebars::Path::Local(_) => false,
        },
        Parameter::Subexpression(sub) => element_uses(&sub.element, root),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(templates: &[(&str, &str)]) -> Handlebars<'static> {
        let mut hb = crate::rules::tpl::registry();
        for (name, text) in templates {
            hb.register_template_string(name, text).unwrap();
        }
        hb
    }

    fn messages(templates: &[(&str, &str)]) -> Vec<String> {
        problems(&registry(templates))
            .into_iter()
            .map(|p| {
                let at = p.at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
                format!("{}{at}: {}", p.template, p.message)
            })
            .collect()
    }

    #[test]
    fn partials_that_include_each_other_are_found() {
        // The probe's crash: `price` and `help` include each other.
        assert_eq!(
            messages(&[("price", "A {{> help}}"), ("help", "B {{> price}}")]),
            ["price:1:3: partials include each other, so it can never finish rendering: price → help → price"]
        );
        assert_eq!(
            messages(&[("self", "x {{#if a}}{{> self}}{{/if}}")]),
            ["self:1:12: partials include each other, so it can never finish rendering: self → self"]
        );
        assert_eq!(
            messages(&[
                ("a", "{{> b}}"),
                ("b", "{{> c}}"),
                ("c", "{{#each x}}{{> a}}{{/each}}"),
            ]),
            ["c:1:12: partials include each other, so it can never finish rendering: c → a → b → c"]
        );
        // An inline partial that includes itself.
        assert_eq!(
            messages(&[("t", "{{#*inline \"row\"}}{{> row}}{{/inline}}{{> row}}")]),
            ["t:1:19: partials include each other, so it can never finish rendering: t#*inline \"row\" → t#*inline \"row\""]
        );
    }

    #[test]
    fn missing_and_unwritten_partial_names_are_found() {
        assert_eq!(
            messages(&[("t", "hi\n  {{> nope}}")]),
            ["t:2:3: partial `nope` not found (no template file nope.hbs, no inline partial of that name)"]
        );
        assert_eq!(
            messages(&[("t", "{{> (lookup this \"x\")}}")]),
            ["t:1:1: a partial's name must be written out (`{{> name}}`), so that it can be checked"]
        );
    }

    #[test]
    fn what_can_render_passes() {
        assert!(messages(&[
            ("layout", "<{{> @partial-block}}>"),
            ("page", "{{#> layout}}body {{> footer}}{{/layout}}"),
            ("footer", "f"),
            ("fallback", "{{#> absent}}shown instead{{/absent}}"),
            (
                "inline",
                "{{#*inline \"item\"}}- {{this}}{{/inline}}{{#each list}}{{> item}}{{/each}}"
            ),
            ("sub/dir", "{{> footer}}"),
            ("uses_sub", "{{> sub/dir}}"),
            // handlebars' own case: a layout uses an inline partial its caller defines.
            ("t4", "{{#> t5}}{{#*inline \"nav\"}}menu{{/inline}}{{/t5}}"),
            ("t5", "include {{> nav}}"),
        ])
        .is_empty());
        // The same, where the caller's inline partial includes the layout again: a cycle.
        assert_eq!(
            messages(&[
                ("t4", "{{#> t5}}{{#*inline \"nav\"}}{{> t5}}{{/inline}}{{/t5}}"),
                ("t5", "include {{> nav}}"),
            ]),
            ["t4:1:28: partials include each other, so it can never finish rendering: t4#*inline \"nav\" → t5 → t4#*inline \"nav\""]
        );
    }

    #[test]
    fn chains_of_partials_are_bounded_in_depth() {
        // p0 includes p1, … p64 includes p65: 65 levels; from p1 on, 64.
        let mut chain: Vec<(String, String)> = (0..=MAX_RENDER_DEPTH)
            .map(|i| (format!("p{i}"), format!("{{{{> p{}}}}}", i + 1)))
            .collect();
        chain.push((format!("p{}", MAX_RENDER_DEPTH + 1), "end".into()));
        let refs: Vec<(&str, &str)> = chain
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let found = messages(&refs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0],
            "p0: blocks and partials nest more than 64 levels deep when rendered"
        );
        assert!(messages(&refs[1..]).is_empty());
    }

    #[test]
    fn nesting_is_bounded_before_parsing() {
        let ok = format!("{}x{}", "{{#if a}}".repeat(32), "{{/if}}".repeat(32));
        assert_eq!(too_deep(&ok), None);
        let deep = format!("{}x{}", "{{#if a}}".repeat(1000), "{{/if}}".repeat(1000));
        assert_eq!(too_deep(&deep), Some((1, 33 * 9 - 8)));
        let parens = format!("{{{{x {}y{}}}}}", "(lookup ".repeat(40), ")".repeat(40));
        assert_eq!(too_deep(&parens), Some((1, 1)));
        // Comments and a plain `else` do not count.
        let quiet = format!(
            "{{{{!-- {} --}}}}{}{{{{^}}}}",
            "{{#if a}}".repeat(100),
            "{{#if a}}{{else}}{{/if}}{{#if b}}{{ else }}{{/if}}".repeat(100)
        );
        assert_eq!(too_deep(&quiet), None);
        assert_eq!(too_deep("{{^a}}x{{/a}}{{~#b}}{{/b}}"), None);
        // What the first version missed: a space after `{{` or `~`, a double backslash
        // (only one escapes), and `else if` chains, which nest.
        for deep in [
            "{{ #if a}}".repeat(40),
            "{{~ #if a}}".repeat(40),
            "\\\\{{#if a}}".repeat(40),
            format!("{{{{#if a}}}}{}{{{{/if}}}}", "{{else if b}}".repeat(40)),
            format!("{{{{#if a}}}}{}{{{{/if}}}}", "{{ else  if b }}".repeat(40)),
        ] {
            assert!(too_deep(&deep).is_some(), "{deep}");
        }
        let chain = format!("{{{{#if a}}}}{}{{{{/if}}}}", "{{else if b}}".repeat(20));
        assert_eq!(too_deep(&chain.repeat(10)), None);
    }
}
