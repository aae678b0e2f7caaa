//! The `wxrules` binary: sets the allocator, parses the command line and hands over to
//! `wxrules::cli`.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc hands back the memory a large rules load frees, where glibc kept it resident;
/// its settings are compiled in from `.cargo/config.toml`.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = wxrules::cli::Args::parse();
    wxrules::cli::run(args)
}
