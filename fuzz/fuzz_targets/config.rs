//! Any config text gets a config or an error, never a panic; and a config
//! that validates runs into the code that uses its values (the listeners'
//! limits, the clock arithmetic of every timeout, flush and retention)
//! without overflow.
#![no_main]

use std::time::{Instant, SystemTime};

use cutover::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, "fuzz.toml", &|_| None) else {
        return;
    };
    let (proxy, admin) = cutover::app::connection_limits(&config, Some(1024));
    assert!(proxy.max_connections >= 1 && admin.max_connections >= 1);
    let now = Instant::now();
    let mut deadlines = vec![
        proxy.header_read_timeout,
        proxy.idle_timeout,
        config.listen.body_read_timeout,
        config.listen.shutdown_grace,
        config.primary.timeout,
        config.primary.connect_timeout,
        config.shadow.timeout,
        config.shadow.connect_timeout,
        config.mirror.write_wait,
        config.store.flush,
        config.store.options.acquire_timeout,
    ];
    deadlines.extend(config.routes.iter().filter_map(|route| route.compare.recheck));
    for deadline in deadlines {
        let _ = now + deadline;
    }
    let _ = SystemTime::now() - config.store.retention;
});
