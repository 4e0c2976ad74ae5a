//! The command line fits a pipeline: `report --check` prints a verdict line
//! (not the report), usage errors have their own exit code, a missing store
//! is an error unless `--create`, and a closed pipe ends a command quietly.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::run_cutover;

fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> (String, std::path::PathBuf) {
    let path = dir.path().join(name);
    (format!("sqlite://{}", path.display()), path)
}

/// A store with cutover's schema and nothing recorded.
async fn empty_store(dir: &tempfile::TempDir) -> String {
    let (url, _) = sqlite_url(dir, "cutover.db");
    let migrated = run_cutover(&["migrate", "--store", &url]).await;
    assert!(migrated.status.success(), "{migrated:?}");
    url
}

#[tokio::test]
async fn report_check_prints_the_verdict_and_the_gates_that_did_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let url = empty_store(&dir).await;
    let checked = run_cutover(&["report", "--check", "--store", &url]).await;
    assert_eq!(checked.status.code(), Some(2), "an empty store is NOT YET");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("NOT YET: ") && lines[0].contains("lack data"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not enough data: observation_window: 0s (needs ≥ 24h)"),
        "{stdout}"
    );
    assert!(stdout.contains("next: no traffic recorded in this window"), "{stdout}");
    assert!(
        !stdout.contains("<html") && stdout.len() < 2_000,
        "the report itself only goes to --out: {stdout}"
    );

    let out = dir.path().join("report.html");
    let written = run_cutover(&["report", "--check", "--store", &url, "--out", out.to_str().unwrap()]).await;
    assert_eq!(written.status.code(), Some(2));
    assert!(std::fs::read_to_string(&out).unwrap().contains("<html"));
    assert!(String::from_utf8_lossy(&written.stdout).starts_with("NOT YET: "));
}

#[tokio::test]
async fn usage_errors_have_an_exit_code_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let url = empty_store(&dir).await;
    for args in [
        vec!["report", "--chek", "--store", &url],
        vec!["report", "--since", "soon", "--check", "--store", &url],
        vec!["report", "--format", "pdf", "--store", &url],
        vec!["nonsense"],
    ] {
        let run = run_cutover(&args).await;
        assert_eq!(
            run.status.code(),
            Some(cutover::cli::EXIT_USAGE.into()),
            "{args:?}: {run:?}"
        );
        assert!(!String::from_utf8_lossy(&run.stderr).is_empty(), "{args:?} says why");
    }
    let since = run_cutover(&["report", "--since", "soon", "--store", &url]).await;
    assert!(
        String::from_utf8_lossy(&since.stderr).contains("expected a duration like"),
        "{since:?}"
    );
    let help = run_cutover(&["report", "--help"]).await;
    assert_eq!(help.status.code(), Some(0), "help is an answer");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--check"));
}

#[tokio::test]
async fn a_missing_store_is_an_error_unless_asked_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let (url, path) = sqlite_url(&dir, "typo.db");
    for args in [
        vec!["report", "--store", &url],
        vec!["report", "--check", "--store", &url],
        vec!["drift", "list", "--store", &url],
        vec!["switch", "primary-only", "--store", &url],
    ] {
        let run = run_cutover(&args).await;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?}: {run:?}");
        assert!(
            stderr.contains("does not exist") && stderr.contains("--create"),
            "{args:?}: {stderr}"
        );
        assert!(!path.exists(), "{args:?} created {}", path.display());
    }
    let check = run_cutover(&["report", "--check", "--store", &url]).await;
    assert_eq!(check.status.code(), Some(3), "no store is not a verdict");

    // An empty file (e.g. `touch`ed by mistake) holds no store either.
    std::fs::write(&path, b"").unwrap();
    let empty = run_cutover(&["drift", "list", "--store", &url]).await;
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("does not exist"),
        "{empty:?}"
    );
    std::fs::remove_file(&path).unwrap();

    let created = run_cutover(&["report", "--check", "--create", "--store", &url]).await;
    assert_eq!(created.status.code(), Some(2), "{created:?}");
    assert!(path.exists());
    let listed = run_cutover(&["drift", "list", "--store", &url]).await;
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "no open drift\n");
}

/// `cutover report | head` and `cutover drift list | head`: the reader
/// closes the pipe; the command ends with 0 and no panic.
#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let url = empty_store(&dir).await;
    for args in [
        vec!["report", "--store", url.as_str()],
        vec!["report", "--format", "md", "--store", url.as_str()],
        vec!["drift", "list", "--store", url.as_str()],
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        let output = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The reader goes away before the command has written anything.
            drop(child.stdout.take());
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            (child.wait().unwrap(), stderr)
        })
        .await
        .unwrap();
        let (status, stderr) = output;
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
