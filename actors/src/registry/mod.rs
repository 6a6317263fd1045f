//! The node's plugin registry: validated registration, semver dependencies (missing ones
//! and cycles rejected), filtering, discovery of out-of-process plugins from a directory,
//! and reload without a restart (seed properties 59-63, 84-88).

mod manifest;
mod process;

pub use manifest::{manifest_path, PluginManifest, MANIFEST_FILE};
pub use process::{ProcessPlugin, ProcessPluginLoader};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use ire_core::{
    Error, Plugin, PluginConfig, PluginFilter, PluginLoader, PluginMetadata, PluginRegistry,
    PluginValidator, Result,
};

use crate::metric_names;

struct Entry {
    plugin: Arc<dyn Plugin>,
    metadata: PluginMetadata,
    /// Where it was discovered, for reload.
    source: Option<PathBuf>,
}

/// The default [`PluginRegistry`]: in memory, shared by the engine and the API.
pub struct DefaultPluginRegistry {
    plugins: RwLock<BTreeMap<String, Entry>>,
    loader: RwLock<Arc<dyn PluginLoader>>,
    validators: RwLock<Vec<Arc<dyn PluginValidator>>>,
}

impl Default for DefaultPluginRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DefaultPluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.read().keys().cloned().collect();
        f.debug_struct("DefaultPluginRegistry")
            .field("plugins", &names)
            .finish_non_exhaustive()
    }
}

impl DefaultPluginRegistry {
    /// An empty registry that loads out-of-process plugins ([`ProcessPluginLoader`]).
    pub fn new() -> Self {
        DefaultPluginRegistry {
            plugins: RwLock::new(BTreeMap::new()),
            loader: RwLock::new(Arc::new(ProcessPluginLoader)),
            validators: RwLock::new(Vec::new()),
        }
    }

    /// Adds a check run on every registration.
    pub fn add_validator(&self, v: Arc<dyn PluginValidator>) {
        self.validators.write().expect("registry lock").push(v);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.plugins.read().expect("registry lock")
    }

    fn loader(&self) -> Arc<dyn PluginLoader> {
        self.loader.read().expect("registry lock").clone()
    }

    /// Registers with the source it was discovered at.
    async fn register_from(&self, plugin: Arc<dyn Plugin>, source: Option<PathBuf>) -> Result<()> {
        let metadata = plugin.metadata();
        self.validate(plugin.as_ref())?;
        if self.read().contains_key(&metadata.name) {
            return Err(Error::invalid(
                format!("plugin {}", metadata.name),
                "is already registered (unregister or reload it)",
            ));
        }
        self.validate_dependencies(plugin.as_ref())?;
        plugin
            .initialize(&PluginConfig::empty())
            .await
            .map_err(|e| e.context(format!("initializing plugin {}", metadata.name)))?;
        let mut map = self.plugins.write().expect("registry lock");
        // Checked again under the write lock: two registrations may race.
        if map.contains_key(&metadata.name) {
            return Err(Error::invalid(
                format!("plugin {}", metadata.name),
                "is already registered (unregister or reload it)",
            ));
        }
        check_dependencies(&map, &metadata, None)?;
        tracing::info!(component = "registry", plugin = %metadata.name, version = %metadata.version, "plugin registered");
        map.insert(
            metadata.name.clone(),
            Entry {
                plugin,
                metadata,
                source,
            },
        );
        metrics::gauge!(metric_names::REGISTRY_PLUGINS).set(map.len() as f64);
        Ok(())
    }

    /// Plugins that depend on `name`.
    fn dependents(map: &BTreeMap<String, Entry>, name: &str) -> Vec<String> {
        map.values()
            .filter(|e| {
                e.metadata
                    .dependencies
                    .iter()
                    .any(|d| d.plugin_name == name)
            })
            .map(|e| e.metadata.name.clone())
            .collect()
    }
}

/// Checks `m`'s dependencies against the registered plugins (`replacing` is the name being
/// reloaded, whose registered entry `m` stands in for).
fn check_dependencies(
    map: &BTreeMap<String, Entry>,
    m: &PluginMetadata,
    _replacing: Option<&str>,
) -> Result<()> {
    for d in &m.dependencies {
        let Some(dep) = map.get(&d.plugin_name) else {
            return Err(Error::invalid(
                format!("plugin {} dependencies", m.name),
                format!(
                    "needs {} {}, which is not registered",
                    d.plugin_name, d.version
                ),
            ));
        };
        if !d.version.matches(&dep.metadata.version) {
            return Err(Error::invalid(
                format!("plugin {} dependencies", m.name),
                format!(
                    "needs {} {}, but version {} is registered",
                    d.plugin_name, d.version, dep.metadata.version
                ),
            ));
        }
    }
    // The graph with `m` in place must stay acyclic.
    let mut graph: BTreeMap<String, Vec<String>> = map
        .values()
        .map(|e| {
            (
                e.metadata.name.clone(),
                e.metadata
                    .dependencies
                    .iter()
                    .map(|d| d.plugin_name.clone())
                    .collect(),
            )
        })
        .collect();
    graph.insert(
        m.name.clone(),
        m.dependencies
            .iter()
            .map(|d| d.plugin_name.clone())
            .collect(),
    );
    if let Some(cycle) = find_cycle(&graph) {
        return Err(Error::invalid(
            format!("plugin {} dependencies", m.name),
            format!("form a cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

/// A dependency cycle in the graph, as the path that closes it (`a -> b -> a`).
pub fn find_cycle(graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        n: &str,
        graph: &BTreeMap<String, Vec<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_owned(), Mark::Visiting);
        path.push(n.to_owned());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// The plugin manifests in a directory: `*/plugin.yaml` and `*.plugin.yaml`, sorted.
pub fn manifests_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        Error::invalid(
            format!("plugin directory {}", dir.display()),
            format!("cannot read: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let p = entry.path();
        if p.is_dir() && p.join(MANIFEST_FILE).is_file() {
            out.push(p.join(MANIFEST_FILE));
        } else if p.is_file()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".plugin.yaml"))
        {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[async_trait]
impl PluginRegistry for DefaultPluginRegistry {
    async fn register(&self, plugin: Arc<dyn Plugin>) -> Result<()> {
        self.register_from(plugin, None).await
    }

    async fn unregister(&self, name: &str) -> Result<()> {
        let entry = {
            let mut map = self.plugins.write().expect("registry lock");
            if !map.contains_key(name) {
                return Err(Error::not_found("plugin", name));
            }
            let deps = Self::dependents(&map, name);
            if !deps.is_empty() {
                return Err(Error::invalid(
                    format!("plugin {name}"),
                    format!("cannot be unregistered: {} depend on it", deps.join(", ")),
                ));
            }
            let e = map.remove(name).expect("checked above");
            metrics::gauge!(metric_names::REGISTRY_PLUGINS).set(map.len() as f64);
            e
        };
        if entry.source.is_some() {
            self.loader().unload(&entry.plugin).await?;
        }
        tracing::info!(component = "registry", plugin = %name, "plugin unregistered");
        Ok(())
    }

    async fn discover(&self, path: &Path) -> Result<PluginMetadata> {
        let plugin = self
            .loader()
            .load(path)
            .await
            .map_err(|e| e.context(format!("loading plugin at {}", path.display())))?;
        let md = plugin.metadata();
        self.register_from(plugin, Some(path.to_owned())).await?;
        Ok(md)
    }

    /// Registers every plugin found in `dir`, in dependency order. Valid plugins are
    /// registered even when others fail; the error then lists every failure.
    async fn discover_from_directory(&self, dir: &Path) -> Result<Vec<PluginMetadata>> {
        let loader = self.loader();
        let mut pending: Vec<(PathBuf, Arc<dyn Plugin>)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for path in manifests_in(dir)? {
            match loader.load(&path).await {
                Ok(p) => pending.push((path, p)),
                Err(e) => failures.push(format!("{}: {}", path.display(), e.chain_message())),
            }
        }
        let mut registered = Vec::new();
        // Register in rounds: a plugin whose dependencies are all registered goes next.
        loop {
            let before = pending.len();
            let mut rest = Vec::new();
            for (path, plugin) in pending {
                let md = plugin.metadata();
                let ready = md
                    .dependencies
                    .iter()
                    .all(|d| self.read().contains_key(&d.plugin_name));
                if !ready {
                    rest.push((path, plugin));
                    continue;
                }
                match self.register_from(plugin, Some(path.clone())).await {
                    Ok(()) => registered.push(md),
                    Err(e) => failures.push(format!("{}: {}", path.display(), e.chain_message())),
                }
            }
            pending = rest;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        if !pending.is_empty() {
            // What is left waits on something that is neither registered nor loadable, or on
            // itself through a cycle.
            let graph: BTreeMap<String, Vec<String>> = pending
                .iter()
                .map(|(_, p)| {
                    let m = p.metadata();
                    (
                        m.name,
                        m.dependencies.into_iter().map(|d| d.plugin_name).collect(),
                    )
                })
                .collect();
            let cycle = find_cycle(&graph);
            let names: BTreeSet<String> = graph.keys().cloned().collect();
            for (path, p) in &pending {
                let m = p.metadata();
                let reason = match &cycle {
                    Some(c) if c.contains(&m.name) => {
                        format!("dependency cycle: {}", c.join(" -> "))
                    }
                    _ => {
                        let missing: Vec<String> = m
                            .dependencies
                            .iter()
                            .filter(|d| {
                                !self.read().contains_key(&d.plugin_name)
                                    && !names.contains(&d.plugin_name)
                            })
                            .map(|d| format!("{} {}", d.plugin_name, d.version))
                            .collect();
                        if missing.is_empty() {
                            "depends on a plugin that could not be registered".to_owned()
                        } else {
                            format!("missing dependencies: {}", missing.join(", "))
                        }
                    }
                };
                failures.push(format!("{}: plugin {}: {reason}", path.display(), m.name));
            }
        }
        if failures.is_empty() {
            Ok(registered)
        } else {
            Err(Error::invalid(
                format!("plugin directory {}", dir.display()),
                format!(
                    "{} registered, {} failed: {}",
                    registered.len(),
                    failures.len(),
                    failures.join("; ")
                ),
            ))
        }
    }

    fn get(&self, name: &str) -> Result<Arc<dyn Plugin>> {
        self.read()
            .get(name)
            .map(|e| e.plugin.clone())
            .ok_or_else(|| Error::not_found("plugin", name))
    }

    fn list(&self, filter: &PluginFilter) -> Result<Vec<PluginMetadata>> {
        Ok(self
            .read()
            .values()
            .filter(|e| filter.matches(&e.metadata))
            .map(|e| e.metadata.clone())
            .collect())
    }

    fn validate(&self, plugin: &dyn Plugin) -> Result<()> {
        let md = plugin.metadata();
        md.validate()?;
        for k in md.supported_kinds.iter().chain(&md.required_capabilities) {
            if k.trim().is_empty() {
                return Err(Error::invalid(
                    format!("plugin {} metadata", md.name),
                    "kinds and capabilities must not be empty strings",
                ));
            }
        }
        // The config schema must be JSON schema, so that every step config can be checked.
        ire_core::ConfigSchema::compile(&md.name, &md.config_schema)?;
        for v in self.validators.read().expect("registry lock").iter() {
            v.validate(plugin)
                .map_err(|e| e.context(format!("validating plugin {}", md.name)))?;
        }
        Ok(())
    }

    fn validate_dependencies(&self, plugin: &dyn Plugin) -> Result<()> {
        check_dependencies(&self.read(), &plugin.metadata(), None)
    }

    async fn reload(&self, name: &str) -> Result<PluginMetadata> {
        let source = {
            let map = self.read();
            let e = map
                .get(name)
                .ok_or_else(|| Error::not_found("plugin", name))?;
            e.source.clone().ok_or_else(|| {
                Error::invalid(
                    format!("plugin {name}"),
                    "was registered in-process, not discovered: it cannot be reloaded",
                )
            })?
        };
        let loader = self.loader();
        let fresh = loader
            .load(&source)
            .await
            .map_err(|e| e.context(format!("reloading plugin {name} from {}", source.display())))?;
        let md = fresh.metadata();
        if md.name != name {
            return Err(Error::invalid(
                format!("plugin {name} at {}", source.display()),
                format!("now calls itself {:?}; a reload keeps the name", md.name),
            ));
        }
        self.validate(fresh.as_ref())?;
        fresh
            .initialize(&PluginConfig::empty())
            .await
            .map_err(|e| e.context(format!("initializing reloaded plugin {name}")))?;
        let old = {
            let mut map = self.plugins.write().expect("registry lock");
            check_dependencies(&map, &md, Some(name))?;
            // Plugins that depend on this one must still accept its new version.
            for e in map.values() {
                if let Some(d) = e
                    .metadata
                    .dependencies
                    .iter()
                    .find(|d| d.plugin_name == name)
                {
                    if !d.version.matches(&md.version) {
                        return Err(Error::invalid(
                            format!("reloaded plugin {name}"),
                            format!(
                                "version {} breaks {}, which needs {name} {}",
                                md.version, e.metadata.name, d.version
                            ),
                        ));
                    }
                }
            }
            map.insert(
                name.to_owned(),
                Entry {
                    plugin: fresh,
                    metadata: md.clone(),
                    source: Some(source),
                },
            )
        };
        if let Some(old) = old {
            loader.unload(&old.plugin).await?;
        }
        metrics::counter!(metric_names::REGISTRY_RELOADS_TOTAL).increment(1);
        tracing::info!(component = "registry", plugin = %name, version = %md.version, "plugin reloaded");
        Ok(md)
    }

    fn set_loader(&self, loader: Arc<dyn PluginLoader>) -> Result<()> {
        *self.loader.write().expect("registry lock") = loader;
        Ok(())
    }
}
