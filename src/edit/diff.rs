//! A unified diff of two versions of a file, for the page to show a draft.

use similar::TextDiff;

/// The unified diff from `before` to `after` (`--- a/PATH`, `+++ b/PATH`, `@@` hunks with 3
/// lines of context, `\ No newline at end of file` where one lacks it); empty when they are
/// the same.
pub fn diff(before: &str, after: &str, path: &str) -> String {
    if before == after {
        return String::new();
    }
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unified_diff_with_three_lines_of_context() {
        let before = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let after = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            diff(before, after, "rules/rules.yaml"),
            "--- a/rules/rules.yaml\n+++ b/rules/rules.yaml\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
        assert_eq!(diff(before, before, "r.yaml"), "");
    }

    #[test]
    fn a_missing_final_line_break_is_shown() {
        let d = diff("a\nb\n", "a\nb", "r.yaml");
        assert!(d.ends_with("-b\n+b\n\\ No newline at end of file\n"), "{d}");
    }
}
