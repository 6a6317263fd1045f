//! Plugin config schemas: generated from a config type with schemars, checked with the
//! jsonschema crate, so a campaign's typo is refused before anything runs, with the field.
//!
//! In-process plugins describe their config with a type (`#[derive(Deserialize, JsonSchema)]`)
//! and hold a [`TypedConfig`] of it; out-of-process plugins write the schema in their
//! manifest. Either way the schema is [`crate::PluginMetadata::config_schema`], and
//! [`check_config`] (the default [`crate::Plugin::validate_config`]) checks a step's config
//! against it.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::plugin::PluginConfig;

/// The JSON schema of a config type.
pub fn schema_of<T: JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(T).to_value()
}

/// A compiled config schema.
pub struct ConfigSchema {
    schema: serde_json::Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ConfigSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSchema")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// `/a/0/b` as `a[0].b`; the top level as `$`.
fn field_path(pointer: &str) -> String {
    if pointer.is_empty() || pointer == "/" {
        return "$".to_owned();
    }
    let mut out = String::new();
    for seg in pointer.trim_start_matches('/').split('/') {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

impl ConfigSchema {
    /// Compiles a schema; a schema that is not valid JSON schema is an error naming the plugin.
    /// `null` (no schema) accepts every config.
    pub fn compile(plugin: &str, schema: &serde_json::Value) -> Result<Self> {
        let effective = if schema.is_null() {
            serde_json::Value::Bool(true)
        } else {
            schema.clone()
        };
        let validator = jsonschema::validator_for(&effective).map_err(|e| {
            Error::invalid(
                format!("config schema of plugin {plugin}"),
                format!("not a valid JSON schema: {e}"),
            )
        })?;
        Ok(ConfigSchema {
            schema: schema.clone(),
            validator,
        })
    }

    /// The schema of a config type.
    pub fn of<T: JsonSchema>() -> Self {
        let schema = schema_of::<T>();
        let validator =
            jsonschema::validator_for(&schema).expect("schemars generates valid JSON schemas");
        ConfigSchema { schema, validator }
    }

    /// The schema as JSON.
    pub fn schema(&self) -> &serde_json::Value {
        &self.schema
    }

    /// Checks a config; the error names every field that is wrong (`null` is an empty
    /// config).
    pub fn check(&self, plugin: &str, config: &serde_json::Value) -> Result<()> {
        let empty = serde_json::Value::Object(Default::default());
        let config = if config.is_null() { &empty } else { config };
        let problems: Vec<(String, String)> = self
            .validator
            .iter_errors(config)
            .map(|e| (field_path(e.instance_path().as_str()), e.to_string()))
            .collect();
        match problems.as_slice() {
            [] => Ok(()),
            [(field, message)] => Err(Error::invalid(
                format!("config of plugin {plugin} field {field}"),
                message.clone(),
            )),
            many => Err(Error::invalid(
                format!("config of plugin {plugin}"),
                many.iter()
                    .map(|(f, m)| format!("field {f}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

/// Checks `config` against `schema` (compiled once for this call): the default
/// [`crate::Plugin::validate_config`], and what out-of-process plugins use.
pub fn check_config(
    plugin: &str,
    schema: &serde_json::Value,
    config: &serde_json::Value,
) -> Result<()> {
    ConfigSchema::compile(plugin, schema)?.check(plugin, config)
}

/// A plugin's typed config: its schema, compiled once, and a parse that names the field.
pub struct TypedConfig<T> {
    schema: ConfigSchema,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedConfig<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedConfig")
            .field("schema", &self.schema)
            .finish()
    }
}

impl<T: JsonSchema + DeserializeOwned> Default for TypedConfig<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: JsonSchema + DeserializeOwned> TypedConfig<T> {
    /// The config type's schema, compiled.
    pub fn new() -> Self {
        TypedConfig {
            schema: ConfigSchema::of::<T>(),
            _type: PhantomData,
        }
    }

    /// The schema, for [`crate::PluginMetadata::config_schema`].
    pub fn schema(&self) -> serde_json::Value {
        self.schema.schema().clone()
    }

    /// Checks a config against the schema.
    pub fn check(&self, plugin: &str, config: &PluginConfig) -> Result<()> {
        self.schema.check(plugin, &config.0)
    }

    /// Checks, then parses; a value the schema cannot express (a malformed duration) is
    /// an error naming its field too.
    pub fn parse(&self, plugin: &str, config: &PluginConfig) -> Result<T> {
        self.check(plugin, config)?;
        let value = match &config.0 {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v => v.clone(),
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            Error::invalid(
                format!(
                    "config of plugin {plugin} field {}",
                    field_path(&pointer_of(e.path()))
                ),
                e.inner().to_string(),
            )
        })
    }
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(key),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Sample {
        signal: Option<String>,
        #[serde(default)]
        grace_period: Option<u32>,
        #[serde(default)]
        nested: Option<Inner>,
    }

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u8,
    }

    #[test]
    fn errors_name_the_field() {
        let t = TypedConfig::<Sample>::new();
        let e = t
            .parse("kill", &PluginConfig(json!({"grace-period": "ten"})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field grace-period"), "{e}");
        let e = t
            .parse("kill", &PluginConfig(json!({"nested": {"count": 300}})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field nested"), "{e}");
        let e = t
            .parse("kill", &PluginConfig(json!({"sginal": "x"})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sginal"), "{e}");
        assert_eq!(
            t.parse("kill", &PluginConfig(serde_json::Value::Null))
                .unwrap(),
            Sample {
                signal: None,
                grace_period: None,
                nested: None
            }
        );
    }

    #[test]
    fn hand_written_schemas_are_checked_and_invalid_ones_refused() {
        let schema = json!({"type": "object", "required": ["path"],
            "properties": {"path": {"type": "string"}}, "additionalProperties": false});
        check_config("marker", &schema, &json!({"path": "/tmp/x"})).unwrap();
        let e = check_config("marker", &schema, &json!({"path": 3}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("field path"), "{e}");
        let e = check_config("marker", &schema, &json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("path"), "{e}");
        assert!(ConfigSchema::compile("bad", &json!({"type": 12})).is_err());
        check_config("open", &serde_json::Value::Null, &json!({"any": 1})).unwrap();
    }

    #[test]
    fn field_paths_read_like_config_paths() {
        assert_eq!(field_path(""), "$");
        assert_eq!(field_path("/a/0/b"), "a[0].b");
    }
}
