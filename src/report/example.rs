//! What the report shows of a group's stored samples: its differences
//! field by field, and one sample's unified diff trimmed to the lines about
//! them, with a little context. The whole bodies stay in the store (and
//! `GET /api/divergences/{group}`).
//!
//! Must never: show a line the sample does not have, or let one sample's
//! size decide the size of the report.

use super::evidence::ShownDifference;
use crate::store::SampleRow;

/// Differences shown per group.
const SHOWN_DIFFERENCES: usize = 5;
/// Lines of a trimmed example.
const EXAMPLE_LINES: usize = 40;
/// Unchanged lines kept on each side of a line that is about the group.
const CONTEXT: usize = 3;
/// Characters kept of a value or a diff line.
const LONGEST: usize = 200;

/// The group's own differences in its samples (a sample holds every
/// difference of its exchange), each place once, the first few.
pub fn differences(key: &str, samples: &[SampleRow]) -> Vec<ShownDifference> {
    let mut shown: Vec<ShownDifference> = Vec::new();
    let all = samples
        .iter()
        .filter_map(|sample| sample.differences.as_array())
        .flatten();
    for difference in all.filter(|d| d["group_key"] == key) {
        let text = |field: &str| difference[field].as_str().map(|value| shorten(value, LONGEST));
        let candidate = ShownDifference {
            path: text("path").unwrap_or_default(),
            item: text("item"),
            primary: text("primary"),
            shadow: text("shadow"),
        };
        if !shown
            .iter()
            .any(|known| known.path == candidate.path && known.item == candidate.item)
        {
            shown.push(candidate);
        }
        if shown.len() == SHOWN_DIFFERENCES {
            break;
        }
    }
    shown
}

/// The diff's lines about `differences` (a changed line naming a field or
/// holding a value of theirs), each with [`CONTEXT`] lines around it; all
/// changed lines when none names them. At most [`EXAMPLE_LINES`] lines.
pub fn trim(diff: &str, differences: &[ShownDifference]) -> String {
    let lines: Vec<&str> = diff.lines().collect();
    let changed = |line: &&str| {
        (line.starts_with('+') && !line.starts_with("+++")) || (line.starts_with('-') && !line.starts_with("---"))
    };
    let needles = needles(differences);
    let about: Vec<usize> = (0..lines.len())
        .filter(|&i| changed(&lines[i]) && needles.iter().any(|needle| lines[i].contains(needle.as_str())))
        .collect();
    let picked = if about.is_empty() {
        (0..lines.len()).filter(|&i| changed(&lines[i])).collect()
    } else {
        about
    };
    let mut keep = vec![false; lines.len()];
    for &i in &picked {
        for slot in keep
            .iter_mut()
            .take((i + CONTEXT + 1).min(lines.len()))
            .skip(i.saturating_sub(CONTEXT))
        {
            *slot = true;
        }
    }
    let mut out: Vec<String> = lines
        .iter()
        .take_while(|line| line.starts_with("---") || line.starts_with("+++"))
        .map(|line| line.to_string())
        .collect();
    let header = out.len();
    let mut last: Option<usize> = None;
    let mut shown = 0;
    let mut left_out = 0;
    for (i, line) in lines.iter().enumerate().skip(header) {
        if !keep[i] || line.starts_with("@@") {
            continue;
        }
        if shown == EXAMPLE_LINES {
            left_out += 1;
            continue;
        }
        if last.is_none_or(|last| last + 1 != i) {
            // A gap: the lines between were left out (or this is the start).
            out.push("@@ … @@".to_string());
        }
        out.push(shorten(line, LONGEST));
        shown += 1;
        last = Some(i);
    }
    if left_out > 0 {
        out.push(format!(
            "@@ … {left_out} more lines about this group; the whole bodies are in the store @@"
        ));
    }
    out.join("\n")
}

/// What a line about a difference contains: its field's name as a JSON key
/// (`"context":`), or one of its values when that is short and distinctive.
fn needles(differences: &[ShownDifference]) -> Vec<String> {
    let mut needles = Vec::new();
    for difference in differences {
        let field = difference.path.rsplit('/').next().unwrap_or_default();
        if !field.is_empty() && !field.chars().all(|c| c.is_ascii_digit()) {
            needles.push(format!("\"{}\":", field.replace("~1", "/").replace("~0", "~")));
        }
        for value in [&difference.primary, &difference.shadow].into_iter().flatten() {
            if (3..=80).contains(&value.len()) && value != "null" && value != "true" && value != "false" {
                needles.push(value.clone());
            }
        }
    }
    needles
}

/// At most `limit` characters of `text`, with an ellipsis when cut.
fn shorten(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(path: &str, primary: &str, shadow: &str) -> ShownDifference {
        ShownDifference {
            path: path.into(),
            item: None,
            primary: Some(primary.into()),
            shadow: Some(shadow.into()),
        }
    }

    #[test]
    fn a_long_diff_is_cut_to_the_lines_about_the_group() {
        let mut diff = String::from("--- primary\n+++ shadow\n@@ -1,2000 +1,2000 @@\n");
        for n in 0..1000 {
            diff.push_str(&format!(
                "-    \"createdAt\": \"{n}\",\n+    \"createdAt\": \"{n}.000\",\n"
            ));
            diff.push_str(&format!("     \"title\": \"task {n}\",\n"));
        }
        diff.push_str("-    \"context\": \"home\",\n     \"done\": false\n");
        let trimmed = trim(&diff, &[shown("/tasks/999/context", "\"home\"", "null")]);
        let lines: Vec<&str> = trimmed.lines().collect();
        assert_eq!(lines[..2], ["--- primary", "+++ shadow"]);
        assert!(lines.contains(&"-    \"context\": \"home\","), "{trimmed}");
        assert!(lines.len() <= 2 + 1 + 2 * CONTEXT + 1, "{trimmed}");
        assert!(
            !trimmed.contains("\"createdAt\": \"10\""),
            "unrelated lines are left out"
        );
    }

    #[test]
    fn with_nothing_to_point_at_the_first_changed_lines_are_kept_within_the_limit() {
        let diff: String = (0..500).map(|n| format!("-a{n}\n+b{n}\n")).collect();
        let trimmed = trim(&diff, &[]);
        assert_eq!(trimmed.lines().filter(|l| !l.starts_with("@@")).count(), EXAMPLE_LINES);
        assert!(trimmed.ends_with("more lines about this group; the whole bodies are in the store @@"));
    }

    #[test]
    fn values_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("ééé", 2), "éé…");
        assert_eq!(shorten("ab", 2), "ab");
    }
}
