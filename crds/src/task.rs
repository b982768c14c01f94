//! Task-mode settings as qsupervisor reads them, from the pod spec it runs in: the operator needs
//! the same retry limit when it returns the tasks of a pod that died (a task that kills its
//! container is a failure the supervisor cannot count itself).

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::names::env;

/// qsupervisor's `--max-retries` when neither the flag nor `QSCALER_MAX_RETRIES` is given.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// The option qsupervisor reads the limit from.
const FLAG: &str = "--max-retries";

/// Whether `c` runs qsupervisor in task mode (`--task` before `--`, or `QSCALER_TASK` true).
fn task_mode(c: &Container) -> bool {
    options(c).any(|a| a == "--task" || a == "--task=true")
        || env_value(c, env::TASK).is_some_and(|v| matches!(v, "true" | "1" | "yes" | "on"))
}

/// The supervisor's own options: `command` then `args`, up to the `--` before the worker command.
fn options(c: &Container) -> impl Iterator<Item = &str> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(String::as_str)
        .take_while(|a| *a != "--")
}

/// The value of env var `name` in `c` (the last definition wins, as in Kubernetes); only plain
/// values, not references.
fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .rev()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The limit of one container: `--max-retries N` or `--max-retries=N`, else `QSCALER_MAX_RETRIES`;
/// `None` when it sets neither (or an unreadable value, which qsupervisor would refuse at start).
fn limit_of(c: &Container) -> Option<u32> {
    let opts: Vec<&str> = options(c).collect();
    let flag = opts.iter().enumerate().rev().find_map(|(i, a)| {
        if *a == FLAG {
            opts.get(i + 1).map(|v| v.trim())
        } else {
            a.strip_prefix(FLAG)?.strip_prefix('=')
        }
    });
    flag.or_else(|| env_value(c, env::MAX_RETRIES))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether any container of `spec` runs qsupervisor in task mode.
pub fn any_task_mode(spec: &PodSpec) -> bool {
    spec.containers.iter().any(task_mode)
}

/// How many reruns qsupervisor in `spec` allows a failed task before dead-lettering it: the setting
/// of the first task-mode container (of the first container that sets one, when none is marked task
/// mode), else [`DEFAULT_MAX_RETRIES`].
pub fn max_retries(spec: &PodSpec) -> u32 {
    let containers = &spec.containers;
    match containers.iter().find(|c| task_mode(c)) {
        Some(c) => limit_of(c),
        None => containers.iter().find_map(limit_of),
    }
    .unwrap_or(DEFAULT_MAX_RETRIES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(containers: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({ "containers": containers })).expect("pod spec")
    }

    #[test]
    fn the_default_is_the_supervisors() {
        assert_eq!(
            max_retries(&spec(
                json!([{"name": "w", "args": ["--task", "--", "run"]}])
            )),
            DEFAULT_MAX_RETRIES
        );
        assert_eq!(max_retries(&spec(json!([]))), DEFAULT_MAX_RETRIES);
    }

    #[test]
    fn flag_then_env() {
        let one = |c: serde_json::Value| max_retries(&spec(json!([c])));
        assert_eq!(
            one(json!({"name": "w", "args": ["--task", "--max-retries", "1", "--", "x"]})),
            1
        );
        assert_eq!(
            one(
                json!({"name": "w", "command": ["qsupervisor", "--max-retries=7"], "args": ["--task", "--", "x"]})
            ),
            7
        );
        assert_eq!(
            one(json!({"name": "w", "args": ["--task", "--", "x"],
                       "env": [{"name": "QSCALER_MAX_RETRIES", "value": "2"}]})),
            2
        );
        // The flag wins over the env, as in qsupervisor's command line.
        assert_eq!(
            one(
                json!({"name": "w", "args": ["--task", "--max-retries", "0", "--", "x"],
                       "env": [{"name": "QSCALER_MAX_RETRIES", "value": "5"}]})
            ),
            0
        );
        // After `--` it is the worker's own argument.
        assert_eq!(
            one(json!({"name": "w", "args": ["--task", "--", "x", "--max-retries", "9"]})),
            DEFAULT_MAX_RETRIES
        );
        // The last definition of an env var wins.
        assert_eq!(
            one(json!({"name": "w", "args": ["--task", "--", "x"],
                       "env": [{"name": "QSCALER_MAX_RETRIES", "value": "2"},
                               {"name": "QSCALER_MAX_RETRIES", "value": "4"}]})),
            4
        );
        assert_eq!(
            one(json!({"name": "w", "args": ["--max-retries", "many", "--", "x"]})),
            DEFAULT_MAX_RETRIES
        );
    }

    #[test]
    fn the_task_mode_container_decides() {
        let s = spec(json!([
            {"name": "side", "args": ["--max-retries", "8", "--", "proxy"]},
            {"name": "w", "args": ["--task", "--max-retries", "1", "--", "x"]}
        ]));
        assert_eq!(max_retries(&s), 1);
        let s = spec(json!([
            {"name": "side", "args": ["--max-retries", "8", "--", "proxy"]},
            {"name": "w", "env": [{"name": "QSCALER_TASK", "value": "true"}], "args": ["--", "x"]}
        ]));
        assert_eq!(max_retries(&s), DEFAULT_MAX_RETRIES);
    }
}
