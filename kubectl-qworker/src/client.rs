//! The client, from the same sources kubectl reads: `--kubeconfig` (else `$KUBECONFIG`, else
//! `~/.kube/config`, else the in-cluster service account) and `--context`.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::KubeArgs;
use crate::error::{Error, Result};

/// What every subcommand needs: a client and the namespace it works in.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

/// Loads the configuration the way kubectl does and builds a client.
pub async fn connect(args: &KubeArgs) -> Result<Ctx> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(Box::new(e)))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Kubeconfig(Box::new(e)))?
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Kubeconfig(Box::new(e)))?,
        None => match Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            Err(kubeconfig_err) => {
                Config::incluster().map_err(|_| Error::Kubeconfig(Box::new(kubeconfig_err)))?
            }
        },
    };
    let namespace = namespace(args.namespace.as_deref(), &config.default_namespace);
    let client = Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))?;
    Ok(Ctx { client, namespace })
}

/// The namespace flag wins over the context's namespace.
fn namespace(flag: Option<&str>, context_default: &str) -> String {
    match flag {
        Some(ns) if !ns.is_empty() => ns.to_owned(),
        _ if !context_default.is_empty() => context_default.to_owned(),
        _ => "default".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_context_then_default() {
        assert_eq!(namespace(Some("a"), "b"), "a");
        assert_eq!(namespace(None, "b"), "b");
        assert_eq!(namespace(Some(""), "b"), "b");
        assert_eq!(namespace(None, ""), "default");
    }
}
