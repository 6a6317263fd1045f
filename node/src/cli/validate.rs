//! `ire validate FILE...`: every problem of every file, with its line and field.

use std::path::PathBuf;

use ire_actors::registry::DefaultPluginRegistry;
use serde::Serialize;

use super::output::{self, Format};
use super::{exit, load_config};
use crate::campaign::validate::{check, Context};
use crate::campaign::{Diagnostic, Source};
use crate::config::ConfigSources;

/// `ire validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Campaign files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Serialize)]
struct FileResult {
    file: String,
    valid: bool,
    errors: Vec<Diagnostic>,
}

/// Runs `ire validate`.
pub async fn run(args: ValidateArgs, sources: &ConfigSources, out: Format) -> u8 {
    let config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let registry = DefaultPluginRegistry::new();
    if let Err(e) = crate::catalog::register(&registry, &config.plugins).await {
        return super::fail("loading plugins", e.chain_message());
    }
    let adapters = crate::wiring::static_adapter_infos(&config);
    let ctx = Context {
        plugins: &registry,
        adapters: Some(&adapters),
    };
    let mut results = Vec::new();
    for f in &args.files {
        let r = match Source::read(f) {
            Err(d) => Err(d),
            Ok(src) => check(&src, &ctx).map(|_| ()),
        };
        results.push(FileResult {
            file: f.display().to_string(),
            valid: r.is_ok(),
            errors: r.err().map(|d| d.0).unwrap_or_default(),
        });
    }
    let invalid = results.iter().any(|r| !r.valid);
    output::print(out, &results, || {
        let mut lines = Vec::new();
        for r in &results {
            if r.valid {
                lines.push(format!("{}: valid", r.file));
            }
            for e in &r.errors {
                lines.push(e.to_string());
            }
        }
        lines.join("\n")
    });
    if invalid {
        exit::INVALID
    } else {
        exit::OK
    }
}
