//! `kubectl qworker rollout ...`: one module per subcommand.

pub mod history;
pub mod restart;
pub mod status;
pub mod undo;

use std::io::Write;
use std::process::ExitCode;

use kube::Api;
use qscaler_crds::QWorker;

use crate::cli::RolloutCommand;
use crate::client::Ctx;
use crate::error::{resource, Action, Context, Result};

/// The field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-qworker";

pub async fn run(ctx: &Ctx, command: RolloutCommand, out: &mut impl Write) -> Result<ExitCode> {
    match command {
        RolloutCommand::Status(args) => status::run(ctx, &args, out).await,
        RolloutCommand::Restart(args) => restart::run(ctx, &args.name, out)
            .await
            .map(|()| ExitCode::SUCCESS),
        RolloutCommand::History(args) => history::run(ctx, &args, out)
            .await
            .map(|()| ExitCode::SUCCESS),
        RolloutCommand::Undo(args) => undo::run(ctx, &args, out).await.map(|()| ExitCode::SUCCESS),
    }
}

/// The QWorkers of the context's namespace.
pub(crate) fn qworkers(ctx: &Ctx) -> Api<QWorker> {
    Api::namespaced(ctx.client.clone(), &ctx.namespace)
}

/// Reads one QWorker, with the errors kubectl users expect (not found, CRD missing, forbidden).
pub(crate) async fn get_qworker(ctx: &Ctx, name: &str) -> Result<QWorker> {
    let action = Action::new("get", resource::QWORKERS)
        .named(name)
        .in_namespace(Some(&ctx.namespace));
    qworkers(ctx).get(name).await.ctx(&action)
}

/// Parameters of every patch: the plugin's field manager.
pub(crate) fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}
