//! The default role-based authorization provider (viewer, operator, admin), configured from
//! a YAML file that maps bearer tokens to principals, principals to roles, and roles to the
//! verbs they may perform.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use ire_core::{Action, AuthorizationProvider, Error, Resource, Result};
use serde::Deserialize;

/// A role: the verbs it allows. Each entry is `verb`, `verb:object` or `verb:prefix*`;
/// `*` allows everything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Role(pub Vec<String>);

impl Role {
    fn allows(&self, action: &Action) -> bool {
        self.0.iter().any(|rule| rule_allows(rule, action))
    }
}

fn rule_allows(rule: &str, action: &Action) -> bool {
    if rule == "*" {
        return true;
    }
    let (verb, object) = match rule.split_once(':') {
        Some((v, o)) => (v, Some(o)),
        None => (rule, None),
    };
    if verb != "*" && verb != action.verb {
        return false;
    }
    match object {
        None | Some("*") => true,
        Some(o) => match o.strip_suffix('*') {
            Some(prefix) => action.resource.starts_with(prefix),
            None => o == action.resource,
        },
    }
}

/// The file's content.
///
/// ```yaml
/// roles:                       # optional: overrides or adds to the built-in roles
///   chaos-reader: ["get", "list", "execute:wait-*"]
/// principals:
///   alice: [admin]
///   ci: [operator]
/// tokens:                      # bearer token -> principal (the HTTP API resolves these)
///   "s3cr3t-token-for-ci": ci
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacConfig {
    /// Roles by name; `viewer`, `operator` and `admin` exist unless redefined here.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// The roles of each principal.
    #[serde(default)]
    pub principals: BTreeMap<String, Vec<String>>,
    /// Bearer tokens and the principal each one authenticates.
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for RbacConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are credentials: never print them.
        f.debug_struct("RbacConfig")
            .field("roles", &self.roles)
            .field("principals", &self.principals)
            .field("tokens", &format_args!("[{} REDACTED]", self.tokens.len()))
            .finish()
    }
}

/// The built-in roles.
pub fn builtin_roles() -> BTreeMap<String, Role> {
    let role = |verbs: &[&str]| Role(verbs.iter().map(|v| (*v).to_owned()).collect());
    BTreeMap::from([
        ("viewer".to_owned(), role(&["get", "list"])),
        (
            "operator".to_owned(),
            role(&[
                "get", "list", "execute", "cancel", "create", "update", "delete",
            ]),
        ),
        ("admin".to_owned(), role(&["*"])),
    ])
}

impl RbacConfig {
    /// Parses the YAML text; errors name the line and field.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self> {
        let config: RbacConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            Error::invalid(format!("authorization config {origin}{at}"), e.to_string())
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                format!("authorization config {}", path.display()),
                format!("cannot read: {e}"),
            )
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Checks that every principal's role and every token's principal exist.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let roles = self.effective_roles();
        for (principal, rs) in &self.principals {
            if let Some(r) = rs.iter().find(|r| !roles.contains_key(*r)) {
                return Err(Error::invalid(
                    format!("authorization config {origin} principals.{principal}"),
                    format!(
                        "unknown role {r:?} (known: {})",
                        roles.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        for (i, principal) in self.tokens.values().enumerate() {
            if !self.principals.contains_key(principal) {
                return Err(Error::invalid(
                    format!("authorization config {origin} tokens[{i}]"),
                    format!("names principal {principal:?}, which has no roles"),
                ));
            }
        }
        Ok(())
    }

    fn effective_roles(&self) -> BTreeMap<String, Role> {
        let mut roles = builtin_roles();
        roles.extend(self.roles.clone());
        roles
    }
}

/// Authorizes by role: a principal may perform an action when one of its roles allows it.
/// Unknown principals may do nothing.
#[derive(Debug, Clone)]
pub struct RoleBasedAuthorizer {
    roles: BTreeMap<String, Role>,
    principals: BTreeMap<String, Vec<String>>,
    tokens: Vec<(String, String)>,
}

impl RoleBasedAuthorizer {
    /// An authorizer for a validated config.
    pub fn new(config: RbacConfig) -> Result<Self> {
        config.validate("(in memory)")?;
        Ok(RoleBasedAuthorizer {
            roles: config.effective_roles(),
            principals: config.principals,
            tokens: config.tokens.into_iter().collect(),
        })
    }

    /// An authorizer read from a YAML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::new(RbacConfig::from_file(path)?)
    }

    /// The principal a bearer token authenticates, if any (compared in constant time).
    pub fn principal_for_token(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (t, p) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(p.as_str());
            }
        }
        found
    }

    /// The roles of a principal.
    pub fn roles_of(&self, principal: &str) -> &[String] {
        self.principals
            .get(principal)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// True when the principal may perform the action.
    pub fn allows(&self, principal: &str, action: &Action) -> bool {
        self.roles_of(principal)
            .iter()
            .filter_map(|r| self.roles.get(r))
            .any(|r| r.allows(action))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl AuthorizationProvider for RoleBasedAuthorizer {
    async fn authorize(
        &self,
        principal: &str,
        action: &Action,
        _resource: Option<&Resource>,
    ) -> Result<()> {
        if self.allows(principal, action) {
            Ok(())
        } else {
            Err(Error::Unauthorized {
                principal: principal.to_owned(),
                action: action.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
roles:
  waiter: ["get", "execute:wait-*"]
principals:
  alice: [admin]
  olga: [operator]
  vic: [viewer]
  wes: [waiter]
tokens:
  tok-olga: olga
"#;

    fn authz() -> RoleBasedAuthorizer {
        RoleBasedAuthorizer::new(RbacConfig::from_yaml(CONFIG, "test").unwrap()).unwrap()
    }

    #[test]
    fn builtin_roles_grant_their_verbs_only() {
        let a = authz();
        let exec = Action::new("execute", "kill");
        assert!(a.allows("alice", &exec));
        assert!(a.allows("alice", &Action::new("admin", "kill")));
        assert!(a.allows("olga", &exec));
        assert!(!a.allows("olga", &Action::new("admin", "kill")));
        assert!(!a.allows("vic", &exec));
        assert!(a.allows("vic", &Action::new("list", "plugins")));
        assert!(!a.allows("mallory", &Action::new("get", "plugins")));
    }

    #[test]
    fn object_patterns_restrict_a_verb() {
        let a = authz();
        assert!(a.allows("wes", &Action::new("execute", "wait-healthy")));
        assert!(!a.allows("wes", &Action::new("execute", "kill")));
    }

    #[test]
    fn tokens_resolve_to_principals() {
        let a = authz();
        assert_eq!(a.principal_for_token("tok-olga"), Some("olga"));
        assert_eq!(a.principal_for_token("tok-olgb"), None);
    }

    #[test]
    fn unknown_role_is_an_error_naming_the_principal() {
        let e = RbacConfig::from_yaml("principals:\n  bob: [root]\n", "f.yaml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("principals.bob") && msg.contains("root"),
            "{msg}"
        );
    }

    #[test]
    fn typo_in_a_field_is_an_error_with_its_line() {
        let e = RbacConfig::from_yaml("principals: {}\nrolez: {}\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn debug_never_prints_tokens() {
        let c = RbacConfig::from_yaml(CONFIG, "test").unwrap();
        assert!(!format!("{c:?}").contains("tok-olga"));
    }
}
