//! ire-core's error type and its classification (retryable, fatal, ignorable).
//!
//! Every extension trait returns [`Error`]. Implementations wrap their own errors as a
//! `source` so that context survives through [`std::error::Error::source`], and every error
//! answers [`Error::class`], which is what the engine's retry strategy looks at.

use std::time::Duration;

/// A boxed error from an implementation (an adapter's client, an I/O call, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with ire-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the engine treats an error (the seed's Error Classification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// A temporary failure that may succeed when tried again (timeouts, unavailability).
    Retryable,
    /// A permanent failure: retrying cannot help (not found, denied, invalid, unsupported).
    Fatal,
    /// An expected condition that is not a failure (already in the desired state).
    Ignorable,
}

/// The error of every ire-core extension point.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What kind of thing was looked up (resource, plugin, execution, ...).
        kind: String,
        /// Its name or id.
        name: String,
    },
    /// Input (a config, a filter, a request) is invalid; `field` says where.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field or path that is wrong.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The implementation does not offer this operation.
    #[error("{operation} is not supported by {by}")]
    Unsupported {
        /// The operation that was asked for.
        operation: String,
        /// Who refused it (an adapter, a plugin).
        by: String,
    },
    /// The principal may not perform the action.
    #[error("{principal:?} is not allowed to {action}")]
    Unauthorized {
        /// Who asked.
        principal: String,
        /// What they asked to do.
        action: String,
    },
    /// The operation did not finish in time.
    #[error("{operation} timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        /// The operation that timed out.
        operation: String,
        /// How long it was given.
        after: Duration,
    },
    /// A dependency (an API server, a daemon, a peer) cannot be reached right now.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Someone else holds what was asked for (a lock, a resource in use); try later.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// Nothing to do: the target is already in the desired state.
    #[error("already done: {message}")]
    AlreadyDone {
        /// What was already done.
        message: String,
    },
    /// The operation was canceled by its caller.
    #[error("canceled: {message}")]
    Canceled {
        /// What was canceled.
        message: String,
    },
    /// A back-pressure rejection: a queue or pool is full.
    #[error("overloaded: {message}")]
    Overloaded {
        /// What is full.
        message: String,
    },
    /// Any other failure of an implementation, with its class stated by the implementation.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// How to treat it.
        class: ErrorClass,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// An error with context added on the way up; the class is the inner error's.
    #[error("{context}")]
    Context {
        /// What was being done.
        context: String,
        /// The error it failed with.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// How the engine should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotFound { .. }
            | Error::Invalid { .. }
            | Error::Unsupported { .. }
            | Error::Unauthorized { .. }
            | Error::Canceled { .. } => ErrorClass::Fatal,
            Error::Timeout { .. }
            | Error::Unavailable { .. }
            | Error::Conflict { .. }
            | Error::Overloaded { .. } => ErrorClass::Retryable,
            Error::AlreadyDone { .. } => ErrorClass::Ignorable,
            Error::Other { class, .. } => *class,
            Error::Context { source, .. } => source.class(),
        }
    }

    /// True when trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// True when trying again cannot succeed.
    pub fn is_fatal(&self) -> bool {
        self.class() == ErrorClass::Fatal
    }

    /// True when the error is an expected condition, not a failure.
    pub fn is_ignorable(&self) -> bool {
        self.class() == ErrorClass::Ignorable
    }

    /// The innermost ire error, below every [`Error::Context`] layer.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            other => other,
        }
    }

    /// Wraps this error with what was being done when it happened.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// A [`Error::NotFound`].
    pub fn not_found(kind: impl Into<String>, name: impl Into<String>) -> Error {
        Error::NotFound {
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// An [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(operation: impl Into<String>, by: impl Into<String>) -> Error {
        Error::Unsupported {
            operation: operation.into(),
            by: by.into(),
        }
    }

    /// An [`Error::Unavailable`] with its cause.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Other`] with the given class and cause.
    pub fn other(class: ErrorClass, message: impl Into<String>, source: Option<BoxError>) -> Error {
        Error::Other {
            message: message.into(),
            class,
            source,
        }
    }

    /// The full message, with every source in the chain, joined by `: `.
    pub fn chain_message(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Adds context to a `Result`'s error, keeping its class and source chain.
pub trait ResultExt<T> {
    /// Wraps the error with what was being done.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Like [`ResultExt::context`], computing the context only on error.
    fn with_context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.context(context))
    }

    fn with_context<C: Into<String>>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_class_and_chain() {
        let inner = Error::unavailable("container daemon", std::io::Error::other("refused"));
        let e = inner
            .context("listing resources")
            .context("resolving target cache");
        assert!(e.is_retryable());
        assert_eq!(
            e.chain_message(),
            "resolving target cache: listing resources: unavailable: container daemon: refused"
        );
        assert!(matches!(e.root(), Error::Unavailable { .. }));
    }

    #[test]
    fn classification_follows_the_seed() {
        assert!(Error::not_found("resource", "x").is_fatal());
        assert!(Error::invalid("steps[0].plugin", "empty").is_fatal());
        assert!(Error::unsupported("exec", "fake").is_fatal());
        assert!(Error::Unauthorized {
            principal: "p".into(),
            action: "a".into()
        }
        .is_fatal());
        assert!(Error::Timeout {
            operation: "o".into(),
            after: Duration::from_secs(1)
        }
        .is_retryable());
        assert!(Error::Conflict {
            message: "held".into()
        }
        .is_retryable());
        assert!(Error::Overloaded {
            message: "queue".into()
        }
        .is_retryable());
        assert!(Error::AlreadyDone {
            message: "stopped".into()
        }
        .is_ignorable());
        assert!(Error::other(ErrorClass::Ignorable, "x", None).is_ignorable());
    }
}
