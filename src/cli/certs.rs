//! `gpu-slicer certs`: a CA and a serving certificate for the webhook Service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::terminal::escape_controls;
use crate::webhook::tls;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// The webhook Service name.
    #[arg(long)]
    pub service: String,
    /// The webhook Service namespace.
    #[arg(long)]
    pub namespace: String,
}

pub(super) fn run(args: CertsArgs) -> ExitCode {
    let names = tls::service_names(&args.service, &args.namespace);
    let result = tls::generate(&names, &format!("{}.{}.svc", args.service, args.namespace))
        .and_then(|b| tls::write_bundle(&args.out, &b, false));
    match result {
        Ok(()) => {
            println!(
                "wrote {dir}/ca.crt, {dir}/tls.crt, {dir}/tls.key for {}",
                names.join(", "),
                dir = args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
