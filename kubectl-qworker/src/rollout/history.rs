//! `rollout history NAME [--revision N]`: the recorded revisions, or one revision's template.

use std::io::Write;

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::ListParams;
use kube::Api;
use qscaler_crds::names::LABEL_QWORKER;
use qscaler_crds::QWorker;

use super::get_qworker;
use crate::cli::HistoryArgs;
use crate::client::Ctx;
use crate::error::{resource, Action, Context, Error, Result};
use crate::output::write_structured;
use crate::revisions::{history, write_history, write_revision, Revision};

/// The QWorker and its revisions, oldest first.
pub(crate) async fn collect(ctx: &Ctx, name: &str) -> Result<(QWorker, Vec<Revision>)> {
    let qw = get_qworker(ctx, name).await?;
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let action = Action::new("list", resource::REVISIONS).in_namespace(Some(&ctx.namespace));
    let list = api
        .list(&ListParams::default().labels(&format!("{LABEL_QWORKER}={name}")))
        .await
        .ctx(&action)?;
    let rows = history(&qw, &list.items);
    Ok((qw, rows))
}

pub async fn run(ctx: &Ctx, args: &HistoryArgs, out: &mut impl Write) -> Result<()> {
    let (_, rows) = collect(ctx, &args.name).await?;
    let chosen: Vec<Revision> = match args.revision {
        None | Some(0) => rows,
        Some(n) => vec![rows.into_iter().find(|r| r.revision == n).ok_or_else(|| {
            Error::RevisionNotFound {
                name: args.name.clone(),
                revision: n,
            }
        })?],
    };
    match (args.output, args.revision.filter(|n| *n != 0)) {
        (Some(format), Some(_)) => write_structured(out, format, &chosen[0]),
        (Some(format), None) => write_structured(out, format, &chosen),
        (None, Some(_)) => write_revision(out, &args.name, &chosen[0]),
        (None, None) => Ok(write_history(out, &args.name, &chosen)?),
    }
}
