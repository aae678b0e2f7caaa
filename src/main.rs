//! The `wxrules` binary: parses the command line and hands over to `wxrules::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = wxrules::cli::Args::parse();
    wxrules::cli::run(args)
}
