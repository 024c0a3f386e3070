//! Walking a model's graphs (the main graph and the subgraphs of `If`, `Loop`, `Scan` nodes) and
//! the names they define.

use std::collections::HashSet;

use crate::proto::{GraphProto, ModelProto, NodeProto};

/// Where a graph is: for each level, `(node index, attribute index, graph index)` with graph
/// index 0 for the attribute's `g` and `i + 1` for its `graphs[i]`. The main graph is `[]`.
pub type GraphPath = Vec<(usize, usize, usize)>;

/// The subgraphs of a node, with their place `(attribute, graph)` as in [`GraphPath`].
pub fn subgraphs(node: &NodeProto) -> Vec<((usize, usize), &GraphProto)> {
    let mut out = Vec::new();
    for (a, attr) in node.attribute.iter().enumerate() {
        if let Some(g) = &attr.g {
            out.push(((a, 0), g.as_ref()));
        }
        for (i, g) in attr.graphs.iter().enumerate() {
            out.push(((a, i + 1), g));
        }
    }
    out
}

/// The graph at `path` below `root`.
pub fn graph_at<'a>(root: &'a GraphProto, path: &[(usize, usize, usize)]) -> &'a GraphProto {
    path.iter().fold(root, |g, &(n, a, i)| {
        let attr = &g.node[n].attribute[a];
        if i == 0 {
            attr.g
                .as_deref()
                .expect("a path names an existing subgraph")
        } else {
            &attr.graphs[i - 1]
        }
    })
}

/// The graph at `path` below `root`, mutably.
pub fn graph_at_mut<'a>(
    root: &'a mut GraphProto,
    path: &[(usize, usize, usize)],
) -> &'a mut GraphProto {
    path.iter().fold(root, |g, &(n, a, i)| {
        let attr = &mut g.node[n].attribute[a];
        if i == 0 {
            attr.g
                .as_deref_mut()
                .expect("a path names an existing subgraph")
        } else {
            &mut attr.graphs[i - 1]
        }
    })
}

/// Calls `f` on every graph of the model (the main graph first, then depth first).
pub fn for_each_graph(model: &ModelProto, f: &mut dyn FnMut(&GraphPath, &GraphProto)) {
    fn walk(g: &GraphProto, path: &mut GraphPath, f: &mut dyn FnMut(&GraphPath, &GraphProto)) {
        f(path, g);
        for (n, node) in g.node.iter().enumerate() {
            for ((a, i), sub) in subgraphs(node) {
                path.push((n, a, i));
                walk(sub, path, f);
                path.pop();
            }
        }
    }
    if let Some(g) = &model.graph {
        walk(g, &mut Vec::new(), f);
    }
}

/// Every name the model uses (values, initializers, nodes, graph inputs and outputs), so that
/// new names can avoid them.
pub fn all_names(model: &ModelProto) -> HashSet<String> {
    let mut names = HashSet::new();
    for_each_graph(model, &mut |_, g| {
        names.extend(g.initializer.iter().map(|t| t.name.clone()));
        names.extend(
            g.sparse_initializer
                .iter()
                .filter_map(|t| t.values.as_ref().map(|v| v.name.clone())),
        );
        names.extend(g.input.iter().chain(&g.output).map(|v| v.name.clone()));
        names.extend(g.value_info.iter().map(|v| v.name.clone()));
        for node in &g.node {
            names.insert(node.name.clone());
            names.extend(node.input.iter().chain(&node.output).cloned());
        }
    });
    names
}

/// Makes names unique against a set that grows as names are handed out.
#[derive(Debug)]
pub struct NameSet {
    taken: HashSet<String>,
}

impl NameSet {
    /// A set holding `taken`.
    pub fn new(taken: HashSet<String>) -> Self {
        Self { taken }
    }

    /// `base`, or `base_1`, `base_2`, .. for the first that is free; marked taken.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1usize;
        while self.taken.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}
