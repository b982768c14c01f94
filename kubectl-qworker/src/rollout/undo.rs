//! `rollout undo NAME [--to-revision N]`: puts a recorded template back into the spec; the operator
//! then rolls out to it (and renumbers that revision as the newest, as Deployments do).

use std::io::Write;

use kube::api::Patch;

use super::history::collect;
use super::{patch_params, qworkers};
use crate::cli::UndoArgs;
use crate::client::Ctx;
use crate::error::{resource, Action, Context, Error, Result};
use crate::revisions::{select_undo, undo_patch, Undo};

pub async fn run(ctx: &Ctx, args: &UndoArgs, out: &mut impl Write) -> Result<()> {
    let name = &args.name;
    let (qw, history) = collect(ctx, name).await?;
    let target = match select_undo(name, &history, args.to_revision)? {
        Undo::AlreadyCurrent(n) => {
            // As kubectl: not an error, the spec already is what was asked for.
            writeln!(out, "qworker.quickube.com/{name} skipped rollback (current template already matches revision {n})")?;
            return Ok(());
        }
        Undo::RollBack(revision) => revision,
    };
    let ops = undo_patch(name, &qw, target)?;
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| Error::Encode(e.to_string()))?;
    let action = Action::new("patch", resource::QWORKERS)
        .named(name)
        .in_namespace(Some(&ctx.namespace));
    qworkers(ctx)
        .patch(name, &patch_params(), &Patch::Json::<()>(patch))
        .await
        .ctx(&action)?;
    writeln!(
        out,
        "qworker.quickube.com/{name} rolled back to revision {}",
        target.revision
    )?;
    Ok(())
}
