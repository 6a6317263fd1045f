//! Mapping Docker's errors onto ire-core's classified [`Error`].

use ire_core::{Error, ErrorClass};

/// Turns a bollard error from an operation on `what` (a container id, an image) into a
/// classified ire error: 404 is not-found, 409 a conflict (not running, name in use), a
/// refused connection or a timeout is retryable, and everything else keeps Docker's message.
pub(crate) fn from_bollard(err: bollard::errors::Error, kind: &str, what: &str) -> Error {
    use bollard::errors::Error as B;
    match err {
        B::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => Error::not_found(kind, what),
            409 => Error::Conflict {
                message: format!("{kind} {what}: {message}"),
            },
            400 => Error::invalid(format!("{kind} {what}"), message),
            500..=599 => Error::other(
                ErrorClass::Retryable,
                format!("docker daemon error {status_code} on {kind} {what}: {message}"),
                None,
            ),
            _ => Error::other(
                ErrorClass::Fatal,
                format!("docker answered {status_code} on {kind} {what}: {message}"),
                None,
            ),
        },
        B::RequestTimeoutError => Error::Timeout {
            operation: format!("docker request on {kind} {what}"),
            after: std::time::Duration::ZERO,
        },
        e @ (B::SocketNotFoundError(_)
        | B::HyperResponseError { .. }
        | B::HyperLegacyError { .. }
        | B::IOError { .. }) => Error::unavailable(format!("docker daemon (on {kind} {what})"), e),
        other => Error::other(
            ErrorClass::Fatal,
            format!("docker call on {kind} {what} failed"),
            Some(Box::new(other)),
        ),
    }
}

/// True when Docker answered 304 Not Modified: the container already was in the asked state.
pub(crate) fn is_not_modified(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}
