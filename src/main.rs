//! The `wxrules` binary: parses the command line and hands over to `wxrules::cli`.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = wxrules::cli::Args::parse();
    wxrules::cli::run(args)
}
