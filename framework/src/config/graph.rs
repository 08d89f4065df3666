//! The stage graph: every output names a stage, once, and the outputs form
//! no cycle (a message would go round for ever).

use indexmap::IndexMap;

use super::{check::Checker, raw::RawStage};

/// Checks the outputs of the stage at `path` against the stage names.
pub(crate) fn check_outputs(v: &mut Checker, path: &str, outputs: &[String], all: &[&str]) {
    for (i, output) in outputs.iter().enumerate() {
        if !all.contains(&output.as_str()) {
            v.problem(
                format!("{path}.outputs[{i}]"),
                format!(
                    "no stage is named `{output}`; the stages are: {}",
                    all.join(", ")
                ),
            );
        } else if outputs[..i].contains(output) {
            v.problem(
                format!("{path}.outputs[{i}]"),
                format!("`{output}` is listed twice"),
            );
        }
    }
}

/// Reports cycles of outputs with their chain (a depth-first search: an
/// edge back to a stage still on the path closes a cycle).
pub(crate) fn check_cycles(v: &mut Checker, stages: &IndexMap<String, Option<RawStage>>) {
    let outputs: Vec<Vec<usize>> = stages
        .values()
        .map(|stage| {
            let names = stage.as_ref().and_then(|s| s.outputs.as_ref());
            names
                .into_iter()
                .flatten()
                .filter_map(|name| stages.get_index_of(name))
                .collect()
        })
        .collect();
    let names: Vec<&String> = stages.keys().collect();
    // 0: not visited, 1: on the current path, 2: done.
    let mut state = vec![0u8; names.len()];
    for start in 0..names.len() {
        if state[start] != 0 {
            continue;
        }
        // An explicit stack of (stage, next output to follow).
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some((at, next)) = stack.last_mut() {
            let at = *at;
            let Some(&to) = outputs[at].get(*next) else {
                state[at] = 2;
                stack.pop();
                continue;
            };
            *next += 1;
            match state[to] {
                0 => {
                    state[to] = 1;
                    stack.push((to, 0));
                }
                1 => {
                    let from = stack.iter().position(|(s, _)| *s == to).unwrap_or(0);
                    let mut chain: Vec<&str> = stack[from..]
                        .iter()
                        .map(|(s, _)| names[*s].as_str())
                        .collect();
                    chain.push(names[to]);
                    v.problem(
                        format!("stages.{}.outputs", names[at]),
                        format!(
                            "outputs form a cycle: {}; a message would go round forever",
                            chain.join(" -> ")
                        ),
                    );
                }
                _ => {}
            }
        }
    }
}
