//! `ire plugins`: the node's plugins, what they need and their config schemas.

use ire_actors::registry::DefaultPluginRegistry;
use ire_core::PluginRegistry;

use super::output::{self, Format};
use super::{exit, load_config};
use crate::config::ConfigSources;

/// `ire plugins`.
#[derive(Debug, clap::Args)]
pub struct PluginsArgs {
    /// Only this plugin (its schema is printed in full).
    pub name: Option<String>,
}

/// Runs `ire plugins`.
pub async fn run(args: PluginsArgs, sources: &ConfigSources, out: Format) -> u8 {
    let config = match load_config(sources).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let registry = DefaultPluginRegistry::new();
    if let Err(e) = crate::catalog::register(&registry, &config.plugins).await {
        return super::fail("loading plugins", e.chain_message());
    }
    let mut list = match registry.list(&Default::default()) {
        Ok(l) => l,
        Err(e) => return super::fail("listing plugins", e),
    };
    if let Some(n) = &args.name {
        list.retain(|m| &m.name == n);
        if list.is_empty() {
            eprintln!("error: no plugin named {n:?}");
            return exit::INVALID;
        }
    }
    let single = args.name.is_some();
    output::print(out, &list, || {
        if single {
            let m = &list[0];
            return format!(
                "{} {}: {}\nkind: {}\ncapabilities: {}\nconfig schema:\n{}",
                m.name,
                m.version,
                m.description,
                if crate::catalog::is_sustained(m) {
                    "sustained fault"
                } else {
                    "action"
                },
                m.required_capabilities.join(", "),
                serde_json::to_string_pretty(&m.config_schema).unwrap_or_default()
            );
        }
        output::table(
            &["plugin", "version", "kind", "needs", "description"],
            list.iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.version.to_string(),
                        if crate::catalog::is_sustained(m) {
                            "sustained"
                        } else {
                            "action"
                        }
                        .into(),
                        m.required_capabilities.join(", "),
                        m.description.clone(),
                    ]
                })
                .collect(),
        )
    });
    exit::OK
}
