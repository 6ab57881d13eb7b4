use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = gpu_slicer::cli::Cli::parse();
    gpu_slicer::cli::run(cli)
}
