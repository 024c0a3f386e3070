//! `compress(model, policy) -> (model, report)`: every eligible `Conv` of an ONNX model (in the
//! main graph and in subgraphs) replaced by its TT chain of plain `Conv` nodes.

use std::collections::{BTreeMap, HashMap};

use ndarray::Array1;

use ttconv_models::{
    KernelInput, LayerReport, Outcome, Policy, Progress, Report, ReportOptions, SkipReason, Totals,
    TtTensor, compress_kernels,
};

use crate::chain::{ChainNames, chain_nodes, chain_weights};
use crate::check::{check_model, duplicate_node_names};
use crate::conv::ConvAttrs;
use crate::error::{Error, Result};
use crate::graph::{GraphPath, NameSet, all_names, for_each_graph, graph_at, graph_at_mut};
use crate::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::tensor::{any_dtype, dim_value, dims, tensor_value_info, to_f32};

/// Where a constant tensor is defined (its identity: two Convs share a weight when they read
/// the same definition, not merely the same name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// `initializer[index]` of the graph at the path.
    Initializer(GraphPath, usize),
    /// The `value` of the `Constant` node `node[index]` of the graph at the path.
    Constant(GraphPath, usize),
}

impl Source {
    fn owner(&self) -> &GraphPath {
        match self {
            Source::Initializer(p, _) | Source::Constant(p, _) => p,
        }
    }

    fn tensor<'a>(&self, root: &'a GraphProto) -> &'a TensorProto {
        match self {
            Source::Initializer(p, i) => &graph_at(root, p).initializer[*i],
            Source::Constant(p, n) => constant_value(&graph_at(root, p).node[*n])
                .expect("a Constant source has a tensor value"),
        }
    }
}

/// The tensor of a `Constant` node of the ONNX domain with one output and exactly one
/// attribute, a tensor `value` (the other forms, `value_float` etc., are not Conv weights).
pub(crate) fn constant_value(node: &NodeProto) -> Option<&TensorProto> {
    let is_constant = node.op_type == "Constant" && is_onnx_domain(&node.domain);
    match (is_constant, node.output.len(), node.attribute.as_slice()) {
        (true, 1, [a]) if a.name == "value" => a.t.as_ref(),
        _ => None,
    }
}

/// One Conv node of the model.
struct Site {
    path: GraphPath,
    node: usize,
    name: String,
    weight: String,
    source: Option<Source>,
}

/// Every name a graph defines, with its source when it is a constant: initializers (unless
/// also a graph input, which a caller may override; before IR version 4 every initializer was
/// listed as an input, so there `listed` is true and the listing does not count), `Constant`
/// values; graph inputs, sparse initializers and other nodes' outputs are definitions that are
/// not constants.
fn definitions(g: &GraphProto, path: &GraphPath, listed: bool) -> HashMap<String, Option<Source>> {
    let mut map: HashMap<String, Option<Source>> = HashMap::new();
    for v in &g.input {
        map.insert(v.name.clone(), None);
    }
    for (i, t) in g.initializer.iter().enumerate() {
        if listed || !map.contains_key(&t.name) {
            map.insert(t.name.clone(), Some(Source::Initializer(path.clone(), i)));
        }
    }
    for t in &g.sparse_initializer {
        if let Some(v) = &t.values {
            map.insert(v.name.clone(), None);
        }
    }
    for (n, node) in g.node.iter().enumerate() {
        let constant = constant_value(node).is_some();
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            map.insert(
                o.clone(),
                constant.then(|| Source::Constant(path.clone(), n)),
            );
        }
    }
    map
}

fn is_onnx_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// Every Conv node, with its weight's source when the weight is a constant visible from it.
fn sites(model: &ModelProto) -> Vec<Site> {
    let mut scopes: Vec<(GraphPath, HashMap<String, Option<Source>>)> = Vec::new();
    let mut out = Vec::new();
    for_each_graph(model, &mut |path, g| {
        // Scopes of graphs that are not ancestors of this one are left behind.
        scopes.retain(|(p, _)| p.len() < path.len() && path.starts_with(p));
        scopes.push((path.clone(), definitions(g, path, model.ir_version < 4)));
        for (n, node) in g.node.iter().enumerate() {
            // A Conv without its input, weight or one output is not rewritten (and a model
            // with one fails `check_model` or runs nowhere).
            let complete = node.input.len() >= 2
                && !node.input[0].is_empty()
                && node.output.len() == 1
                && !node.output[0].is_empty();
            if node.op_type != "Conv" || !is_onnx_domain(&node.domain) || !complete {
                continue;
            }
            let weight = node.input[1].clone();
            // The innermost definition of the name decides, constant or not.
            let source = scopes
                .iter()
                .rev()
                .find_map(|(_, m)| m.get(&weight).cloned())
                .flatten();
            out.push(Site {
                path: path.clone(),
                node: n,
                name: if node.name.is_empty() {
                    node.output.first().cloned().unwrap_or_default()
                } else {
                    node.name.clone()
                },
                weight,
                source,
            });
        }
    });
    out
}

/// Elements of every constant tensor of the model (initializers and `Constant` values),
/// saturating at `usize::MAX` (the dims of a tensor nobody reads are not checked elsewhere).
pub fn parameter_count(model: &ModelProto) -> usize {
    let mut n = 0u128;
    for_each_graph(model, &mut |_, g| {
        let count = |t: &TensorProto| {
            t.dims
                .iter()
                .map(|&d| d.max(0) as u128)
                .fold(1u128, |a, b| a.saturating_mul(b))
        };
        for t in &g.initializer {
            n = n.saturating_add(count(t));
        }
        for node in g.node.iter().filter(|n| n.op_type == "Constant") {
            for t in node.attribute.iter().filter_map(|a| a.t.as_ref()) {
                n = n.saturating_add(count(t));
            }
        }
    });
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A group of Conv nodes reading one weight, decomposed once.
#[derive(Clone, Debug)]
pub(crate) struct Unit {
    /// The weight's name.
    pub weight: String,
    source: Source,
    /// `(site index, attributes)` of its nodes.
    pub sites: Vec<(usize, ConvAttrs)>,
    /// The weight's dtype.
    pub dtype: ttconv_models::DType,
    /// Its TT cores when the policy compresses it.
    pub tt: Option<TtTensor<f32>>,
    /// A bias per site replacing the node's own (from calibration), `None` to keep it.
    pub biases: Vec<Option<Array1<f32>>>,
}

/// What [`compress`] decided, before the model is rewritten.
pub(crate) struct Plan {
    sites: Vec<Site>,
    /// The eligible weights, in the order of their first Conv.
    pub units: Vec<Unit>,
    /// A report row per weight (eligible, grouped or not constant), with the index of its
    /// first site for the order.
    rows: Vec<(usize, LayerReport)>,
    policy: String,
}

impl Plan {
    /// The graph path and node index of site `s`.
    pub fn site(&self, s: usize) -> (&GraphPath, usize) {
        (&self.sites[s].path, self.sites[s].node)
    }

    /// The source tensor of unit `u`'s weight.
    pub fn weight<'a>(&self, model: &'a ModelProto, u: usize) -> &'a TensorProto {
        self.units[u]
            .source
            .tensor(model.graph.as_ref().expect("a planned model has a graph"))
    }

    /// The rule that chose unit `u`'s ranks (`rank 0.5`, `ratio 2 (allocated)`), when it is
    /// compressed.
    pub fn rule(&self, u: usize) -> Option<String> {
        let weight = &self.units[u].weight;
        self.rows.iter().find_map(|(_, r)| match &r.outcome {
            Outcome::Compressed { rule, .. } if &r.tensor == weight => Some(rule.clone()),
            _ => None,
        })
    }

    /// Replaces unit `u`'s TT (after calibration), updating its report row's ranks, ratio and
    /// kernel error.
    pub fn set_tt(&mut self, u: usize, tt: TtTensor<f32>, kernel_error: f64, rule: &str) {
        let weight = self.units[u].weight.clone();
        if let Some((_, row)) = self.rows.iter_mut().find(|(_, r)| r.tensor == weight) {
            row.params_after = tt.num_params();
            if let Outcome::Compressed {
                ranks,
                ratio,
                rel_error,
                rule: r,
                ..
            } = &mut row.outcome
            {
                *ranks = tt.ranks();
                *ratio = row.params_before as f64 / tt.num_params() as f64;
                *rel_error = kernel_error;
                *r = rule.to_string();
            }
        }
        self.units[u].tt = Some(tt);
    }
}

/// Input shapes `(N, C, D..)` of Conv nodes by the name of the value they read (from a run of
/// the model: ONNX files do not reliably record them).
pub type InputShapes = HashMap<String, Vec<usize>>;

/// Chooses what becomes of every Conv of `model` under `policy` (see [`compress`]).
pub(crate) fn plan(
    model: &ModelProto,
    policy: &Policy,
    options: &ReportOptions,
    shapes: &InputShapes,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Plan> {
    policy.validate()?;
    check_model(model)?;
    let root = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("model", "no graph"))?;
    let sites = sites(model);
    let mut rows: Vec<(usize, LayerReport)> = Vec::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut first_site: Vec<usize> = Vec::new();
    let mut grouped: BTreeMap<Source, (usize, usize)> = BTreeMap::new();
    for (s, site) in sites.iter().enumerate() {
        let Some(source) = &site.source else {
            rows.push((s, skipped_row(site, Vec::new(), SkipReason::NotConstant)));
            continue;
        };
        let t = source.tensor(root);
        let shape = dims(t)?;
        let node = &graph_at(root, &site.path).node[site.node];
        let attrs = ConvAttrs::parse(node, &shape)?;
        if attrs.order() > 4 {
            let reason = SkipReason::TooManyModes {
                order: attrs.order(),
            };
            rows.push((s, skipped_row(site, shape, reason)));
            continue;
        }
        if attrs.group != 1 {
            grouped.entry(source.clone()).or_insert((s, attrs.group));
            continue;
        }
        match units.iter_mut().find(|u| &u.source == source) {
            Some(u) => u.sites.push((s, attrs)),
            None => {
                units.push(Unit {
                    weight: site.weight.clone(),
                    source: source.clone(),
                    sites: vec![(s, attrs)],
                    dtype: kernel_dtype(t)?,
                    tt: None,
                    biases: Vec::new(),
                });
                first_site.push(s);
            }
        }
    }
    // The kernels: one per eligible unit, then one per grouped weight (skipped).
    let mut kernels: Vec<KernelInput> = Vec::new();
    let mut kernel_sources: Vec<Source> = Vec::new();
    for (u, &s) in units.iter().zip(&first_site) {
        // With the first node's input size, its geometry is exact even for SAME padding.
        let site = &sites[s];
        let input = &graph_at(root, &site.path).node[site.node].input[0];
        let spatial = shapes
            .get(input)
            .filter(|sh| sh.len() == u.sites[0].1.order() + 2)
            .map(|sh| sh[2..].to_vec());
        let geometry = match &spatial {
            Some(sp) => Some(ttconv_models::Geometry::from_axes(
                &u.sites[0].1.resolve(sp)?,
            )),
            None => u.sites[0].1.geometry(),
        };
        kernels.push(KernelInput {
            tensor: u.weight.clone(),
            layer: site.name.clone(),
            shape: dims(u.source.tensor(root))?,
            dtype: u.dtype,
            geometry,
            input_spatial: spatial,
            skip: None,
        });
        kernel_sources.push(u.source.clone());
    }
    for (source, &(s, group)) in &grouped {
        let t = source.tensor(root);
        kernels.push(KernelInput {
            tensor: sites[s].weight.clone(),
            layer: sites[s].name.clone(),
            shape: dims(t)?,
            dtype: kernel_dtype(t)?,
            geometry: None,
            input_spatial: None,
            skip: Some(SkipReason::Grouped { group }),
        });
        kernel_sources.push(source.clone());
        first_site.push(s);
    }
    // A weight that cannot be decoded stops the run with this crate's error, kept here while
    // the policy's callback reports a placeholder.
    let mut decode_error: Option<Error> = None;
    let outcomes = compress_kernels(
        &kernels,
        &mut |i| {
            to_f32(kernel_sources[i].tensor(root)).map_err(|e| {
                let placeholder = ttconv_models::Error::Missing(e.to_string());
                decode_error = Some(e);
                placeholder
            })
        },
        policy,
        options,
        progress,
    );
    if let Some(e) = decode_error {
        return Err(e);
    }
    for (k, outcome) in outcomes?.into_iter().enumerate() {
        let mut row = outcome.report;
        if let Some(u) = units.get_mut(k) {
            if u.sites.len() > 1 {
                row.name = format!("{} (+{} sharing its weight)", row.name, u.sites.len() - 1);
            }
            u.biases = vec![None; u.sites.len()];
            u.tt = outcome.tt;
        }
        rows.push((first_site[k], row));
    }
    Ok(Plan {
        sites,
        units,
        rows,
        policy: policy.describe(),
    })
}

/// Rewrites `model` by `plan`: the units whose `active` entry is true and that have a TT become
/// chains (deepest graphs first and, within a graph, the last node first, so that the paths and
/// node indices still to be used stay valid).
pub(crate) fn apply(model: &ModelProto, plan: &Plan, active: &[bool]) -> Result<ModelProto> {
    let root = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("model", "no graph"))?;
    let mut out = model.clone();
    let mut names = NameSet::new(all_names(model));
    let mut replacements: Vec<(GraphPath, usize, Vec<NodeProto>)> = Vec::new();
    let mut new_tensors: Vec<(GraphPath, Vec<TensorProto>)> = Vec::new();
    let mut compressed_weights: Vec<(GraphPath, String)> = Vec::new();
    for (u, unit) in plan.units.iter().enumerate() {
        let Some(tt) = unit.tt.as_ref().filter(|_| active.get(u) == Some(&true)) else {
            continue;
        };
        let weight_names: Vec<String> = (0..tt.cores().len())
            .map(|i| names.fresh(&format!("{}.tt_core{i}", unit.weight)))
            .collect();
        new_tensors.push((
            unit.source.owner().clone(),
            chain_weights(tt, unit.dtype, &weight_names)?,
        ));
        for (i, (s, attrs)) in unit.sites.iter().enumerate() {
            let site = &plan.sites[*s];
            let mut node = graph_at(root, &site.path).node[site.node].clone();
            if let Some(Some(b)) = unit.biases.get(i) {
                let name = names.fresh(&format!("{}.tt_bias", site.name));
                let t = crate::tensor::from_f32(&name, &b.clone().into_dyn(), unit.dtype)?;
                new_tensors.push((site.path.clone(), vec![t]));
                if let Some(old) = node.input.get(2).filter(|b| !b.is_empty()) {
                    // Removed below when no other node reads it.
                    compressed_weights.push((site.path.clone(), old.clone()));
                }
                node.input.resize(2, String::new());
                node.input.push(name);
            }
            let chain = chain_names(&mut names, site, &node, tt);
            replacements.push((
                site.path.clone(),
                site.node,
                chain_nodes(&node, attrs, &weight_names, &chain),
            ));
        }
        compressed_weights.push((unit.source.owner().clone(), unit.weight.clone()));
    }
    let ir_version = out.ir_version;
    let graph = out.graph.as_mut().expect("checked above");
    // Before IR version 4 every initializer is also a graph input.
    let listed = ir_version < 4;
    for (path, tensors) in new_tensors {
        let g = graph_at_mut(graph, &path);
        if listed {
            g.input.extend(tensors.iter().map(initializer_input));
        }
        g.initializer.extend(tensors);
    }
    replacements.sort_by_key(|(path, node, _)| std::cmp::Reverse((path.len(), *node)));
    for (path, node, chain) in replacements {
        graph_at_mut(graph, &path).node.splice(node..=node, chain);
    }
    remove_unread(&mut out, &compressed_weights);
    // The rewrite keeps the rules the input met; a failure here is a bug of this crate.
    check_model(&out).map_err(|e| Error::invalid("the rewritten model", e.to_string()))?;
    let before = duplicate_node_names(model).len();
    let after = duplicate_node_names(&out);
    if after.len() > before {
        return Err(Error::invalid(
            "the rewritten model",
            format!("duplicate node names {after:?}"),
        ));
    }
    Ok(out)
}

/// The report of `plan` applied to `model` giving `out`.
pub(crate) fn report(plan: &Plan, model: &ModelProto, out: &ModelProto) -> Report {
    let mut rows = plan.rows.clone();
    rows.sort_by_key(|(s, _)| *s);
    let layers: Vec<LayerReport> = rows.into_iter().map(|(_, r)| r).collect();
    let totals = Totals::from_layers(&layers, parameter_count(model), parameter_count(out));
    Report {
        policy: plan.policy.clone(),
        layers,
        totals,
    }
}

/// Compresses every eligible Conv of `model` under `policy`.
///
/// A Conv is eligible when it is in the ONNX domain, has `group` 1, and its weight is a constant
/// (an initializer that is not also a graph input, or a `Constant` node's value) of its graph or
/// of an enclosing one; the policy's rules then apply as for a checkpoint (1x1 kernels, one
/// input channel, patterns matched against the node name and the weight name, the size minimum,
/// overrides, the global ratio, `require_smaller`). Nodes reading the same weight are
/// decomposed once and their chains share the core initializers, which are placed in the graph
/// that defined the weight. A weight no longer read is removed. Everything else is kept as it
/// was: other nodes, names, graph inputs and outputs, value_info, opset imports, metadata.
pub fn compress(
    model: &ModelProto,
    policy: &Policy,
    options: &ReportOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(ModelProto, Report)> {
    compress_at(model, policy, options, &InputShapes::new(), progress)
}

/// [`compress`] with the Conv input shapes of a run ([`crate::conv_input_shapes`]): each
/// layer's MACs are then modelled at its own size and exact geometry, and the policy's
/// `require_faster` applies.
pub fn compress_at(
    model: &ModelProto,
    policy: &Policy,
    options: &ReportOptions,
    shapes: &InputShapes,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(ModelProto, Report)> {
    let plan = plan(model, policy, options, shapes, progress)?;
    let out = apply(model, &plan, &vec![true; plan.units.len()])?;
    let report = report(&plan, model, &out);
    Ok((out, report))
}

/// The weight's dtype; an error for an element type a Conv cannot have and the report cannot
/// name.
fn kernel_dtype(t: &TensorProto) -> Result<ttconv_models::DType> {
    any_dtype(t.data_type).ok_or_else(|| {
        Error::invalid(
            format!("tensor \"{}\"", t.name),
            format!(
                "element type {} for a Conv weight (a float type expected)",
                t.data_type
            ),
        )
    })
}

/// The row of a Conv kept as it was for `reason`, its kernel of `shape` (empty when unknown).
fn skipped_row(site: &Site, shape: Vec<usize>, reason: SkipReason) -> LayerReport {
    let params = if shape.is_empty() {
        0
    } else {
        shape.iter().product()
    };
    LayerReport {
        name: site.name.clone(),
        tensor: site.weight.clone(),
        kernel_shape: shape,
        params_before: params,
        params_after: params,
        outcome: Outcome::Skipped { reason },
    }
}

fn chain_names(
    names: &mut NameSet,
    site: &Site,
    node: &NodeProto,
    tt: &TtTensor<f32>,
) -> ChainNames {
    let n = tt.cores().len();
    let output = node
        .output
        .first()
        .cloned()
        .unwrap_or_else(|| site.name.clone());
    ChainNames {
        nodes: (0..n)
            .map(|i| names.fresh(&format!("{}/tt{i}", site.name)))
            .collect(),
        values: (0..n - 1)
            .map(|i| names.fresh(&format!("{output}/tt{i}")))
            .collect(),
    }
}

/// Removes each `(path, name)` that nothing reads any more: the definition of `name` in the
/// innermost graph on `path` that defines it (an initializer, with its graph-input and
/// value_info entries, or a `Constant` node), when no node of that graph or of its subgraphs
/// reads the name. Other graphs are not touched: a name there is another tensor.
fn remove_unread(model: &mut ModelProto, items: &[(GraphPath, String)]) {
    let Some(root) = model.graph.as_mut() else {
        return;
    };
    for (path, name) in items {
        let is_definition =
            |n: &NodeProto| n.op_type == "Constant" && n.output.first() == Some(name);
        let defines = |g: &GraphProto| {
            g.initializer.iter().any(|t| &t.name == name) || g.node.iter().any(is_definition)
        };
        let Some(depth) = (0..=path.len())
            .rev()
            .find(|&k| defines(graph_at(root, &path[..k])))
        else {
            continue;
        };
        let g = graph_at_mut(root, &path[..depth]);
        if reads_below(g).contains(name.as_str()) {
            continue;
        }
        g.initializer.retain(|t| &t.name != name);
        g.input.retain(|v| &v.name != name);
        g.value_info.retain(|v| &v.name != name);
        g.node.retain(|n| !is_definition(n));
    }
}

/// Every name read by a node of `g` or of its subgraphs, or by `g`'s outputs.
fn reads_below(g: &GraphProto) -> std::collections::HashSet<&str> {
    let mut out: std::collections::HashSet<&str> =
        g.output.iter().map(|o| o.name.as_str()).collect();
    for node in &g.node {
        out.extend(node.input.iter().map(|i| i.as_str()));
        for (_, sub) in crate::graph::subgraphs(node) {
            out.extend(reads_below(sub));
        }
    }
    out
}

/// The graph-input entry of an initializer (its element type and dims).
fn initializer_input(t: &TensorProto) -> crate::proto::ValueInfoProto {
    let dims = t.dims.iter().map(|&d| dim_value(d)).collect();
    tensor_value_info(&t.name, t.data_type, dims)
}
