//! The `cutover` binary: everything lives in the library; see `cutover::cli`.

/// mimalloc: the proxy allocates and frees small buffers on several threads
/// at once, where glibc's malloc spent a fifth of the proxy's CPU (measured
/// with `perf` under `scripts/bench-proxy.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cutover::cli::run()
}
