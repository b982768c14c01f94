//! Kubernetes Events about pods, as a kubelet posts them (`kubectl describe pod` shows them):
//! Started, Killing, BackOff, Failed. Best effort: posted in the background, failures only logged.

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

/// Posts events as `qscaler-kubelet` on behalf of a node.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "qscaler-kubelet".into(),
            instance: Some(node.to_string()),
        };
        Events {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Post an event about `pod` (a container's field path goes in the note).
    pub fn post(&self, pod: &Pod, warning: bool, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = pod.object_ref(&());
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "posting an event");
            }
        });
    }
}
