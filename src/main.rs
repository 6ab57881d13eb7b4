use std::process::ExitCode;

use clap::Parser;

// Every admission parses a few KB of JSON into short-lived strings and maps; mimalloc's per-thread
// free lists make those allocations much cheaper than glibc's malloc (BENCHMARKS.md: about 25% more
// admissions per core). Built without transparent huge pages (`no_thp`), which otherwise put ~8 MiB
// on the resident set at 256 connections.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = gpu_slicer::cli::Cli::parse();
    gpu_slicer::cli::run(cli)
}
