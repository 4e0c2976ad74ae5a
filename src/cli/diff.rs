//! `diff A B`: two saved answers compared by the proxy's own engine, under
//! a route's rules and through the ID map the proxy would use (the
//! config's `[idmap] import` files and the pairs in its store), with
//! diff(1)'s exit codes.
//!
//! Must never: write to the store, or create one where there is none.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::compare::rules::CompareRules;
use crate::compare::{compare_responses, Context as CompareContext, IdLookup, NoIds};
use crate::config::Config;
use crate::exchange::CapturedResponse;
use crate::idmap::IdMap;

use super::{runtime, DiffFormat};

/// Compares two saved responses; `Ok(true)` when they match.
pub(super) fn diff(
    a: &Path,
    b: &Path,
    config: Option<&Path>,
    route: Option<&str>,
    store: Option<&str>,
    format: DiffFormat,
) -> anyhow::Result<bool> {
    let read = |path: &Path| -> anyhow::Result<CapturedResponse> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        CapturedResponse::from_saved(&bytes).with_context(|| format!("{}", path.display()))
    };
    let (primary, shadow) = (read(a)?, read(b)?);
    let config = config.map(Config::load).transpose()?;
    let (rules, route_name, decode_limit) = match (&config, route) {
        (Some(config), Some(name)) => {
            let found = config.routes.iter().find(|r| r.name == name).ok_or_else(|| {
                let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
                anyhow::anyhow!(
                    "{}: no route named \"{name}\" (routes: {})",
                    config.source,
                    names.join(", ")
                )
            })?;
            (Arc::clone(&found.compare), name.to_string(), config.mirror.max_decoded)
        }
        _ => (Arc::new(CompareRules::new()), "diff".to_string(), 64 << 20),
    };
    // A bare body has no headers: comparing them would only report their absence.
    let rules = if primary.headers.is_empty() || shadow.headers.is_empty() {
        let mut without_headers = (*rules).clone();
        without_headers.headers.clear();
        Arc::new(without_headers)
    } else {
        rules
    };
    let ids = match &config {
        Some(config) => Some(id_map(config, store)?),
        None => None,
    };
    let ctx = CompareContext {
        route: &route_name,
        method: &http::Method::GET,
        rules: &rules,
        ids: ids.as_ref().map_or(&NoIds as &dyn IdLookup, |ids| ids as &dyn IdLookup),
        decode_limit,
        want_patch: !matches!(format, DiffFormat::Text),
        bodies_equal: false,
    };
    let comparison = compare_responses(&ctx, &primary, &shadow);
    match format {
        DiffFormat::Text => crate::cli::write_stdout(&comparison.to_text(), false)?,
        DiffFormat::Json => say!("{}", serde_json::to_string_pretty(&comparison)?),
        DiffFormat::Patch => say!(
            "{}",
            serde_json::to_string_pretty(&comparison.patch.clone().unwrap_or_default())?
        ),
    }
    if let Some(reason) = comparison.incomparable {
        anyhow::bail!("the bodies cannot be compared: {reason}");
    }
    Ok(comparison.is_match())
}

/// The ID map the proxy would start with: the config's import files, then
/// the pairs in the store (`--store`, else the config's). Says on stderr
/// how many pairs it used and where from.
pub(super) fn id_map(config: &Config, store: Option<&str>) -> anyhow::Result<IdMap> {
    let ids = IdMap::new(config.idmap.canonical);
    let mut imported = 0;
    for path in &config.idmap.import {
        let report = crate::app::import_file(&ids, path)
            .with_context(|| format!("{}: idmap.import {}", config.source, path.display()))?;
        imported += report.added.len();
    }
    let url = store.unwrap_or(&config.store.url);
    let from_store = runtime()?.block_on(pairs_from_store(&ids, url))?;
    eprintln!(
        "ID map: {} pairs ({imported} from idmap.import, {from_store} from the store {url})",
        imported + from_store
    );
    Ok(ids)
}

async fn pairs_from_store(ids: &IdMap, url: &str) -> anyhow::Result<usize> {
    let store = match crate::store::Store::open_existing(url, &crate::store::StoreOptions::default()).await {
        Err(crate::store::StoreError::Missing { .. }) => {
            eprintln!("ID map: no store at {url} (nothing recorded there yet)");
            return Ok(0);
        }
        opened => opened.with_context(|| format!("cannot open the store {url} for its ID pairs"))?,
    };
    let pairs = store.id_pairs().await;
    store.close().await;
    let mut added = 0;
    for (pair, _) in pairs.with_context(|| format!("cannot read the ID pairs of {url}"))? {
        // A pair the import already holds, or one it contradicts, keeps the import's.
        if ids.insert(&pair).unwrap_or(false) {
            added += 1;
        }
    }
    Ok(added)
}
