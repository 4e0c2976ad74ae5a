//! What to do next, as commands that run as printed: the gates say what is
//! wrong; this turns it into `cutover …` lines with the real config path
//! (or store URL) and the real group keys.
//!
//! Must never: print a placeholder where the value is known, or suggest a
//! command the reader cannot run with what the line says.

use super::evidence::GroupEvidence;
use super::{Report, Status};

/// Groups given a triage line of their own.
const TRIAGE_LINES: usize = 5;

/// How the reader reaches the store from a shell: the config the report
/// was made with (it names the store, the shadow and the routes), or else
/// the store's URL. Both are kept as shell words, ready to paste.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    config: Option<String>,
    store: Option<String>,
}

impl Commands {
    /// Commands that pass `-c PATH`.
    pub fn config(path: &str) -> Commands {
        Commands {
            config: Some(shell_word(path)),
            store: None,
        }
    }

    /// Commands that pass `--store URL` (no config known). A URL with a
    /// password is never printed: the command reads it from the variable
    /// `--store` falls back to.
    pub fn store(url: &str) -> Commands {
        let word = if crate::store::redact_url(url) == url {
            shell_word(url)
        } else {
            "\"$CUTOVER_STORE_URL\"".to_string()
        };
        Commands {
            config: None,
            store: Some(word),
        }
    }

    /// `cutover ARGS` with what finds the store; `None` when the command
    /// needs the config (`drift replay` needs the shadow) and none is known.
    pub fn cli(&self, args: &str, needs_config: bool) -> Option<String> {
        match (&self.config, &self.store) {
            (Some(config), _) => Some(format!("cutover {args} -c {config}")),
            (None, _) if needs_config => None,
            (None, Some(store)) => Some(format!("cutover {args} --store {store}")),
            (None, None) => Some(format!("cutover {args}")),
        }
    }
}

/// The report's next steps: each gate's that did not pass, with commands.
pub fn next_steps(report: &Report, commands: &Commands) -> Vec<String> {
    let mut steps = Vec::new();
    let mut to_triage: Vec<&GroupEvidence> = Vec::new();
    for gate in report.gates.iter().filter(|gate| gate.status != Status::Pass) {
        let Some(step) = &gate.next_step else { continue };
        match (gate.gate.as_str(), gate.status) {
            ("match_rate", Status::Fail) => {
                let route = gate.route.as_deref().unwrap_or_default();
                let open = open_groups(report, |group| group.route == route);
                steps.push(format!("{step}{}", keys_below(&open)));
                to_triage.extend(open);
            }
            ("high_severity_groups", _) => {
                // The gate's own step names the keys.
                steps.push(step.clone());
                to_triage.extend(open_groups(report, |group| group.severity == "high"));
            }
            ("write_drift", _) => steps.push(drift_step(step, commands)),
            _ => steps.push(step.clone()),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    to_triage.retain(|group| seen.insert(group.key.as_str()));
    for group in to_triage.iter().take(TRIAGE_LINES) {
        steps.push(triage_step(group, commands));
    }
    if to_triage.len() > TRIAGE_LINES {
        steps.push(format!(
            "{} more groups to triage: see the report's divergence groups",
            to_triage.len() - TRIAGE_LINES
        ));
    }
    steps
}

/// Groups that still count against the verdict (open or marked bug).
fn open_groups(report: &Report, which: impl Fn(&GroupEvidence) -> bool) -> Vec<&GroupEvidence> {
    report
        .groups
        .iter()
        .filter(|group| (group.status == "open" || group.status == "bug") && which(group))
        .collect()
}

fn keys_below(groups: &[&GroupEvidence]) -> String {
    if groups.is_empty() {
        return String::new();
    }
    let keys: Vec<&str> = groups.iter().take(TRIAGE_LINES).map(|g| g.key.as_str()).collect();
    format!(
        " ({}{})",
        keys.join(", "),
        if groups.len() > TRIAGE_LINES { ", …" } else { "" }
    )
}

fn triage_step(group: &GroupEvidence, commands: &Commands) -> String {
    let what = if group.pattern.is_empty() {
        group.kind.clone()
    } else {
        format!("{} at {}", group.kind, group.pattern)
    };
    let accept = commands
        .cli(&format!("triage {} accepted --note 'intended: why'", group.key), false)
        .unwrap_or_default();
    let bug = commands
        .cli(&format!("triage {} bug", group.key), false)
        .unwrap_or_default();
    let prove = commands
        .cli(&format!("recheck --group {} --mark-fixed", group.key), true)
        .map_or_else(
            || "then mark it fixed".to_string(),
            |recheck| format!("then prove it on the group's samples: `{recheck}`"),
        );
    format!(
        "group {} ({} {what}, {}×): intended? `{accept}`; a bug? `{bug}`, fix the candidate, {prove}",
        group.key, group.route, group.count,
    )
}

fn drift_step(step: &str, commands: &Commands) -> String {
    match (
        commands.cli("drift replay --all", true),
        commands.cli("drift list", false),
    ) {
        (Some(replay), Some(list)) => format!("{step}: `{replay}` (they are listed by `{list}`)"),
        (None, Some(list)) => format!(
            "{step}: `cutover drift replay --all -c FILE` with the proxy's config file (they are listed by `{list}`)"
        ),
        _ => step.to_string(),
    }
}

/// A word as a POSIX shell reads it back: quoted when it holds anything
/// beyond the characters paths and URLs usually have.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@%+=,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_only_when_a_shell_would_split_them() {
        assert_eq!(shell_word("cutover-demo/cutover.toml"), "cutover-demo/cutover.toml");
        assert_eq!(shell_word("sqlite://a/b.db"), "sqlite://a/b.db");
        assert_eq!(shell_word("my dir/c.toml"), "'my dir/c.toml'");
        assert_eq!(shell_word("it's.toml"), r"'it'\''s.toml'");
        assert_eq!(shell_word("$(rm -rf ~)"), "'$(rm -rf ~)'");
        assert_eq!(
            Commands::config("my dir/c.toml").cli("drift list", false).as_deref(),
            Some("cutover drift list -c 'my dir/c.toml'")
        );
    }

    #[test]
    fn a_store_password_is_never_printed() {
        let commands = Commands::store("postgres://cutover:hunter2@db:5432/cutover");
        let line = commands.cli("drift list", false).unwrap();
        assert_eq!(line, "cutover drift list --store \"$CUTOVER_STORE_URL\"");
    }

    #[test]
    fn a_command_that_needs_the_config_is_not_offered_without_it() {
        let store = Commands::store("sqlite://x.db");
        assert_eq!(store.cli("drift replay --all", true), None);
        assert_eq!(
            store.cli("drift list", false).as_deref(),
            Some("cutover drift list --store sqlite://x.db")
        );
        assert_eq!(
            Commands::config("c.toml").cli("drift replay --all", true).as_deref(),
            Some("cutover drift replay --all -c c.toml")
        );
    }
}
