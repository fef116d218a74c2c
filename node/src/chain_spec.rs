//! Chain spec selection: the built-in `dev` and `local` specs, or a JSON file.

use std::path::Path;

use anyhow::{Context, Result};
use drchain_runtime::dev::specs;
use drchain_runtime::ChainSpec;

/// The spec named by `--chain`: `dev`, `local`, or a path to a JSON file.
pub fn load(chain: &str) -> Result<ChainSpec> {
    match chain {
        "dev" => specs::dev().context("building the dev chain spec"),
        "local" => specs::local().context("building the local chain spec"),
        path => {
            let bytes = std::fs::read(Path::new(path))
                .with_context(|| format!("reading chain spec {path}"))?;
            ChainSpec::from_json(&bytes).with_context(|| format!("chain spec {path}"))
        }
    }
}
