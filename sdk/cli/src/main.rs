//! `trellis`: see `trellis --help` and docs/cli.md.

fn main() {
    std::process::exit(trellis_cli::main_with_args(std::env::args_os()));
}
