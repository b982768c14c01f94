//! Every failure of the plugin, worded to say what to do about it. `main` prints them as
//! `error: ...` and exits 1.

/// What the plugin was doing when the API answered with an error: the verb and resource kubectl
/// would name, and the object when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub verb: &'static str,
    pub resource: &'static str,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// The plural.group of the resources the plugin touches, as RBAC rules and kubectl name them.
pub mod resource {
    pub const QWORKERS: &str = "qworkers.quickube.com";
    pub const QWORKERS_STATUS: &str = "qworkers.quickube.com/status";
    pub const PODS: &str = "pods";
    pub const REVISIONS: &str = "controllerrevisions.apps";
}

impl Action {
    pub fn new(verb: &'static str, resource: &'static str) -> Self {
        Action {
            verb,
            resource,
            name: None,
            namespace: None,
        }
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// `None` means every namespace.
    pub fn in_namespace(mut self, namespace: Option<&str>) -> Self {
        self.namespace = namespace.map(str::to_owned);
        self
    }

    fn scope(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "at the cluster scope (all namespaces)".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the QWorker CRD is not installed in this cluster: run install.sh (or `kubectl apply --server-side -f crds/qworker.yaml`)")]
    CrdMissing,

    #[error("{resource} \"{name}\" not found in namespace {namespace}")]
    NotFound {
        resource: &'static str,
        name: String,
        namespace: String,
    },

    #[error("forbidden: you may not {verb} {resource} {scope}; ask a cluster admin for an RBAC rule allowing \"{verb}\" on {resource} ({message})")]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        scope: String,
        message: String,
    },

    #[error("unauthorized: the cluster refused your credentials while trying to {verb} {resource}; check --context and --kubeconfig, or log in again ({message})")]
    Unauthorized {
        verb: &'static str,
        resource: &'static str,
        message: String,
    },

    #[error("cannot {verb} {resource} {scope}: {cause}")]
    Api {
        verb: &'static str,
        resource: &'static str,
        scope: String,
        /// The cause in words (the apiserver's message, or what to check when it cannot be reached).
        cause: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("cannot load the kubeconfig: {0}; check --kubeconfig, $KUBECONFIG and --context")]
    Kubeconfig(#[source] Box<kube::config::KubeconfigError>),

    #[error("cannot set up the Kubernetes client: {0}")]
    Client(#[source] Box<kube::Error>),

    #[error("qworker \"{name}\" has no revision {revision} in its history (see `kubectl qworker rollout history {name}`)")]
    RevisionNotFound { name: String, revision: i64 },

    #[error("qworker \"{name}\" has no previous revision to roll back to (see `kubectl qworker rollout history {name}`)")]
    NoPreviousRevision { name: String },

    #[error("revision {revision} of qworker \"{name}\" cannot be read: {reason}")]
    BadRevision {
        name: String,
        revision: i64,
        reason: String,
    },

    #[error("qworker \"{name}\" has an invalid spec, so it cannot roll out: {message}")]
    InvalidSpec { name: String, message: String },

    #[error("qworker \"{name}\" was deleted while waiting for its rollout")]
    Deleted { name: String },

    #[error(
        "timed out after {timeout} waiting for qworker \"{name}\" to roll out; last state: {last}"
    )]
    Timeout {
        name: String,
        timeout: String,
        last: String,
    },

    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),

    #[error("cannot encode the output: {0}")]
    Encode(String),

    #[error(transparent)]
    Timeline(#[from] crate::timeline::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Turns a kube error into one that names what was being done and what to do next.
    pub fn from_kube(action: &Action, err: kube::Error) -> Error {
        let other = |err: kube::Error| Error::Api {
            verb: action.verb,
            resource: action.resource,
            scope: action.scope(),
            cause: describe(&err),
            source: Box::new(err),
        };
        let kube::Error::Api(status) = &err else {
            return other(err);
        };
        let message = status.message.clone();
        match status.code {
            404 => {
                // A missing object names itself in `details`; a missing resource type (no CRD) does not.
                let names_object = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
                if action.resource.starts_with(resource::QWORKERS) && !names_object {
                    Error::CrdMissing
                } else if let Some(name) = &action.name {
                    Error::NotFound {
                        resource: action.resource,
                        name: name.clone(),
                        namespace: action.namespace.clone().unwrap_or_default(),
                    }
                } else {
                    other(err)
                }
            }
            403 => Error::Forbidden {
                verb: action.verb,
                resource: action.resource,
                scope: action.scope(),
                message,
            },
            401 => Error::Unauthorized {
                verb: action.verb,
                resource: action.resource,
                message,
            },
            _ => other(err),
        }
    }
}

/// The cause of a kube error in words: the apiserver's own message, or a hint when it is unreachable.
fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} (HTTP {})", status.message, status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            // The useful part ("Connection refused", a TLS problem) is at the end of the chain.
            let mut root: &dyn std::error::Error = err;
            while let Some(next) = root.source() {
                root = next;
            }
            format!("{err} ({root}); is the cluster reachable? Check --context and --kubeconfig")
        }
        other => other.to_string(),
    }
}

/// `result.ctx(&action)?`: maps the kube error with [`Error::from_kube`].
pub trait Context<T> {
    fn ctx(self, action: &Action) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, kube::Error> {
    fn ctx(self, action: &Action) -> Result<T> {
        self.map_err(|e| Error::from_kube(action, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    /// A status as kube-client makes it from the body a 1.20 apiserver sends (read with `kubectl -v=9`).
    fn status(code: u16, reason: &str, message: &str, object: Option<&str>) -> kube::Error {
        let details = match object {
            Some(name) => {
                serde_json::json!({"name": name, "group": "quickube.com", "kind": "qworkers"})
            }
            None => serde_json::json!({}),
        };
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details, "code": code,
        });
        kube::Error::Api(Box::new(serde_json::from_value::<Status>(body).unwrap()))
    }

    /// What kube-client makes of a plain-text body, e.g. `404 page not found` for a resource type
    /// the apiserver does not serve.
    fn plain_text(code: u16, text: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure(text, "Failed to parse error data").with_code(code),
        ))
    }

    fn get_qworker() -> Action {
        Action::new("get", resource::QWORKERS)
            .named("mail")
            .in_namespace(Some("team-a"))
    }

    #[test]
    fn a_404_without_an_object_means_the_crd_is_missing() {
        let err = Error::from_kube(&get_qworker(), plain_text(404, "404 page not found"));
        assert!(matches!(err, Error::CrdMissing));
        // The whole API group missing: a Status without details.
        let err = Error::from_kube(
            &get_qworker(),
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        );
        assert!(matches!(err, Error::CrdMissing));
        assert_eq!(
            err.to_string(),
            "the QWorker CRD is not installed in this cluster: run install.sh (or `kubectl apply --server-side -f crds/qworker.yaml`)"
        );
        let list = Action::new("list", resource::QWORKERS).in_namespace(None);
        assert!(matches!(
            Error::from_kube(
                &list,
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    None
                )
            ),
            Error::CrdMissing
        ));
    }

    #[test]
    fn a_404_naming_the_object_means_not_found() {
        let err = Error::from_kube(
            &get_qworker(),
            status(
                404,
                "NotFound",
                "qworkers.quickube.com \"mail\" not found",
                Some("mail"),
            ),
        );
        assert_eq!(
            err.to_string(),
            "qworkers.quickube.com \"mail\" not found in namespace team-a"
        );
    }

    #[test]
    fn forbidden_names_verb_resource_and_scope() {
        let err = Error::from_kube(
            &Action::new("patch", resource::QWORKERS).named("mail").in_namespace(Some("team-a")),
            status(403, "Forbidden", "qworkers.quickube.com \"mail\" is forbidden: User \"bob\" cannot patch resource \"qworkers\"", Some("mail")),
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "forbidden: you may not patch qworkers.quickube.com in namespace team-a;"
            ),
            "{text}"
        );
        assert!(text.contains("User \"bob\" cannot patch"), "{text}");

        let all = Error::from_kube(
            &Action::new("list", resource::PODS).in_namespace(None),
            status(403, "Forbidden", "pods is forbidden", None),
        );
        assert!(
            all.to_string()
                .contains("list pods at the cluster scope (all namespaces)"),
            "{all}"
        );
    }

    #[test]
    fn unauthorized_and_other_errors_keep_the_cause() {
        let err = Error::from_kube(
            &get_qworker(),
            status(401, "Unauthorized", "Unauthorized", None),
        );
        assert!(err.to_string().starts_with("unauthorized: the cluster refused your credentials while trying to get qworkers.quickube.com"));
        let err = Error::from_kube(
            &get_qworker(),
            status(500, "InternalError", "etcd is down", None),
        );
        assert!(
            err.to_string()
                .starts_with("cannot get qworkers.quickube.com in namespace team-a: "),
            "{err}"
        );
        assert!(err.to_string().contains("etcd is down"), "{err}");
        // A 404 on pods (no object named) stays a plain API error, never "CRD missing".
        let err = Error::from_kube(
            &Action::new("list", resource::PODS).in_namespace(Some("x")),
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        );
        assert!(matches!(err, Error::Api { .. }));
    }
}
