//! Configuration: every broken config gets one exact, actionable message,
//! and the shipped configs pass `cutover check-config`.

use std::process::Command;

use cutover::config::Config;

const BASE: &str = r#"
[listen]
proxy = "127.0.0.1:8080"
admin = "127.0.0.1:9901"

[primary]
name = "notion"
url = "https://legacy.example.com"

[shadow]
name = "postgres"
url = "https://candidate.example.com/v2"

[[route]]
name = "update-task"
match = "PATCH /api/task/{id:tasks}"
mirror = "dual-write"
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, "config/tomos.toml", &|_| None).map_err(|err| err.to_string())
}

#[test]
fn the_base_config_is_valid_and_defaults_apply() {
    let config = parse(BASE).unwrap();
    assert_eq!(config.primary.timeout, std::time::Duration::from_secs(30));
    assert_eq!(config.shadow.timeout, std::time::Duration::from_secs(10));
    assert_eq!(config.mirror.queue, 10_000);
    assert_eq!(config.mirror.max_in_flight, 256);
    assert_eq!(config.mirror.max_body, 1 << 20);
    assert_eq!(config.mirror.unmatched, cutover::mirror::Unmatched::Reads);
    assert_eq!(config.shadow.url.path(), "/v2");
    assert_eq!(config.routes.len(), 1);
}

#[test]
fn broken_configs_point_at_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "match = \"PATCH /api/task/{id:tasks}\"",
            "match = \"PATHC /api/task/{id:tasks}\"",
            "config/tomos.toml: route \"update-task\": match: unknown method \"PATHC\"",
        ),
        (
            "match = \"PATCH /api/task/{id:tasks}\"",
            "match = \"PATCH api/task\"",
            "config/tomos.toml: route \"update-task\": match: path must start with '/', got \"api/task\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dualwrite\"",
            "config/tomos.toml: route \"update-task\": mirror: expected \"compare\", \"dual-write\" or \"off\", got \"dualwrite\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\nsample = 1.5",
            "config/tomos.toml: route \"update-task\": sample: expected a fraction from 0.0 to 1.0, got 1.5",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\nsample_key = \"cookie\"",
            "config/tomos.toml: route \"update-task\": sample_key: expected \"client-ip\" or \"header:NAME\", got \"cookie\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\nreads = [\"GET\"]",
            "config/tomos.toml: route \"update-task\": reads[0]: GET is always a read; list only methods that are otherwise writes",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\nreads = [\"PATCH\", \"post\"]",
            "config/tomos.toml: route \"update-task\": reads[1]: expected POST, PUT, PATCH or DELETE, got \"post\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\nreads = [\"POST\"]",
            "config/tomos.toml: route \"update-task\": reads[0]: the route's match \"PATCH /api/task/{id:tasks}\" never takes a POST",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\ngraphql = true",
            "config/tomos.toml: route \"update-task\": graphql: GraphQL operations come as POST, which \"PATCH /api/task/{id:tasks}\" never takes; list the method in reads",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"https://legacy.example.com\"\ntimeout = \"thirty seconds\"",
            "config/tomos.toml: primary.timeout: expected a duration like \"30s\", \"250ms\" or \"24h\", got \"thirty seconds\"",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"ftp://legacy.example.com\"",
            "config/tomos.toml: primary.url: expected an http:// or https:// URL, got scheme \"ftp\"",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"https://user:hunter2@legacy.example.com\"",
            "config/tomos.toml: primary.url: contains credentials; secrets never go in the file: set $CUTOVER_PRIMARY_URL instead",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"https://legacy.example.com\"\nrate_limit = \"5/s\"",
            "config/tomos.toml: primary.rate_limit: the primary is never rate-limited by cutover; set rate_limit on [shadow]",
        ),
        (
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nrate_limit = \"fast\"",
            "config/tomos.toml: shadow.rate_limit: expected a rate like \"50/s\", \"300/m\" or \"1000/h\", got \"fast\"",
        ),
        (
            "name = \"postgres\"",
            "name = \"notion\"",
            "config/tomos.toml: shadow.name: must differ from primary.name (both are \"notion\")",
        ),
        (
            "admin = \"127.0.0.1:9901\"",
            "admin = \"127.0.0.1:8080\"",
            "config/tomos.toml: listen.admin: must differ from listen.proxy (127.0.0.1:8080): the admin API is never served on the proxy port",
        ),
        (
            "admin = \"127.0.0.1:9901\"",
            "admin = \"localhost\"",
            "config/tomos.toml: listen.admin: expected an IP address and port like \"127.0.0.1:8080\", got \"localhost\"",
        ),
        (
            "[[route]]",
            "[mirror]\nmax_body = \"huge\"\n\n[[route]]",
            "config/tomos.toml: mirror.max_body: expected a size like \"1MiB\" or \"64KiB\", got \"huge\"",
        ),
        (
            "[[route]]",
            "[mirror]\nunmatched = \"all\"\n\n[[route]]",
            "config/tomos.toml: mirror.unmatched: expected \"reads\" or \"off\", got \"all\"",
        ),
        (
            "[[route]]",
            "[mirror]\nqueue = 0\n\n[[route]]",
            "config/tomos.toml: mirror.queue: must be at least 1",
        ),
        (
            "admin = \"127.0.0.1:9901\"",
            "admin = \"127.0.0.1:9901\"\nheader_read_timeout = \"18446744073709551615s\"",
            "config/tomos.toml: listen.header_read_timeout: must be from 100ms to 10m, got \"18446744073709551615s\"",
        ),
        (
            "admin = \"127.0.0.1:9901\"",
            "admin = \"127.0.0.1:9901\"\nmax_connections = 0",
            "config/tomos.toml: listen.max_connections: expected 1 to 1000000 connections, got 0",
        ),
        (
            "admin = \"127.0.0.1:9901\"",
            "admin = \"127.0.0.1:9901\"\nidle_timeout = \"0s\"",
            "config/tomos.toml: listen.idle_timeout: must be from 1s to 1day, got \"0s\"",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"https://legacy.example.com\"\ntimeout = \"0s\"",
            "config/tomos.toml: primary.timeout: must be from 1ms to 1h, got \"0s\"",
        ),
        (
            "[[route]]",
            "[store]\nflush = \"18446744073709551615s\"\n\n[[route]]",
            "config/tomos.toml: store.flush: must be from 1ms to 1m, got \"18446744073709551615s\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[route.compare]\nrecheck = \"18446744073709551615s\"",
            "config/tomos.toml: route \"update-task\": compare.recheck: must be from 1ms to 10m, got \"18446744073709551615s\"",
        ),
        (
            "[[route]]",
            "[mirror]\nmax_body = \"2GiB\"\n\n[[route]]",
            "config/tomos.toml: mirror.max_body: must be from 0 bytes to 1GiB, got \"2GiB\"",
        ),
        (
            "[[route]]",
            "[mirror]\nmax_in_flight = 0\n\n[[route]]",
            "config/tomos.toml: mirror.max_in_flight: expected 1 to 65536 requests in flight to one upstream",
        ),
        (
            "[[route]]",
            "[mirror]\nmax_body = \"2MiB\"\nmax_buffered = \"1MiB\"\n\n[[route]]",
            "config/tomos.toml: mirror.max_buffered: must be at least mirror.max_body (2MiB), or no body could ever be compared",
        ),
        (
            "[[route]]",
            "[mirror]\nquue = 5\n\n[[route]]",
            "config/tomos.toml: mirror.quue: unknown field `quue`, expected one of `queue`, `max_body`, `max_buffered`, `max_decoded`, `unmatched`, `workers`, `compare_priority`, `write_wait`, `max_in_flight` (line 15, column 1)",
        ),
        (
            "[[route]]",
            "[mirror]\nqueue = \"many\"\n\n[[route]]",
            "config/tomos.toml: mirror.queue: invalid type: string \"many\", expected usize (line 15, column 9)",
        ),
        (
            "name = \"update-task\"",
            "name = \"update task\"",
            "config/tomos.toml: route[0].name: expected a name of letters, digits, '-', '_' or '.', got \"update task\"",
        ),
        (
            "name = \"update-task\"",
            "name = \"unmatched\"",
            "config/tomos.toml: route \"unmatched\": name: \"unmatched\" is reserved for requests no route matches",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n\n[[route]]\nname = \"update-task\"\nmatch = \"GET /x\"\n",
            "config/tomos.toml: route \"update-task\": name: another route has the same name",
        ),
        (
            "[shadow]",
            "[shadoww]",
            "config/tomos.toml: shadoww: unknown field `shadoww`, expected one of `listen`, `primary`, `shadow`, `mirror`, `noise`, `store`, `redact`, `admin`, `idmap`, `readiness`, `rollback`, `rollout`, `sweep`, `notify`, `route` (line 10, column 2)",
        ),
        (
            "match = \"PATCH /api/task/{id:tasks}\"",
            "matches = \"PATCH /api/task/{id:tasks}\"",
            "config/tomos.toml: route[0].matches: unknown field `matches`, expected one of `name`, `match`, `mirror`, `sample`, `sample_key`, `compare`, `learn_ids`, `translate`, `verify`, `on_primary_error`, `rollout`, `reads`, `graphql` (line 16, column 1)",
        ),
        (
            "name = \"notion\"",
            "name = \"notion\"\ncolor = \"blue\"",
            "config/tomos.toml: primary.color: unknown field `color`, expected one of `name`, `url`, `timeout`, `connect_timeout`, `host`, `rate_limit`, `ca_file`, `write_tries`, `replay_headers`, `headers` (line 8, column 1)",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"https://legacy.example.com\"\nca_file = \"/nonexistent/ca.pem\"",
            "config/tomos.toml: primary.ca_file: no such file: /nonexistent/ca.pem",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\nignore = [\"/ok\", \"source\"]\n",
            "config/tomos.toml: route \"update-task\": compare.ignore[1]: \"source\" is not a JSON Pointer: it must be empty or start with '/'",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\ntime_tolerance = { \"/due\" = \"a second\" }\n",
            "config/tomos.toml: route \"update-task\": compare.time_tolerance.\"/due\": expected a duration like \"30s\", \"250ms\" or \"24h\", got \"a second\"",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\nnumber_tolerance = { \"/price\" = \"about\" }\n",
            "config/tomos.toml: route \"update-task\": compare.number_tolerance.\"/price\": expected an absolute tolerance like \"0.01\" or a relative one like \"0.5%\", got \"about\"",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\nseverity = { \"/priority\" = \"urgent\" }\n",
            "config/tomos.toml: route \"update-task\": compare.severity.\"/priority\": expected \"low\", \"medium\" or \"high\", got \"urgent\"",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\nheaders = [\"content-type\", \"Date\"]\n",
            "config/tomos.toml: route \"update-task\": compare.headers[1]: \"Date\" never matters for comparison (hop-by-hop, or different by nature)",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\nunordered = { \"/tasks\" = \"/meta/*\" }\n",
            "config/tomos.toml: route \"update-task\": compare.unordered.\"/tasks\": an item key cannot contain '*' or '**'",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\norder_by = { \"/tasks\" = [\"/priority\"] }\n",
            "config/tomos.toml: route \"update-task\": compare.order_by.\"/tasks\": needs an `unordered` key at the same path, to match the items by (for example unordered = { \"/tasks\" = \"id\" })",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.compare]\nignore_paths = [\"/x\"]\n",
            "config/tomos.toml: route[0].compare.ignore_paths: unknown field `ignore_paths`, expected one of `ignore`, `unordered`, `order_by`, `time_tolerance`, `dates_as_midnight_utc`, `number_tolerance`, `null_equals_missing`, `ids`, `trim`, `case_insensitive`, `headers`, `allow_extra_fields`, `severity`, `not_noise`, `learn_noise`, `recheck` (line 19, column 1)",
        ),
        (
            "[[route]]",
            "[noise]\nmin_observations = 0\n\n[[route]]",
            "config/tomos.toml: noise.min_observations: must be at least 1",
        ),
        (
            "[[route]]",
            "[[sweep]]\nrequest = \"POST /api/task\"\n\n[[route]]",
            "config/tomos.toml: sweep[0].request: a sweep only reads: use GET or HEAD",
        ),
        (
            "[[route]]",
            "[[sweep]]\nrequest = \"GET /api/task/{id}\"\n\n[[route]]",
            "config/tomos.toml: sweep[0].request: a {placeholder} needs `ids = \"kind\"` (the IDs to read one by one come from the ID map)",
        ),
        (
            "[[route]]",
            "[rollback]\nwindow = \"5m\"\n\n[[route]]",
            "config/tomos.toml: rollback: give error_rate (a fraction) and/or p95 (a duration): what makes the candidate fail",
        ),
        (
            "[[route]]",
            "[readiness]\nmin_match_rate = 99\n\n[[route]]",
            "config/tomos.toml: readiness.min_match_rate: expected a fraction from 0.0 to 1.0, got 99",
        ),
        (
            "[[route]]",
            "[idmap]\ncanonical = \"UUID\"\n\n[[route]]",
            "config/tomos.toml: idmap.canonical: expected \"uuid\" or \"as-is\", got \"UUID\"",
        ),
        (
            "[[route]]",
            "[idmap]\nimport = [\"/nonexistent/map.json\"]\n\n[[route]]",
            "config/tomos.toml: idmap.import[0]: no such file: /nonexistent/map.json",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\nlearn_ids = [{ kind = \"tasks\", primary = \"id\", shadow = \"/id\" }]\n",
            "config/tomos.toml: route \"update-task\": learn_ids[0]: \"id\" is not a JSON Pointer: it must be empty or start with '/'",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\nverify = \"GET /api/task/{task}\"\n",
            "config/tomos.toml: route \"update-task\": verify: {task} is neither a parameter of \"PATCH /api/task/{id:tasks}\" nor a learn_ids kind",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\non_primary_error = \"retry\"\n",
            "config/tomos.toml: route \"update-task\": on_primary_error: expected \"skip\" or \"mirror\", got \"retry\"",
        ),
        (
            "mirror = \"dual-write\"\n",
            "mirror = \"dual-write\"\n[route.translate]\nbody = { \"/parent\" = \"task kind\" }\n",
            "config/tomos.toml: route \"update-task\": translate.body.\"/parent\": expected an ID kind like \"tasks\", got \"task kind\"",
        ),
        (
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nreplay_headers = { authorization = \"CUTOVER_TEST_UNSET_VARIABLE\" }",
            "config/tomos.toml: shadow.replay_headers.\"authorization\": environment variable $CUTOVER_TEST_UNSET_VARIABLE is not set (the value is read from it, never from the file)",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"https://legacy.example.com\"\nheaders = { set = { \"x-api-key\" = \"CUTOVER_TEST_UNSET_A\" } }\n[shadow.headers]\nset = { authorization = \"CUTOVER_TEST_UNSET_B\" }",
            "config/tomos.toml: primary.headers.set.\"x-api-key\": environment variable $CUTOVER_TEST_UNSET_A is not set (the value is read from it, never from the file); also not set: $CUTOVER_TEST_UNSET_B (shadow.headers.set.\"authorization\")",
        ),
        (
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nheaders = { remove = [\"Cookie\", \"Transfer-Encoding\"] }",
            "config/tomos.toml: shadow.headers.remove[1]: \"transfer-encoding\" cannot be changed per side: cutover frames every message and connection itself",
        ),
        (
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nheaders = { set = { Host = \"HOST_VAR\" } }",
            "config/tomos.toml: shadow.headers.set.\"Host\": \"host\" cannot be changed per side: set shadow.host instead",
        ),
        (
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nheaders = { set = { \"x-key\" = \"$KEY\" } }",
            "config/tomos.toml: shadow.headers.set.\"x-key\": expected the name of an environment variable (letters, digits, '_'), got \"$KEY\"",
        ),
        (
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nheaders = { colour = [] }",
            "config/tomos.toml: shadow.headers.colour: unknown field `colour`, expected `set` or `remove` (line 13, column 13)",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[route.rollout]\nsteps = [\"5%\", \"1%\"]\nhold = \"30m\"",
            "config/tomos.toml: route \"update-task\": rollout.steps: each step must be above the one before; \"1%\" is not",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[route.rollout]\nsteps = [\"150%\"]\nhold = \"30m\"",
            "config/tomos.toml: route \"update-task\": rollout.steps: expected a percent from 0.01% to 100%, got \"150%\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[route.rollout]\nsteps = [\"5%\"]\nhold = \"30m\"\nmode = \"shadow\"",
            "config/tomos.toml: route \"update-task\": rollout.mode: expected \"candidate\" or \"candidate-fallback\", got \"shadow\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[route.rollout]\nsteps = [\"5%\"]\nhold = \"30m\"\nkey = \"query:user\"",
            "config/tomos.toml: route \"update-task\": rollout.key: a share's key is header:NAME, cookie:NAME or client-ip; got \"query:user\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[route.rollout]\nsteps = []\nhold = \"30m\"",
            "config/tomos.toml: route \"update-task\": rollout.steps: give the steps, e.g. [\"1%\", \"5%\", \"25%\", \"100%\"]",
        ),
        (
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nwrite_tries = 0",
            "config/tomos.toml: shadow.write_tries: expected 1 to 10 tries, got 0",
        ),
        (
            "url = \"https://legacy.example.com\"",
            "url = \"https://legacy.example.com\"\nheaders = { set = { \"x-api-key\" = \"CUTOVER_TEST_UNSET_A\" } }\n[[notify]]\nname = \"ops\"\nurl_env = \"CUTOVER_TEST_UNSET_HOOK\"",
            "config/tomos.toml: primary.headers.set.\"x-api-key\": environment variable $CUTOVER_TEST_UNSET_A is not set (the value is read from it, never from the file); also not set: $CUTOVER_TEST_UNSET_HOOK (notify[0].url_env)",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[[notify]]\nname = \"ops\"\nurl_env = \"https://hooks.slack.com/services/T0/B0/x\"",
            "config/tomos.toml: notify[0].url_env: expected the name of an environment variable (letters, digits, '_'), got \"https://hooks.slack.com/services/T0/B0/x\"",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[[notify]]\nname = \"ops\"\nurl_env = \"HOOK\"\non = [\"groups\"]",
            "config/tomos.toml: notify[0].on: unknown trigger \"groups\": expected group, verdict, rollback, drift or ramp",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[[notify]]\nname = \"ops\"\nurl_env = \"HOOK\"\nmax_attempts = 0",
            "config/tomos.toml: notify[0].max_attempts: expected 1 to 100, got 0",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[[notify]]\nname = \"ops\"\nurl_env = \"HOOK\"\n[[notify]]\nname = \"ops\"\nurl_env = \"HOOK\"",
            "config/tomos.toml: notify[1].name: \"ops\" names two sinks",
        ),
        (
            "mirror = \"dual-write\"",
            "mirror = \"dual-write\"\n[[notify]]\nname = \"ops\"\nurl_env = \"HOOK\"\nurl = \"https://hooks.slack.com/services/T0/B0/x\"",
            "config/tomos.toml: notify[0].url: a webhook URL is a credential and never goes in the file: put it in an environment variable and name that in url_env",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(
            BASE.contains(from),
            "the case's anchor {from:?} is not in the base config"
        );
        let text = BASE.replacen(from, to, 1);
        match parse(&text) {
            Ok(_) => panic!("accepted a broken config; expected: {expected}"),
            Err(message) => assert_eq!(&message, expected),
        }
    }
}

#[test]
fn a_url_with_credentials_may_come_from_the_environment() {
    let env = |name: &str| (name == "CUTOVER_SHADOW_URL").then(|| "https://svc:s3cret@candidate.internal".to_string());
    let config = Config::parse(BASE, "config/tomos.toml", &env).unwrap();
    assert_eq!(config.shadow.url.password(), Some("s3cret"));
    let env = |name: &str| (name == "CUTOVER_SHADOW_URL").then(|| "not a url".to_string());
    let err = Config::parse(BASE, "config/tomos.toml", &env).unwrap_err().to_string();
    assert_eq!(
        err,
        "config/tomos.toml: shadow.url (from $CUTOVER_SHADOW_URL): not a URL: relative URL without a base"
    );
}

#[test]
fn the_shipped_configs_pass_check_config() {
    for file in ["config/example.toml", "config/tomos.toml"] {
        let output = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["check-config", file])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.starts_with(&format!("{file}: ok")), "{stdout}");
    }
}

#[test]
fn check_config_fails_with_the_message_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BASE.replace("PATCH /api", "PATHC /api")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(": route \"update-task\": match: unknown method \"PATHC\""),
        "{stderr}"
    );
}

#[test]
fn check_config_names_each_sides_headers_by_variable_never_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sides.toml");
    let text = BASE
        .replacen(
            "url = \"https://legacy.example.com\"",
            "url = \"https://legacy.example.com\"\nheaders = { set = { \"x-api-key\" = \"CUTOVER_TEST_SHORT_KEY\" } }",
            1,
        )
        .replacen(
            "url = \"https://candidate.example.com/v2\"",
            "url = \"https://candidate.example.com/v2\"\nheaders = { set = { authorization = \"CUTOVER_TEST_LONG_KEY\" }, remove = [\"cookie\"] }",
            1,
        );
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["check-config", path.to_str().unwrap()])
        .env("CUTOVER_TEST_SHORT_KEY", "k3y")
        .env("CUTOVER_TEST_LONG_KEY", "Bearer long-enough-token")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("every request to the primary: sets x-api-key (from $CUTOVER_TEST_SHORT_KEY)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "every request to the shadow: sets authorization (from $CUTOVER_TEST_LONG_KEY), removes cookie\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: $CUTOVER_TEST_SHORT_KEY is shorter than 8 bytes: primary.headers.set.\"x-api-key\""),
        "{stdout}"
    );
    assert!(!stdout.contains("LONG_KEY is shorter"), "{stdout}");
    assert!(
        !stdout.contains("k3y") && !stdout.contains("long-enough-token"),
        "{stdout}"
    );
}

#[test]
fn the_tomos_config_never_mirrors_side_effect_routes() {
    let config = Config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tomos.toml")).unwrap();
    let policy = |method: &str, path: &str| {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        config.routes.find(&method, path).map(|route| route.mirror.to_string())
    };
    for (method, path) in [
        ("GET", "/api/notifications/morning-overview"),
        ("GET", "/api/notifications/eod-summary"),
        ("POST", "/api/register-device"),
        ("POST", "/api/send-push"),
        ("POST", "/api/task/breakdown"),
        ("POST", "/api/m365-calendar"),
        ("GET", "/api/task/smart-surface"),
    ] {
        assert_eq!(policy(method, path).as_deref(), Some("off"), "{method} {path}");
    }
    assert_eq!(policy("GET", "/api/all-tasks").as_deref(), Some("compare"));
    assert_eq!(policy("POST", "/api/task").as_deref(), Some("dual-write"));
    assert_eq!(policy("POST", "/api/task/batch").as_deref(), Some("dual-write"));
    assert_eq!(
        policy("PATCH", "/api/task/0f8fad5b-d9cb-469f-a165-70867728950e/complete").as_deref(),
        Some("dual-write")
    );
}

#[test]
fn side_headers_are_read_from_the_environment_and_redacted_wherever_they_appear() {
    let text = BASE.replacen(
        "url = \"https://candidate.example.com/v2\"",
        "url = \"https://candidate.example.com/v2\"\n[shadow.headers]\nset = { \"X-Api-Key\" = \"CANDIDATE_KEY\" }\nremove = [\"cookie\"]",
        1,
    );
    let env = |name: &str| (name == "CANDIDATE_KEY").then(|| "sk-live-0123456789".to_string());
    let config = Config::parse(&text, "config/tomos.toml", &env).unwrap();
    let headers = &config.shadow.headers;
    assert_eq!(headers.remove, vec![http::header::COOKIE]);
    assert_eq!(headers.set.len(), 1);
    assert_eq!(headers.set[0].name, "x-api-key");
    assert_eq!(headers.set[0].variable, "CANDIDATE_KEY");
    assert_eq!(headers.set[0].value.expose(), "sk-live-0123456789");
    assert!(config.primary.headers.set.is_empty() && config.primary.headers.remove.is_empty());
    // A backend that echoes the key back gets it scrubbed from kept text,
    // and the header itself is redacted by name.
    let echoed = r#"{"seen":"sk-live-0123456789","quoted":"a\"sk-live-0123456789"}"#.to_string();
    assert_eq!(
        config.redact.scrub(echoed),
        r#"{"seen":"[redacted]","quoted":"a\"[redacted]"}"#
    );
    let mut request = http::HeaderMap::new();
    request.insert("x-api-key", http::HeaderValue::from_static("client-supplied"));
    assert_eq!(config.redact.headers(&request)["x-api-key"], "[redacted]");
}

#[test]
fn a_header_cutover_sets_twice_on_the_shadow_is_refused() {
    let env = |name: &str| name.starts_with("KEY_").then(|| "value-long-enough".to_string());
    let cases = [
        (
            "replay_headers = { authorization = \"KEY_A\" }\nheaders = { set = { Authorization = \"KEY_B\" } }",
            "config/tomos.toml: shadow.replay_headers.\"authorization\": \"authorization\" is also in shadow.headers.set, which applies to every request to the shadow, replays and rechecks included; keep it in one place",
        ),
        (
            "headers = { set = { \"x-key\" = \"KEY_A\" }, remove = [\"X-Key\"] }",
            "config/tomos.toml: shadow.headers.set.\"x-key\": \"x-key\" is also in shadow.headers.remove; set already replaces the client's value",
        ),
    ];
    for (extra, expected) in cases {
        let text = BASE.replacen(
            "url = \"https://candidate.example.com/v2\"",
            &format!("url = \"https://candidate.example.com/v2\"\n{extra}"),
            1,
        );
        match Config::parse(&text, "config/tomos.toml", &env) {
            Ok(_) => panic!("accepted {extra:?}"),
            Err(err) => assert_eq!(err.to_string(), expected),
        }
    }
}

#[test]
fn a_webhook_url_comes_from_its_variable_and_errors_never_show_it() {
    let with_sink = BASE.replace(
        "mirror = \"dual-write\"",
        "mirror = \"dual-write\"\n[[notify]]\nname = \"ops\"\nurl_env = \"OPS_HOOK\"\non = [\"group\", \"verdict\"]\ntimeout = \"50ms\"",
    );
    let parse_with = |text: &str, url: &'static str| {
        Config::parse(text, "config/tomos.toml", &move |name| {
            (name == "OPS_HOOK").then(|| url.to_string())
        })
        .map_err(|err| err.to_string())
    };
    let err = parse_with(&with_sink, "ftp://hooks.example.com/T0/secret-path").unwrap_err();
    assert_eq!(
        err,
        "config/tomos.toml: notify[0].url_env: $OPS_HOOK does not hold an http:// or https:// URL"
    );
    let err = parse_with(&with_sink, "https://hooks.example.com/T0/secret-path").unwrap_err();
    assert!(err.starts_with("config/tomos.toml: notify[0].timeout: "), "{err}");
    assert!(!err.contains("secret-path"), "{err}");
    let config = parse_with(
        &with_sink.replace("timeout = \"50ms\"", "timeout = \"3s\""),
        "https://hooks.example.com/T0/secret-path",
    )
    .unwrap();
    let sink = &config.notify[0];
    assert_eq!(sink.url.expose(), "https://hooks.example.com/T0/secret-path");
    assert!(!format!("{sink:?}").contains("secret-path"), "the URL is a secret");
    assert_eq!(sink.on.len(), 2);
    assert_eq!(
        (sink.timeout, sink.backoff, sink.max_attempts),
        (std::time::Duration::from_secs(3), std::time::Duration::from_secs(2), 10)
    );
}
