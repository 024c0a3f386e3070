//! The structural rules of the ONNX checker that hold without running the model: every value a
//! node reads is defined before it (a graph input, an initializer, an earlier node's output, or a
//! name of an enclosing graph for a subgraph), every value is defined once, initializer names are
//! unique, and every graph output is defined.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::graph::subgraphs;
use crate::proto::{GraphProto, ModelProto};

/// Checks the rules of the module docs on every graph of `model`; the first violation is the
/// error.
pub fn check_model(model: &ModelProto) -> Result<()> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("model", "no graph"))?;
    check_graph(g, &HashSet::new(), "graph")
}

fn check_graph(g: &GraphProto, outer: &HashSet<String>, where_: &str) -> Result<()> {
    let mut defined: HashSet<String> = outer.clone();
    let mut initializers = HashSet::new();
    for t in &g.initializer {
        if !initializers.insert(t.name.as_str()) {
            return Err(Error::invalid(
                where_,
                format!("two initializers named \"{}\"", t.name),
            ));
        }
        defined.insert(t.name.clone());
    }
    for v in &g.input {
        defined.insert(v.name.clone());
    }
    for t in g
        .sparse_initializer
        .iter()
        .filter_map(|t| t.values.as_ref())
    {
        defined.insert(t.name.clone());
    }
    let mut produced: HashSet<&str> = HashSet::new();
    for (n, node) in g.node.iter().enumerate() {
        let label = || {
            if node.name.is_empty() {
                format!("{where_}: node {n} ({})", node.op_type)
            } else {
                format!("{where_}: node \"{}\" ({})", node.name, node.op_type)
            }
        };
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(input) {
                return Err(Error::invalid(
                    label(),
                    format!(
                        "reads \"{input}\", which no graph input, initializer or earlier node defines"
                    ),
                ));
            }
        }
        for ((a, i), sub) in subgraphs(node) {
            let name = &node.attribute[a].name;
            check_graph(sub, &defined, &format!("{} / {name}[{i}]", label()))?;
        }
        for output in node.output.iter().filter(|o| !o.is_empty()) {
            if !produced.insert(output.as_str()) || initializers.contains(output.as_str()) {
                return Err(Error::invalid(
                    label(),
                    format!("\"{output}\" is defined more than once"),
                ));
            }
            defined.insert(output.clone());
        }
    }
    for v in &g.output {
        if !defined.contains(&v.name) {
            return Err(Error::invalid(
                where_,
                format!("graph output \"{}\" is not defined", v.name),
            ));
        }
    }
    Ok(())
}

/// Node names (non-empty) used by more than one node of the model, in first-use order.
pub fn duplicate_node_names(model: &ModelProto) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut dup = Vec::new();
    crate::graph::for_each_graph(model, &mut |_, g| {
        for node in g.node.iter().filter(|n| !n.name.is_empty()) {
            if !seen.insert(node.name.clone()) && !dup.contains(&node.name) {
                dup.push(node.name.clone());
            }
        }
    });
    dup
}
