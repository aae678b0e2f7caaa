//! The parts of a rule that are its own: its `active` window and its `cooldown`. No IO;
//! every problem is an error at its key.

use std::time::Duration;

use super::Compiler;
use crate::rules::active;
use crate::rules::schema;

/// A rule's `active:` window, in its own `timezone`, the file's, or Asia/Shanghai.
pub(super) fn compile_active(
    c: &mut Compiler<'_>,
    rule: &str,
    base: &str,
    raw: &schema::RawActive,
) -> Option<Box<active::Active>> {
    let file_timezone = c.positions.timezone().map(str::to_owned);
    let timezone = raw
        .timezone
        .as_ref()
        .map(|t| t.0.clone())
        .or(file_timezone)
        .unwrap_or_else(|| active::DEFAULT_TIMEZONE.to_owned());
    let written = active::Written {
        from: raw.from.as_ref().map(|s| s.0.as_str()),
        until: raw.until.as_ref().map(|s| s.0.as_str()),
        hours: raw.hours.iter().map(|s| s.0.as_str()).collect(),
        weekdays: raw.weekdays.iter().map(|s| s.0.as_str()).collect(),
        timezone: &timezone,
    };
    match active::compile(&written) {
        Ok(active) => Some(Box::new(active)),
        Err((key, why)) => {
            let at = c
                .positions
                .value(&format!("{base}.active.{key}"))
                .or_else(|| c.positions.key(&format!("{base}.active")));
            c.error(Some(rule), at, format!("`active.{key}`: {why}"));
            None
        }
    }
}

/// The longest `cooldown`.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(30 * 24 * 3600);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::rules::compile::rule_errors;
    use crate::rules::load_str;

    #[test]
    fn a_cooldown_is_whole_seconds_on_a_rule_that_answers() {
        let loaded = load_str(
            "rules:\n  - name: r\n    cooldown: 60m\n    reply: { text: hi }\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            loaded.rules.rules()[0].cooldown(),
            Some(Duration::from_secs(3600))
        );
        for (body, says) in [
            ("    cooldown: soon\n    reply: { text: hi }\n", "rules.yaml:3:15: rule `r`: `cooldown` is a duration such as `2s` or `800ms` (expected number at 0)"),
            ("    cooldown: 1500ms\n    reply: { text: hi }\n", "rules.yaml:3:15: rule `r`: `cooldown` is whole seconds (`30s`, `60m`, `1h`)"),
            ("    cooldown: 60d\n    reply: { text: hi }\n", "rules.yaml:3:15: rule `r`: `cooldown` is at most 30days"),
            ("    cooldown: 1h\n    ignore: true\n", "rules.yaml:3:5: rule `r`: `cooldown` starts when the rule answers, and a rule with `ignore: true` never does"),
        ] {
            assert_eq!(rule_errors(body), [says], "{body}");
        }
    }
}
