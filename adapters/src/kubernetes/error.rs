//! Mapping kube's errors onto ire-core's classified [`Error`].

use ire_core::{Error, ErrorClass};

/// What was being done, for error messages: `kind` and `name` of the object.
pub(crate) struct Target<'a> {
    pub kind: &'a str,
    pub name: &'a str,
}

/// Classifies a kube error: API statuses by their code, transport failures as unavailable.
pub(crate) fn from_kube(err: kube::Error, target: Target<'_>) -> Error {
    match err {
        kube::Error::Api(status) => {
            let message = format!("{} ({})", status.message, status.reason);
            match status.code {
                404 => Error::not_found(target.kind, target.name),
                409 if status.reason == "AlreadyExists" => Error::Conflict {
                    message: format!("{} {:?} already exists", target.kind, target.name),
                },
                409 => Error::Conflict { message },
                401 | 403 => Error::Unauthorized {
                    principal: "the adapter's kubeconfig user".into(),
                    action: format!(
                        "act on {} {:?}: {}",
                        target.kind, target.name, status.message
                    ),
                },
                400 | 415 | 422 => {
                    Error::invalid(format!("{} {:?}", target.kind, target.name), message)
                }
                410 => Error::other(
                    ErrorClass::Retryable,
                    format!("resource version expired: {message}"),
                    None,
                ),
                429 => Error::Overloaded {
                    message: format!("API server throttled the request: {message}"),
                },
                c if c >= 500 => Error::unavailable(
                    format!("API server error on {} {:?}", target.kind, target.name),
                    std::io::Error::other(message),
                ),
                _ => Error::other(
                    ErrorClass::Fatal,
                    format!(
                        "API server refused {} {:?}: {message}",
                        target.kind, target.name
                    ),
                    None,
                ),
            }
        }
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)) => {
            Error::unavailable("Kubernetes API server", e)
        }
        e => Error::other(
            ErrorClass::Fatal,
            format!("kube client error on {} {:?}", target.kind, target.name),
            Some(Box::new(e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("m", reason).with_code(code).boxed())
    }

    #[test]
    fn statuses_are_classified() {
        let t = || Target {
            kind: "pod",
            name: "web-0",
        };
        assert!(matches!(
            from_kube(api(404, "NotFound"), t()),
            Error::NotFound { .. }
        ));
        assert!(from_kube(api(409, "Conflict"), t()).is_retryable());
        assert!(from_kube(api(422, "Invalid"), t()).is_fatal());
        assert!(from_kube(api(503, "ServiceUnavailable"), t()).is_retryable());
        assert!(from_kube(api(429, "TooManyRequests"), t()).is_retryable());
        assert!(from_kube(api(403, "Forbidden"), t()).is_fatal());
    }
}
