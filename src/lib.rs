//! cutover: a reverse proxy that turns a backend migration's parallel test
//! into evidence. It serves every request from the primary, mirrors it to
//! the shadow, compares the two answers and counts the outcome.
//!
//! # Layout
//!
//! From the leaves up; a module imports only modules listed before it
//! (`tests/architecture.rs` checks this order against the source).
//!
//! Leaves (they import nothing of cutover's):
//! - [`clock`]: the wall clock in epoch milliseconds, as the store keeps it.
//! - [`units`]: durations, sizes and rates as written in configs, flags and queries.
//! - [`histogram`]: log-linear latency buckets, the store's rollups keep them (within 1.6%).
//! - [`secret`]: a value that is used but never printed.
//! - [`headers`]: the header names cutover reads, sets or removes (hop-by-hop), and the markers clients may not.
//! - [`trace`]: W3C `traceparent`: the client's trace id, and a child span per request sent on.
//! - [`budget`]: the byte budget captured bodies are held against, and its reservations.
//! - [`mode`]: which side serves (shadow, candidate, candidate-fallback, primary-only),
//!   global or per route, `mode::share`: the sticky share of a ramp, and
//!   `mode::rollout`: a ramp's steps and when it advances or steps back.
//! - [`exchange`]: the vocabulary every stage shares: one observed request, outcomes, skip
//!   reasons, severity, `Side`, ID pairs.
//! - [`seal`]: replay data that holds a secret, sealed under `CUTOVER_REPLAY_KEY`.
//!
//! Vocabulary on the leaves, and the pure stages (no I/O):
//! - [`ledger`]: the write ledger's rows, drift details and replayable requests.
//! - [`compare`]: judges an exchange into an outcome.
//! - [`idmap`]: primary ↔ shadow ID pairs: import, learn, canonical form, translation.
//! - [`redact`]: secrets out of everything kept (headers, query values, JSON fields).
//! - [`capture`]: requests as kept, written as HAR 1.2 or JSON Lines (`cutover export`).
//! - [`route`]: `METHOD /path/{param}` templates and per-route mirroring policy, matched on
//!   the canonical path (`route::normalize`); `route::access`: which requests are reads
//!   (safe methods, a route's `reads`, a GraphQL route's queries).
//!
//! The outside parts:
//! - [`metrics`]: the Prometheus registry and metric names.
//! - [`server`]: HTTP/1.1 + h2c listener plumbing: connection cap, first-byte and idle
//!   timeouts, graceful shutdown.
//! - [`upstream`]: one pooled HTTP(S) client per backend.
//! - [`store`]: the divergence store (SQLite or PostgreSQL), its schema and migrations;
//!   `store::writer` batches records into it and says what a stop left unwritten.
//!
//! The stages of a request:
//! - [`record`]: judges an exchange and records its outcome: metrics, the noise learner,
//!   redacted rows and samples for the store.
//! - [`mirror`]: the bounded mirror queue, sampling, shadow calls, dual-writes in per-entity
//!   order, comparison workers.
//! - [`drift`]: drifted writes in the write ledger and their replay, in order.
//! - [`recheck`]: a divergence group's sampled reads sent to both sides again now, compared
//!   under the current rules; the group marked `fixed` when its difference is gone.
//! - [`proxy`]: the hot path: forward to the serving side, stream its answer back, capture.
//! - [`report`]: the readiness report: evidence from the store, gates, verdict,
//!   HTML/Markdown/JSON.
//! - [`notify`]: `[[notify]]` webhooks: notices of groups, verdicts, rollbacks, drift and
//!   ramp steps, added once per sink in the store and delivered with retries.
//!
//! The admin listener, assembly and the top:
//! - [`admin`]: the admin listener: health, readiness, metrics, the API over the store;
//!   built from the handles app gives it (a reload trait, the shared readiness).
//! - [`config`]: TOML → validated [`config::Config`], assembled from the sections the
//!   modules below own; errors point at the file and key; `config::ranges` bounds every
//!   duration and size.
//! - [`app`]: starts and stops one instance.
//! - [`demo`]: `cutover demo`: the task API in two flavors (also hosted by the tests), the proxy, a client and the report on one machine.
//! - [`cli`]: the `cutover` command line.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod budget;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod compare;
pub mod config;
pub mod demo;
pub mod drift;
pub mod exchange;
pub mod headers;
pub mod histogram;
pub mod idmap;
pub mod ledger;
pub mod metrics;
pub mod mirror;
pub mod mode;
pub mod notify;
pub mod proxy;
pub mod recheck;
pub mod record;
pub mod redact;
pub mod report;
pub mod route;
pub mod seal;
pub mod secret;
pub mod server;
pub mod store;
pub mod trace;
pub mod units;
pub mod upstream;
