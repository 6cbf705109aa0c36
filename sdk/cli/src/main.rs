//! `trellis`: see `trellis --help` and docs/cli.md.

/// mimalloc, as the node: `trellis bench` allocates and frees a few small
/// objects per transaction on each of its threads, where glibc's allocator
/// took a tenth of the load generator's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(trellis_cli::main_with_args(std::env::args_os()));
}
