//! The apply → Events → status layer against a mock API server (as kube-rs's controller-rs
//! fixtures do): the exact requests a reconcile makes, and what it reports when a write fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::Client;
use qscaler_crds::hash::pod_spec_hash;
use qscaler_crds::names::DrainReason;
use qscaler_crds::{QWorker, QWorkerStatus, ScalerConfig};
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::decide::Decision;
use super::{act, inputs, Act};
use crate::context::{Context, Settings};
use crate::crash::BackoffSettings;
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::planning::{ObservedPod, Phase, Plan};
use crate::pod_index::PodIndex;
use crate::triggers::Triggers;

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn context(client: Client) -> Context {
    let (qworkers, _) = reflector::store::<QWorker>();
    let (scalers, _) = reflector::store::<ScalerConfig>();
    let (qworker, _) = mpsc::unbounded();
    let (scaler, _) = mpsc::unbounded();
    let s = Duration::from_secs(1);
    Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "qscaler-operator".into(),
                instance: None,
            },
        ),
        client,
        metrics: Arc::new(Metrics::default()),
        settings: Settings {
            poll_interval: s,
            stabilization: s,
            backoff: BackoffSettings {
                base: s,
                max: s,
                healthy_after: s,
            },
            expectation_timeout: s,
            health_interval: s,
            broker_timeout: s,
            reading_max_age: s,
        },
        pods: Arc::new(PodIndex::default()),
        caches: tokio::sync::watch::channel(true).1,
        qworkers,
        scalers,
        memory: Default::default(),
        readings: Default::default(),
        pollers: Default::default(),
        triggers: Triggers { qworker, scaler },
    }
}

fn qworker(old: &QWorkerStatus) -> QWorker {
    let mut qw: QWorker = serde_json::from_value(json!({
        "apiVersion": "quickube.com/v1alpha1", "kind": "QWorker",
        "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "podSpec": {"containers": [{"name": "c", "image": "i"}]},
            "scaleConfig": {"scalerConfigRef": "s", "queue": "q", "maxReplicas": 3}
        }
    }))
    .unwrap();
    qw.status = Some(old.clone());
    qw
}

fn running(name: &str) -> ObservedPod {
    ObservedPod {
        name: name.into(),
        phase: Phase::Running,
        current: true,
        started: true,
        created: 1,
        ..ObservedPod::default()
    }
}

/// One scale-down from 2 workers to 1: drain `w-old`.
fn scale_down() -> Decision {
    Decision {
        desired: 1,
        plan: Plan {
            drain: vec![("w-old".into(), DrainReason::ScaleDown)],
            ..Plan::default()
        },
        view: vec![running("w-old"), running("w-new")],
        crashing: false,
        crash_event: false,
        new_failures: 0,
        streak: 0,
        backoff_wait: Duration::ZERO,
        next_change: None,
        expectations_pending: false,
        paused: false,
        held: None,
    }
}

fn reply(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// The next request: its method, path and JSON body.
async fn next(api: &mut ApiServer) -> (Method, String, Value, mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), api.next_request())
        .await
        .expect("a request within 10 s")
        .expect("a request, not the end");
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (method, path, body, send)
}

/// Runs [`act`] for [`scale_down`] against `serve`, which answers every request it expects and
/// returns them; then checks nothing else was asked.
async fn run_scale_down<F, Fut>(serve: F) -> super::apply::Applied
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ApiServer> + Send + 'static,
{
    let (service, api) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(api));
    let ctx = context(Client::new(service, "ns"));
    let old = QWorkerStatus {
        observed_generation: Some(1),
        desired_replicas: 1,
        current_replicas: 2,
        ..QWorkerStatus::default()
    };
    let qw = qworker(&old);
    let hash = pod_spec_hash(&qw.spec);
    let decision = scale_down();
    let applied = act(
        &ctx,
        &qw,
        &Act {
            hash: &hash,
            sc: None,
            sizing: &inputs::Sizing {
                peaks: vec![],
                requests: BTreeMap::new(),
            },
            decision: &decision,
            old: &old,
            status: old.clone(),
            depth: None,
            scaler: None,
            now: &Time(k8s_openapi::jiff::Timestamp::now()),
        },
    )
    .await
    .expect("the status write succeeds")
    .applied;
    let mut api = server.await.unwrap();
    // Every client (and the recorder's) is the context's: dropping it ends the request stream.
    let Context {
        client,
        recorder,
        memory,
        ..
    } = ctx;
    drop((client, recorder));
    let rest = tokio::time::timeout(Duration::from_secs(10), api.next_request())
        .await
        .expect("the request stream ends");
    assert!(rest.is_none(), "no request beyond those expected");
    let pending = memory.with(&ObjectKey::new("ns", "w"), |m| !m.expectations.is_empty());
    assert_eq!(
        pending,
        !applied.drained.is_empty(),
        "an expectation exactly for a drain that was done"
    );
    applied
}

const POD: &str = "/api/v1/namespaces/ns/pods/w-old";
const STATUS: &str = "/apis/quickube.com/v1alpha1/namespaces/ns/qworkers/w/status";

/// The QWorker as the API server returns it after a status patch.
fn stored(patch: &Value) -> Value {
    let mut qw = serde_json::to_value(qworker(&QWorkerStatus::default())).unwrap();
    qw["status"] = patch["status"].clone();
    qw
}

fn status_of(body: &Value) -> &Value {
    &body["status"]
}

#[tokio::test]
async fn a_drain_whose_patch_fails_is_not_announced_nor_counted() {
    let applied = run_scale_down(|mut api| async move {
        let (m, path, body, send) = next(&mut api).await;
        assert_eq!((m, path.as_str()), (Method::PATCH, POD));
        assert_eq!(
            body["metadata"]["annotations"]["quickube.com/drain"],
            "scale-down"
        );
        send.send_response(reply(
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "etcd timeout", "reason": "InternalError", "code": 500}),
        ));
        // No Draining Event: the next request is the status.
        let (m, path, body, send) = next(&mut api).await;
        assert_eq!((m, path.as_str()), (Method::PATCH, STATUS), "{body}");
        let s = status_of(&body);
        assert_eq!(s["drainingReplicas"], 0, "{s}");
        assert_eq!(s["currentReplicas"], 2);
        assert_eq!(s["desiredReplicas"], 1);
        send.send_response(reply(200, stored(&body)));
        api
    })
    .await;
    assert!(applied.drained.is_empty());
    assert_eq!(applied.errors.len(), 1);
}

#[tokio::test]
async fn a_drain_that_succeeds_is_announced_and_counted() {
    let applied = run_scale_down(|mut api| async move {
        let (m, path, mut body, send) = next(&mut api).await;
        assert_eq!((m, path.as_str()), (Method::PATCH, POD));
        body["metadata"]["name"] = json!("w-old");
        send.send_response(reply(200, body));
        let (m, path, body, send) = next(&mut api).await;
        assert_eq!(m, Method::POST);
        assert!(path.ends_with("/namespaces/ns/events"), "{path}");
        assert_eq!(body["reason"], "Draining", "{body}");
        assert!(body["note"].as_str().unwrap_or_default().contains("w-old"));
        send.send_response(reply(201, body));
        let (m, path, body, send) = next(&mut api).await;
        assert_eq!((m, path.as_str()), (Method::PATCH, STATUS), "{body}");
        assert_eq!(status_of(&body)["drainingReplicas"], 1, "{body}");
        send.send_response(reply(200, stored(&body)));
        api
    })
    .await;
    assert_eq!(applied.drained.len(), 1);
    assert!(applied.errors.is_empty());
}
