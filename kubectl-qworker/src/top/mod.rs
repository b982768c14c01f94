//! `top [NAME] [-A] [--watch]`: per QWorker the queue and worker counts, per worker pod its revision,
//! state and CPU/memory (now and peak, from the supervisors' usage reports) against requests and
//! limits; with `--watch` ([`watch`]) again every interval.

pub mod render;
pub mod rows;
pub mod watch;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use qscaler_crds::names::LABEL_QWORKER;
use qscaler_crds::QWorker;
use serde::Serialize;

use crate::cli::TopArgs;
use crate::client::Ctx;
use crate::error::{resource, Action, Context, Result};
use crate::output::write_structured;
use render::{write_top, View};
use rows::{qworker_rows, sort, worker_rows, QWorkerRow, WorkerRow};
use watch::Screen;

/// What `-o json|yaml` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Top {
    pub qworkers: Vec<QWorkerRow>,
    pub workers: Vec<WorkerRow>,
}

pub async fn run(ctx: &Ctx, args: &TopArgs, out: &mut impl Write) -> Result<ExitCode> {
    if args.watch {
        // Redrawn in place only where someone watches; a pipe or file gets every look in turn.
        let screen = match std::io::stdout().is_terminal() {
            true => Screen::Terminal,
            false => Screen::Stream,
        };
        return watch::run(ctx, args, screen, out).await;
    }
    match look(ctx, args).await? {
        Some(text) => out.write_all(text.as_bytes())?,
        None => eprintln!("{}", no_resources(scope(ctx, args))),
    }
    Ok(ExitCode::SUCCESS)
}

/// The namespace looked at; `None` for every namespace (`-A`).
fn scope<'a>(ctx: &'a Ctx, args: &TopArgs) -> Option<&'a str> {
    (!args.all_namespaces).then_some(ctx.namespace.as_str())
}

/// What kubectl says when there is nothing to list.
pub fn no_resources(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found".to_owned(),
    }
}

/// One look at the cluster, as `top` prints it; `None` when there is no QWorker to show (tables
/// only: `-o json|yaml` prints the empty lists).
pub async fn look(ctx: &Ctx, args: &TopArgs) -> Result<Option<String>> {
    let (qworkers, pods) = collect(ctx, args, scope(ctx, args)).await?;
    if qworkers.is_empty() && args.output.is_none() {
        return Ok(None);
    }
    let mut workers = worker_rows(&qworkers, &pods, args.containers);
    sort(&mut workers, args.sort_by);
    let top = Top {
        qworkers: qworker_rows(&qworkers),
        workers,
    };
    let mut out = Vec::new();
    match args.output {
        Some(format) => write_structured(&mut out, format, &top)?,
        None => {
            let view = View {
                all_namespaces: args.all_namespaces,
                single: args.name.is_some(),
                containers: args.containers,
                headers: !args.no_headers,
            };
            write_top(&mut out, &top.qworkers, &top.workers, view)?;
        }
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

/// The QWorkers asked for and the pods that carry a QWorker label in the same scope.
async fn collect(
    ctx: &Ctx,
    args: &TopArgs,
    namespace: Option<&str>,
) -> Result<(Vec<QWorker>, Vec<Pod>)> {
    let (qw_api, pod_api): (Api<QWorker>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let pod_selector = match &args.name {
        Some(name) => format!("{LABEL_QWORKER}={name}"),
        None => LABEL_QWORKER.to_owned(),
    };
    let qworkers = match &args.name {
        Some(name) => {
            let action = Action::new("get", resource::QWORKERS)
                .named(name)
                .in_namespace(namespace);
            vec![qw_api.get(name).await.ctx(&action)?]
        }
        None => {
            let action = Action::new("list", resource::QWORKERS).in_namespace(namespace);
            let mut params = ListParams::default();
            if let Some(selector) = &args.selector {
                params = params.labels(selector);
            }
            let mut list = qw_api.list(&params).await.ctx(&action)?.items;
            list.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            list
        }
    };
    if qworkers.is_empty() {
        return Ok((qworkers, Vec::new()));
    }
    let action = Action::new("list", resource::PODS).in_namespace(namespace);
    let pods = pod_api
        .list(&ListParams::default().labels(&pod_selector))
        .await
        .ctx(&action)?
        .items;
    Ok((qworkers, pods))
}
